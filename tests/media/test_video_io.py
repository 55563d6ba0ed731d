"""media/video.py: H.264 yuv420p MP4 and GIF out (decoded back), frames and rate kept, odd sizes,
unopenable files (one-line UserError) and cut-off files (VideoTruncated after the good frames)."""

from __future__ import annotations

import av
import numpy as np
import pytest

from nuimcli.errors import UserError
from nuimcli.media.video import VideoReader, VideoTruncated, VideoWriter, is_video_path
from nuimcli.testing.video import square_frame, square_x, write_square_video


def test_mp4_is_h264_yuv420p_with_the_frames_and_rate_written(tmp_path):
    path = write_square_video(tmp_path / "clip.mp4", frames=7, fps=12.5)
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        assert st.codec_context.name == "h264" and st.codec_context.pix_fmt == "yuv420p"
        assert float(st.average_rate) == pytest.approx(12.5)
    reader = VideoReader(path)
    assert (reader.info.width, reader.info.height, reader.info.frames) == (64, 48, 7)
    got = list(reader)
    reader.close()
    assert [i for i, _, _ in got] == list(range(7))
    assert [t for _, t, _ in got] == pytest.approx([i / 12.5 for i in range(7)])
    for i, _, img in got:
        # lossy, but each frame is the one written at that position: the square sits where it was drawn
        assert abs(square_x(img) - square_x(square_frame(i))) <= 1
        assert np.abs(img.astype(int) - square_frame(i).astype(int)).mean() < 4


def test_odd_sizes_are_padded_to_even_for_yuv420p(tmp_path):
    w = VideoWriter(tmp_path / "odd.mp4", 5)
    for i in range(3):
        w.write(square_frame(i, 33, 21))
    w.close()
    r = VideoReader(tmp_path / "odd.mp4")
    assert (r.info.width, r.info.height) == (34, 22) and len(list(r)) == 3


def test_gif_keeps_frame_count(tmp_path):
    path = write_square_video(tmp_path / "clip.gif", frames=5, fps=5)
    r = VideoReader(path)
    frames = list(r)
    assert len(frames) == 5 and abs(square_x(frames[4][2]) - square_x(square_frame(4))) <= 1


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 50])
def test_unopenable_file_is_one_line_user_error_naming_it(tmp_path, content):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    with pytest.raises(UserError) as e:
        VideoReader(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_truncated_file_yields_frames_before_the_break_then_says_where(tmp_path):
    rng = np.random.default_rng(0)
    w = VideoWriter(tmp_path / "clip.mp4", 10)
    for i in range(30):  # noise: frames big enough that the cut falls inside the frame data, not the header
        w.write(np.clip(square_frame(i, 96, 64).astype(int) + rng.integers(-30, 30, (64, 96, 3)), 0, 255).astype(np.uint8))
    w.close()
    data = (tmp_path / "clip.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])  # moov is at the front (+faststart): frame count survives
    reader = VideoReader(cut)
    assert reader.info.frames == 30
    got = []
    with pytest.raises(VideoTruncated) as e:
        for item in reader:
            got.append(item)
    assert 0 < len(got) < 30 and e.value.at_frame == len(got) and e.value.expected == 30
    assert f"frame {len(got)} of 30" in str(e.value)


def test_video_suffixes():
    assert is_video_path("a/B.MP4") and is_video_path("x.mkv") and not is_video_path("x.jpg")
