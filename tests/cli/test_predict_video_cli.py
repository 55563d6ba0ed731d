"""`nuim predict` on videos, image sequences (--as-video) and nuImages sweeps (--sample, --log/--camera):
H.264 yuv420p MP4 decoded back, one JSONL line per frame, --gif, --every/--max-frames, --fps,
Ctrl-C (exit 130, .partial files), unreadable (exit 2) and truncated (exit 1) videos, unknown
token/log/camera (exit 2), --semantic PNGs, model loading options, and one run of a real
checkpoint in a fresh process. The model is the thresholding stand-in of nuimcli.testing.video
(one real tiny detector in the end-to-end test), the frames are tiny: the file runs in seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

from nuimcli.cli import main
from nuimcli.testing.video import (SQUARE, SquareFinder, decode_frames, read_jsonl, square_frame, square_x,
                                   write_square_video)


def call(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def stream_info(path) -> tuple[str, str, float, int]:
    """(codec, pixel format, frame rate, frames) as the container states them."""
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        return st.codec_context.name, st.codec_context.pix_fmt, float(st.average_rate), int(st.frames)


def error_line(err: str) -> str:
    text = err.strip()
    assert len(text.splitlines()) == 1, text  # one line, no traceback
    return text


@pytest.fixture
def fake_load(monkeypatch):
    """`nuimcli.load` returns the stand-in (HTC-like with a semantic map for an htc preset); the
    calls are recorded with their exact/half flags. ``fake_load.interrupt_at`` makes Ctrl-C."""
    import nuimcli

    def load(name, preset=None, device="cpu", trust_checkpoint=False, exact=False, half=False):
        load.calls.append((name, preset, exact, half))
        return SquareFinder(interrupt_at=load.interrupt_at, semantic=(preset or "").startswith("htc"))

    load.calls, load.interrupt_at = [], None
    monkeypatch.setattr(nuimcli, "load", load)
    return load


# --------------------------------------------------------------------------- video files


def test_video_to_h264_mp4_jsonl_and_gif(tmp_path, capsys, fake_load):
    src = write_square_video(tmp_path / "in" / "clip.mp4", frames=9, fps=8)
    out = tmp_path / "out"
    code, stdout, err = call(capsys, "predict", str(src), "-c", "m.pth", "--out", str(out), "--gif")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["clip.gif", "clip.jsonl", "clip.mp4"]  # no temp files left
    # decoded back: H.264 in yuv420p, the input's frame count and rate
    assert stream_info(out / "clip.mp4") == ("h264", "yuv420p", pytest.approx(8.0), 9)
    frames = decode_frames(out / "clip.mp4")
    assert len(frames) == 9 and frames[0].shape == (48, 64, 3)
    assert len(decode_frames(out / "clip.gif")) == 9
    recs = read_jsonl(out / "clip.jsonl")
    assert [r["frame"] for r in recs] == list(range(9))
    assert [r["time"] for r in recs] == pytest.approx([i / 8 for i in range(9)])
    for i, r in enumerate(recs):
        (det,) = r["detections"]
        assert set(det) == {"bbox", "score", "label", "category", "mask"} and det["category"] == "car"
        m = mask_util.decode(det["mask"]).astype(bool)  # the per-image JSON's RLE
        assert m.shape == (48, 64) and abs(int(m.sum()) - SQUARE * SQUARE) < 40
        assert abs(det["bbox"][0] - square_x(square_frame(i))) <= 1  # computed from frame i
    # drawn: boxes and masks change the picture
    assert np.abs(frames[0].astype(int) - decode_frames(src)[0].astype(int)).max() > 60
    assert "clip.mp4" in stdout and "car×9" in stdout
    assert fake_load.calls == [("m.pth", None, False, False)]  # fast float32 by default


def test_every_and_max_frames(tmp_path, capsys, fake_load):
    src = write_square_video(tmp_path / "clip.mp4", frames=12, fps=10)
    code, _, err = call(capsys, "predict", str(src), "-c", "m.pth", "--out", str(tmp_path / "o"),
                        "--every", "3", "--max-frames", "3", "--exact", "--half")
    assert code == 0, err
    assert [r["frame"] for r in read_jsonl(tmp_path / "o" / "clip.jsonl")] == [0, 3, 6]
    codec, _, fps, n = stream_info(tmp_path / "o" / "clip.mp4")
    assert n == 3 and fps == pytest.approx(10 / 3, rel=1e-3)  # every third frame keeps real time
    assert fake_load.calls[0][2:] == (True, True)  # --exact / --half reach the loader as for images


def test_ctrl_c_keeps_a_playable_partial_video_exit_130(tmp_path, capsys, fake_load):
    src = write_square_video(tmp_path / "clip.mp4", frames=12, fps=10)
    fake_load.interrupt_at = 3  # Ctrl-C during the third forward pass (batches of 2)
    code, _, err = call(capsys, "predict", str(src), "-c", "m.pth", "--out", str(tmp_path / "o"))
    assert code == 130
    line = err.strip().splitlines()[-1]  # after the progress bar's last state
    assert line.startswith("interrupted:") and "clip.partial.mp4" in line
    out = tmp_path / "o"
    assert sorted(p.name for p in out.iterdir()) == ["clip.partial.jsonl", "clip.partial.mp4"]  # nothing final
    assert len(decode_frames(out / "clip.partial.mp4")) == 4  # playable, the frames done
    recs = read_jsonl(out / "clip.partial.jsonl")
    assert [r["frame"] for r in recs[:-1]] == [0, 1, 2, 3] and recs[-1] == {"partial": True, "frames_done": 4}


def test_unreadable_video_one_line_exit_2(tmp_path, capsys, fake_load):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video container" * 10)
    code, _, err = call(capsys, "predict", str(bad), "-c", "m.pth", "--out", str(tmp_path / "o"))
    assert code == 2 and "bad.mp4" in error_line(err) and "cannot open" in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_truncated_video_keeps_frames_before_the_break_exit_1(tmp_path, capsys, fake_load):
    src = write_square_video(tmp_path / "full.mp4", frames=20, fps=10)
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    code, _, err = call(capsys, "predict", str(cut), "-c", "m.pth", "--out", str(tmp_path / "o"))
    assert code == 1
    recs = read_jsonl(tmp_path / "o" / "cut.jsonl")
    kept = len(recs) - 1
    assert 0 < kept < 20 and recs[-1]["truncated"] and recs[-1]["broke_at_frame"] == kept
    assert f"decoding stopped at frame {kept} of 20" in " ".join(err.split())
    assert len(decode_frames(tmp_path / "o" / "cut.mp4")) == kept


def test_missing_video_and_mixed_inputs(tmp_path, capsys, fake_load):
    code, _, err = call(capsys, "predict", str(tmp_path / "nope.mp4"), "-c", "m.pth", "--out", str(tmp_path / "o"))
    assert code == 2 and "nope.mp4: no such file" in error_line(err)
    src = write_square_video(tmp_path / "clip.mp4", frames=2)
    cv2.imwrite(str(tmp_path / "a.png"), square_frame(0))
    code, _, err = call(capsys, "predict", str(src), str(tmp_path / "a.png"), "-c", "m.pth")
    assert code == 2 and "a.png: not a video" in error_line(err)
    assert fake_load.calls == []  # refused before the model is loaded


# --------------------------------------------------------------------------- image sequences


def test_image_folder_as_video_sorted_with_fps(tmp_path, capsys, fake_load):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (3, 0, 2, 1, 4):
        cv2.imwrite(str(folder / f"f{i:03d}.png"), square_frame(i))
    code, _, err = call(capsys, "predict", str(folder), "-c", "m.pth", "--out", str(tmp_path / "o"),
                        "--as-video", "seq.mp4", "--fps", "5")
    assert code == 0, err
    recs = read_jsonl(tmp_path / "o" / "seq.jsonl")
    assert [Path(r["source"]).name for r in recs] == [f"f{i:03d}.png" for i in range(5)]
    assert [r["detections"][0]["bbox"][0] for r in recs] == [square_x(square_frame(i)) for i in range(5)]
    assert stream_info(tmp_path / "o" / "seq.mp4")[2:] == (pytest.approx(5.0), 5)
    code, _, err = call(capsys, "predict", str(folder), "-c", "m.pth", "--as-video", "seq.avi")
    assert code == 2 and "ending in .mp4" in error_line(err)


# --------------------------------------------------------------------------- nuImages sweeps


def synthetic_set(root: Path):
    """A synthetic v1.0-mini (8 key frames at 96x64, 2 sweeps before and 2 after each)."""
    from nuimcli.synthetic.generate import generate_nuimages

    generate_nuimages(root, version="v1.0-mini", num_samples=8, width=96, height=64, sweeps_per_sample=2,
                      sweeps_after_sample=2, objects_per_image=(1, 3))
    table = lambda name: json.loads((root / "v1.0-mini" / f"{name}.json").read_text())  # noqa: E731
    return table("sample"), {r["token"]: r for r in table("sample_data")}, table("log")


def test_sample_sweeps_in_time_order_missing_sweep_named(tmp_path, capsys, fake_load):
    root = tmp_path / "nuim"
    samples, sd, _ = synthetic_set(root)
    sample = samples[0]
    key = sd[sample["key_camera_token"]]
    before = sd[key["prev"]]
    (root / before["filename"]).unlink()  # sweeps are a separate download: one is missing
    code, _, err = call(capsys, "predict", "--data-root", str(root), "--sample", sample["token"], "-c", "m.pth",
                        "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert before["filename"].split("/")[-1] in " ".join(err.split())  # the missing file is named
    recs = read_jsonl(tmp_path / "o" / f"{sample['token']}.jsonl")
    assert len(recs) == 4  # 2 before (one missing) + key frame + 2 after
    stamps = [r["timestamp_us"] for r in recs]
    assert stamps == sorted(stamps) and [r["key_frame"] for r in recs].count(True) == 1
    assert recs[[r["key_frame"] for r in recs].index(True)]["token"] == key["token"]
    assert {r["sample_token"] for r in recs} == {sample["token"]} and not any(r.get("cut") for r in recs)
    # the frame rate follows the timestamps (median gap: about 2 Hz); times are seconds from the first frame
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    assert 1.9 < 1e6 / gaps[1] < 2.1
    assert stream_info(tmp_path / "o" / f"{sample['token']}.mp4")[2:] == (pytest.approx(1e6 / gaps[1], rel=1e-3), 4)
    assert recs[0]["time"] == 0 and recs[-1]["time"] == pytest.approx((stamps[-1] - stamps[0]) / 1e6)


def test_log_and_camera_snippets_with_cuts(tmp_path, capsys, fake_load):
    root = tmp_path / "nuim"
    samples, sd, logs = synthetic_set(root)
    by_cam: dict[str, list] = {}
    for s in samples:
        by_cam.setdefault(sd[s["key_camera_token"]]["filename"].split("/")[1], []).append(s)
    cam, chosen = max(by_cam.items(), key=lambda kv: len(kv[1]))
    assert len(chosen) >= 2, "the synthetic set should put two samples on one camera"
    logfile = logs[0]["logfile"]
    code, _, err = call(capsys, "predict", "--data-root", str(root), "--log", logfile, "--camera", cam,
                        "-c", "m.pth", "--out", str(tmp_path / "o"), "--fps", "4")
    assert code == 0, err
    name = f"{logfile}__{cam}"
    recs = read_jsonl(tmp_path / "o" / f"{name}.jsonl")
    assert len(recs) == 5 * len(chosen)
    order = [s["token"] for s in sorted(chosen, key=lambda s: s["timestamp"])]
    assert [r["sample_token"] for r in recs] == [t for t in order for _ in range(5)]
    cuts = [i for i, r in enumerate(recs) if r.get("cut")]
    assert cuts == [5 * k for k in range(1, len(chosen))]  # the first frame of every later snippet
    assert stream_info(tmp_path / "o" / f"{name}.mp4")[2:] == (pytest.approx(4.0), len(recs))  # --fps wins
    # the cut is marked in the video too: a banner on the snippet's first frames, none before
    frames = decode_frames(tmp_path / "o" / f"{name}.mp4")
    strip = lambda img: img[-10:, :40].astype(int)  # noqa: E731  (bottom-left: the banner's black strip)
    assert strip(frames[5]).mean() < strip(frames[4]).mean() - 20


@pytest.mark.parametrize("args, named", [
    (["--sample", "feedbeef"], "sample token feedbeef not found"),
    (["--log", "n999-no-such-log", "--camera", "CAM_FRONT"], "log 'n999-no-such-log' not found"),
    (["--log", "LOGFILE", "--camera", "CAM_NOWHERE"], "camera 'CAM_NOWHERE'"),
])
def test_unknown_token_log_camera_one_line_exit_2(tmp_path, capsys, fake_load, args, named):
    root = tmp_path / "nuim"
    _, _, logs = synthetic_set(root)
    args = [a.replace("LOGFILE", logs[0]["logfile"]) for a in args]
    code, _, err = call(capsys, "predict", "--data-root", str(root), *args, "-c", "m.pth", "--out", str(tmp_path / "o"))
    assert code == 2 and named in error_line(err)


# --------------------------------------------------------------------------- semantic maps


def test_semantic_pngs_for_video_frames_and_images(tmp_path, capsys, fake_load):
    from nuimcli.engine.semantic import read_semantic_png

    src = write_square_video(tmp_path / "clip.mp4", frames=3, fps=5)
    code, _, err = call(capsys, "predict", str(src), "-c", "m.pth", "--preset", "htc-r50-1x", "--semantic",
                        "--out", str(tmp_path / "o"))
    assert code == 0, err
    recs = read_jsonl(tmp_path / "o" / "clip.jsonl")
    assert [r["semantic"] for r in recs] == [f"clip_semantic/{i:06d}.png" for i in range(3)]
    for i, r in enumerate(recs):
        sem = read_semantic_png(tmp_path / "o" / r["semantic"])
        assert sem.dtype == np.uint8 and sem.shape == (48, 64) and set(np.unique(sem)) == {0, 24}
        assert abs(int(np.flatnonzero((sem == 24).any(0))[0]) - square_x(square_frame(i))) <= 1
    cv2.imwrite(str(tmp_path / "a.png"), square_frame(2))
    code, _, err = call(capsys, "predict", str(tmp_path / "a.png"), "-c", "m.pth", "--preset", "htc-r50-1x",
                        "--semantic", "--out", str(tmp_path / "img"))
    assert code == 0, err
    sem = read_semantic_png(tmp_path / "img" / "a_semantic.png")
    assert (sem == 24).sum() == SQUARE * SQUARE
    assert json.loads((tmp_path / "img" / "a.json").read_text())["semantic"] == "a_semantic.png"


@pytest.mark.parametrize("video", [True, False])
def test_semantic_needs_a_semantic_head(tmp_path, capsys, fake_load, video):
    path = tmp_path / ("clip.mp4" if video else "a.png")
    write_square_video(path, frames=2) if video else cv2.imwrite(str(path), square_frame(0))
    code, _, err = call(capsys, "predict", str(path), "-c", "m.pth", "--semantic", "--out", str(tmp_path / "o"))
    assert code == 2 and "--semantic: preset 'mask-rcnn-r18-tiny' has no semantic head" in error_line(err)


# --------------------------------------------------------------------------- real model


def test_real_checkpoint_end_to_end_and_python_api(tmp_path):
    """A real (known-answer) tiny checkpoint in a fresh process; ``model.predict_video`` gives the
    same detections as the JSONL."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_eval_cli import known_answer_checkpoint  # every kept detection: a box-filling pedestrian

    model = known_answer_checkpoint(tmp_path / "known.pth")
    src = write_square_video(tmp_path / "clip.mp4", frames=3, fps=6, width=96, height=64)
    r = subprocess.run([sys.executable, "-m", "nuimcli", "predict", str(src), "--checkpoint",
                        str(tmp_path / "known.pth"), "--out", str(tmp_path / "o"), "--threads", "1", "--exact"],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "pedestrian×9" in r.stdout
    recs = read_jsonl(tmp_path / "o" / "clip.jsonl")
    assert len(recs) == 3 and stream_info(tmp_path / "o" / "clip.mp4")[0::3] == ("h264", 3)
    got = list(model.predict_video(str(src)))
    assert [i for i, _, _ in got] == [0, 1, 2] and [t for _, t, _ in got] == pytest.approx([0, 1 / 6, 2 / 6])
    for rec, (_, _, pred) in zip(recs, got):
        assert [d["category"] for d in rec["detections"]] == ["pedestrian"] * 3
        np.testing.assert_allclose([d["bbox"] for d in rec["detections"]], pred.boxes, atol=0.01)


SLOW_PREDICT = """
import sys, time
import nuimcli
from nuimcli.cli import main
from nuimcli.testing.video import SquareFinder

class Slow(SquareFinder):
    def predict(self, images, batch_size=2):
        time.sleep(0.15)
        return super().predict(images, batch_size)

nuimcli.load = lambda *a, **k: Slow()
main(sys.argv[1:])
"""


def test_a_real_ctrl_c_mid_video_leaves_a_playable_partial_exit_130(tmp_path):
    """SIGINT to the process group, as a terminal sends it, while the three pipeline threads run."""
    import signal
    import time

    src = write_square_video(tmp_path / "clip.mp4", frames=200, fps=10)
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PREDICT, "predict", str(src), "-c", "m.pth", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "COLUMNS": "200"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until some frames are encoded (the temporary JSONL has lines)
        tmp = [p for p in out.glob(".clip.*.jsonl")] if out.exists() else []
        if tmp and tmp[0].stat().st_size > 0 and len(tmp[0].read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted:")
    assert sorted(p.name for p in out.iterdir()) == ["clip.partial.jsonl", "clip.partial.mp4"]
    recs = read_jsonl(out / "clip.partial.jsonl")
    done = recs[-1]["frames_done"]
    assert recs[-1]["partial"] and 4 <= done < 200 and [r["frame"] for r in recs[:-1]] == list(range(done))
    assert len(decode_frames(out / "clip.partial.mp4")) == done  # playable: every frame done is in it
