"""engine/video.py and engine/sequences.py: the decode → predict → draw → encode pipeline on tiny
videos — frames and rate kept, JSONL lines in frame order computed from their own frame,
--every/--max-frames, GIF, Ctrl-C (playable .partial.mp4), truncated input, image sequences
with an unreadable frame, and the Python iterator API on the real tiny detector."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from nuimcli.engine.sequences import StreamOptions, predict_image_sequence, predict_video_file
from nuimcli.engine.video import predict_video
from nuimcli.errors import Interrupted, UserError
from nuimcli.media.video import VideoReader
from nuimcli.testing.video import SquareFinder, decode_frames, read_jsonl, square_frame, square_x, write_square_video

QUIET = dict(progress=False)


def test_video_in_video_and_jsonl_out(tmp_path):
    src = write_square_video(tmp_path / "in" / "clip.mp4", frames=9, fps=8)
    res = predict_video_file(SquareFinder(), str(src), tmp_path / "out", StreamOptions(batch_size=2, **QUIET))
    assert res.ok and res.frames == 9 and res.fps == 8 and (res.width, res.height) == (64, 48)
    assert res.video_out == str(tmp_path / "out" / "clip.mp4")
    out_frames = decode_frames(res.video_out)
    assert len(out_frames) == 9 and VideoReader(res.video_out).info.fps == pytest.approx(8)
    recs = read_jsonl(res.jsonl_out)
    assert [r["frame"] for r in recs] == list(range(9))
    assert [r["time"] for r in recs] == pytest.approx([i / 8 for i in range(9)])
    for i, r in enumerate(recs):
        (det,) = r["detections"]
        assert det["category"] == "car" and det["mask"]["size"] == [48, 64]
        assert abs(det["bbox"][0] - square_x(square_frame(i))) <= 1  # computed from frame i, not another
    # drawn: the output differs from the input where the square's box and tag are
    assert np.abs(out_frames[0].astype(int) - decode_frames(src)[0].astype(int)).max() > 60
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.jsonl", "clip.mp4"]  # no temp left


def test_every_and_max_frames_and_gif(tmp_path):
    src = write_square_video(tmp_path / "clip.mp4", frames=10, fps=10)
    res = predict_video_file(SquareFinder(), str(src), tmp_path / "out",
                             StreamOptions(every=2, max_frames=3, gif=True, **QUIET))
    assert [r["frame"] for r in read_jsonl(res.jsonl_out)] == [0, 2, 4]
    assert res.fps == 5 and len(decode_frames(res.video_out)) == 3 and len(decode_frames(res.gif_out)) == 3


def test_ctrl_c_keeps_a_playable_partial_video(tmp_path):
    src = write_square_video(tmp_path / "clip.mp4", frames=12, fps=10)
    out = tmp_path / "out"
    with pytest.raises(Interrupted) as e:
        predict_video_file(SquareFinder(interrupt_at=3), str(src), out, StreamOptions(batch_size=2, **QUIET))
    assert sorted(p.name for p in out.iterdir()) == ["clip.partial.jsonl", "clip.partial.mp4"]
    assert "clip.partial.mp4" in str(e.value) and "4 frame(s)" in str(e.value)
    assert len(decode_frames(out / "clip.partial.mp4")) == 4  # the two batches predicted before Ctrl-C
    recs = read_jsonl(out / "clip.partial.jsonl")
    assert [r.get("frame") for r in recs[:-1]] == [0, 1, 2, 3] and recs[-1] == {"partial": True, "frames_done": 4}
    # a finished rerun takes the final names and removes the partial files
    predict_video_file(SquareFinder(), str(src), out, StreamOptions(**QUIET))
    assert sorted(p.name for p in out.iterdir()) == ["clip.jsonl", "clip.mp4"]


def test_truncated_video_keeps_frames_before_the_break(tmp_path):
    src = write_square_video(tmp_path / "clip.mp4", frames=20, fps=10)
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    res = predict_video_file(SquareFinder(), str(cut), tmp_path / "out", StreamOptions(**QUIET))
    assert not res.ok and 0 < res.frames < 20 and f"frame {res.frames} of 20" in res.truncated
    recs = read_jsonl(res.jsonl_out)
    assert len(recs) == res.frames + 1 and recs[-1]["truncated"] and recs[-1]["broke_at_frame"] == res.frames
    assert len(decode_frames(res.video_out)) == res.frames


def test_output_over_the_input_is_refused(tmp_path):
    src = write_square_video(tmp_path / "clip.mp4", frames=2)
    with pytest.raises(UserError, match="overwrite the input"):
        predict_video_file(SquareFinder(), str(src), tmp_path, StreamOptions(**QUIET))


def test_image_sequence_sorted_with_an_unreadable_frame_named(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in (2, 0, 1, 3):
        cv2.imwrite(str(frames / f"f{i:03d}.png"), square_frame(i))
    (frames / "f004.png").write_bytes(b"garbage")
    res = predict_image_sequence(SquareFinder(), [str(frames)], "seq.mp4", tmp_path / "out",
                                 StreamOptions(fps=4, **QUIET))
    assert not res.ok and res.frames == 4 and "f004.png" in res.failed_frames[0]
    recs = read_jsonl(res.jsonl_out)
    assert [Path(r["source"]).name for r in recs] == [f"f{i:03d}.png" for i in range(5)]
    assert recs[4]["error"] and recs[4]["detections"] == []
    assert [r["detections"][0]["bbox"][0] for r in recs[:4]] == [square_x(square_frame(i)) for i in range(4)]
    assert len(decode_frames(res.video_out)) == 4 and VideoReader(res.video_out).info.fps == pytest.approx(4)


def test_predict_video_iterator_on_the_real_tiny_detector(tmp_path):
    from test_predict import known_answer_detector  # tests/engine/test_predict.py

    model = known_answer_detector()
    src = write_square_video(tmp_path / "clip.mp4", frames=3, fps=6, width=96, height=64)
    got = list(predict_video(model, src, batch_size=2))
    assert [(i, round(t, 4)) for i, t, _ in got] == [(0, 0.0), (1, 0.1667), (2, 0.3333)]
    expected = model.predict(decode_frames(src))
    for (_, _, p), e in zip(got, expected):
        np.testing.assert_allclose(p.boxes, e.boxes, atol=1e-3)
        assert p.masks.shape == (len(p.boxes), 64, 96) and (p.labels == 7).all()


def test_image_sequence_every_keeps_the_frame_indices_of_the_whole_sequence(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(7):
        cv2.imwrite(str(frames / f"f{i:03d}.png"), square_frame(i))
    res = predict_image_sequence(SquareFinder(), [str(frames)], "seq.mp4", tmp_path / "out",
                                 StreamOptions(every=3, max_frames=2, **QUIET))
    recs = read_jsonl(res.jsonl_out)
    assert [r["frame"] for r in recs] == [0, 3]  # as for a video: indices of the input, not of the output
    assert [Path(r["source"]).name for r in recs] == ["f000.png", "f003.png"]
    assert [r["time"] for r in recs] == pytest.approx([0.0, 0.3])  # 10 frames/s input, every third frame
    assert res.fps == pytest.approx(10 / 3) and len(decode_frames(res.video_out)) == 2
