"""Small videos and a detector whose answer follows the picture, for tests of the video path.

Frame ``i`` of :func:`square_frames` is grey with a white square whose left edge is at
``x = 4 + 3 i``; :class:`SquareFinder` reports that square (a 'car' box and mask found by
thresholding), so a test can tell from a JSONL line which frame it was computed from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

SQUARE = 12  #: side of the white square, pixels


def square_frame(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Frame ``i``: BGR uint8 ``[height, width, 3]``, grey, white square at x = 4 + 3 i, y = 10."""
    img = np.full((height, width, 3), 90, np.uint8)
    x = (4 + 3 * i) % max(1, width - SQUARE)
    img[10:10 + SQUARE, x:x + SQUARE] = 255
    return img


def write_square_video(path: str | Path, frames: int, fps: float = 10.0, width: int = 64, height: int = 48) -> Path:
    """Encode ``frames`` square frames as H.264 MP4 (or GIF by suffix) at ``fps``."""
    from nuimcli.media.video import VideoWriter

    w = VideoWriter(path, fps)
    for i in range(frames):
        w.write(square_frame(i, width, height))
    w.close()
    return Path(path)


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSONL file, one per line."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def decode_frames(path: str | Path) -> list[np.ndarray]:
    """Every frame of a video file, decoded (BGR uint8)."""
    from nuimcli.media.video import VideoReader

    reader = VideoReader(path)
    try:
        return [img for _, _, img in reader]
    finally:
        reader.close()


def square_x(image: np.ndarray) -> Optional[int]:
    """Left edge of the bright square in ``image`` (None when there is none)."""
    cols = np.flatnonzero((image.mean(-1) > 170).any(0))
    return int(cols[0]) if cols.size else None


class SquareFinder:
    """Detector stand-in with the :meth:`~nuimcli.models.detector.Detector.predict` interface:
    one 'car' (label 0, score 0.9) where the bright pixels are; ``calls`` counts predict calls;
    ``interrupt_at`` raises KeyboardInterrupt on that call (1-based), as Ctrl-C would. With
    ``semantic``, it stands in for HTC: a semantic map with index 24 (driveable surface) where
    the bright pixels are, 0 elsewhere."""

    def __init__(self, interrupt_at: Optional[int] = None, semantic: bool = False) -> None:
        from nuimcli.presets import load_preset

        self.preset = load_preset("htc-r50-1x" if semantic else "mask-rcnn-r18-tiny")
        self.has_semantic_head = semantic
        self.calls = 0
        self.interrupt_at = interrupt_at

    def predict(self, images: list, batch_size: int = 2) -> list[Any]:
        from nuimcli.models.detector import Prediction

        self.calls += 1
        if self.interrupt_at is not None and self.calls >= self.interrupt_at:
            raise KeyboardInterrupt
        out = []
        for img in images:
            bright = img.mean(-1) > 170
            sem = np.where(bright, 24, 0).astype(np.uint8) if self.has_semantic_head else None
            ys, xs = np.nonzero(bright)
            if xs.size:
                box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
                out.append(Prediction(boxes=box, scores=np.array([0.9], np.float32),
                                      labels=np.array([0], np.int64), masks=bright[None], semantic=sem))
            else:
                out.append(Prediction(boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                                      labels=np.zeros(0, np.int64), masks=np.zeros((0, *img.shape[:2]), bool),
                                      semantic=sem))
        return out
