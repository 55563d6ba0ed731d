"""Video files through PyAV (FFmpeg's libraries, bundled in the ``av`` wheel).

Why PyAV: OpenCV's pip wheels cannot encode H.264 (browsers and common players want H.264 in
yuv420p), while the ``av`` wheel ships FFmpeg with libx264 and a GIF encoder; one library then
reads any container FFmpeg knows, writes the MP4 and writes the GIF.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from nuimcli.errors import UserError

#: Suffixes taken as video files by ``nuim predict`` (others are images).
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".gif")


def is_video_path(path: str | os.PathLike) -> bool:
    """True when ``path``'s suffix names a video container."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class VideoInfo:
    """What the container says about its first video stream (``frames`` 0 when it does not say)."""

    width: int
    height: int
    fps: float
    frames: int


class VideoTruncated(Exception):
    """Decoding stopped before the end the container states; ``at_frame`` is the first frame lost."""

    def __init__(self, path: str, at_frame: int, expected: int, reason: str) -> None:
        self.at_frame, self.expected = at_frame, expected
        super().__init__(f"{path}: decoding stopped at frame {at_frame}"
                         f"{f' of {expected}' if expected else ''} ({reason})")


class VideoReader:
    """Decode a video file frame by frame as BGR uint8 ``[H, W, 3]`` arrays.

    Opening fails with a one-line :class:`UserError` (unknown container or codec, no video
    stream). Iterating yields ``(index, seconds, image)``; a stream that breaks off, or ends
    before the frame count its container states, raises :class:`VideoTruncated` after the last
    good frame.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import av

        self.path = str(path)
        try:
            self._container = av.open(self.path)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise UserError(f"{self.path}: cannot open as a video ({_reason(e)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise UserError(f"{self.path}: has no video stream")
        st = self._container.streams.video[0]
        if st.codec_context is None or not st.codec_context.name:
            self._container.close()
            raise UserError(f"{self.path}: video codec not supported")
        # Decoder threads: FFmpeg decodes while torch runs; "AUTO" lets it pick slice/frame threading.
        st.thread_type = "AUTO"
        rate = st.average_rate or st.guessed_rate or Fraction(25)
        frames = int(st.frames or 0)
        if not frames and st.duration and st.time_base:
            frames = int(round(float(st.duration * st.time_base) * float(rate)))
        self._stream = st
        self.info = VideoInfo(int(st.codec_context.width), int(st.codec_context.height), float(rate), frames)

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        import av

        n = 0
        fps = self.info.fps or 25.0
        broke: Optional[BaseException] = None

        def frames_of(packet: Any) -> list:
            return list(self._stream.codec_context.decode(packet))

        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
                decoded = frames_of(packet)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                broke = e
                break
            for frame in decoded:
                yield n, _seconds(frame, n, fps), frame.to_ndarray(format="bgr24")
                n += 1
        if broke is not None:
            # The decoder still holds frames it had not handed out (reordering, frame threads):
            # drain it so that every frame before the break is kept.
            try:
                for frame in frames_of(None):
                    yield n, _seconds(frame, n, fps), frame.to_ndarray(format="bgr24")
                    n += 1
            except av.error.FFmpegError:
                pass
            raise VideoTruncated(self.path, n, self.info.frames, _reason(broke))
        if n == 0:
            raise UserError(f"{self.path}: no frame could be decoded")
        # Containers count frames exactly (MP4's sample table); a shortfall means a cut-off file.
        if self.info.frames and n < self.info.frames:
            raise VideoTruncated(self.path, n, self.info.frames, "the file ends early")

    def close(self) -> None:
        """Release the file."""
        self._container.close()


def _seconds(frame: Any, n: int, fps: float) -> float:
    return float(frame.time) if frame.time is not None else n / fps


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text.split(":")[-1].strip() if ":" in text and "Errno" in text else text


#: H.264 encoders in order of preference: x264 (PyPI wheels of av), then Cisco's openh264 (some
#: distribution builds of FFmpeg ship only that one).
H264_ENCODERS = ("libx264", "libopenh264", "h264")


def h264_encoder() -> str:
    """The first H.264 encoder this PyAV build has (:class:`UserError` if none)."""
    import av

    for name in H264_ENCODERS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # av raises UnknownCodecError (a ValueError) for an encoder it lacks
            continue
    raise UserError(f"this PyAV build (av {av.__version__}) has no H.264 encoder; install the PyPI wheel: "
                    "pip install --force-reinstall av")


def _even(image: np.ndarray) -> np.ndarray:
    """yuv420p halves the chroma planes, so both sides must be even: pad odd ones by one edge pixel."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class VideoWriter:
    """Encode BGR frames to H.264 (libx264, yuv420p, ``+faststart``) in an MP4 — or an animated
    GIF when ``path`` ends in ``.gif`` (FFmpeg's GIF encoder, palette ``rgb8``).

    ``fps`` may be any positive float (taken as a fraction). The file is written where it is
    told; callers write to a temporary name and rename it (see :mod:`nuimcli.utils.io`).
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 23) -> None:
        import av

        if not fps or fps <= 0:
            raise UserError(f"frame rate {fps}: must be positive")
        self.path = str(path)
        # FFmpeg opens the file itself and fails with a bare ENOENT on a missing folder.
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.gif = self.path.lower().endswith(".gif")
        rate = Fraction(fps).limit_denominator(1001)
        fmt = "gif" if self.gif else "mp4"
        self._container = av.open(self.path, mode="w", format=fmt,
                                  options={} if self.gif else {"movflags": "+faststart"})
        if self.gif:
            self._stream = self._container.add_stream("gif", rate=rate)
            self._stream.pix_fmt = "rgb8"
        else:
            codec = h264_encoder()
            self._stream = self._container.add_stream(codec, rate=rate)
            self._stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self._size: Optional[tuple[int, int]] = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        """Append one BGR uint8 ``[H, W, 3]`` frame (every frame the size of the first)."""
        import av

        image = _even(np.ascontiguousarray(image))
        h, w = image.shape[:2]
        if self._size is None:
            self._size = (w, h)
            self._stream.width, self._stream.height = w, h
        elif (w, h) != self._size:
            import cv2

            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (playable from then on)."""
        try:
            if self._size is not None:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
        finally:
            self._container.close()
