"""Masks as nuImages stores them: base64 COCO compressed RLE, encoded from a window of the mask."""

from __future__ import annotations

import base64

import numpy as np
from pycocotools import mask as mask_utils


def encode_mask_crop(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> dict:
    """Encode a mask that is zero outside a window, the way nuImages stores masks.

    ``crop``: bool/0-1 array [h, w], the window of the full [height, width] mask whose top-left
    pixel is (x0, y0); the window must lie inside the image. Returns
    ``{"size": [height, width], "counts": <base64 str>}``: the base64 of the COCO compressed RLE
    string that ``pycocotools.mask.encode`` gives for the full mask, which is what
    ``nuimages.utils.utils.mask_decode`` reads back. Only the window is scanned.
    """
    crop = np.asarray(crop, dtype=bool)
    h, w = crop.shape
    if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
        raise ValueError(f"window {w}x{h} at ({x0}, {y0}) leaves the {width}x{height} image")
    # COCO RLE runs over the column-major flattening; pad each column with a zero above and
    # below so that a run's start / end shows as a +1 / -1 step inside its column.
    padded = np.zeros((w, h + 2), dtype=np.int8)
    padded[:, 1:-1] = crop.T
    steps = np.diff(padded, axis=1).ravel()
    flat = np.flatnonzero(steps)  # alternating starts (+1) and ends (-1), in order
    cols, rows = np.divmod(flat, h + 1)
    where = (x0 + cols) * height + y0 + rows
    starts, ends = where[0::2], where[1::2]
    if starts.size:
        # A run that reaches the bottom row continues at the top of the next column.
        joined = ends[:-1] == starts[1:]
        if joined.any():
            starts = starts[np.concatenate(([True], ~joined))]
            ends = ends[np.concatenate((~joined, [True]))]
        counts = np.empty(2 * starts.size + 1, dtype=np.int64)
        counts[0] = starts[0]
        counts[1::2] = ends - starts
        counts[2:-1:2] = starts[1:] - ends[:-1]
        counts[-1] = height * width - ends[-1]
        if counts[-1] == 0:  # pycocotools never ends on an empty run of zeros
            counts = counts[:-1]
    else:
        counts = np.array([height * width], dtype=np.int64)
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
    return {"size": [height, width], "counts": base64.b64encode(rle["counts"]).decode("ascii")}


def encode_mask(mask: np.ndarray) -> dict:
    """Encode a full [H, W] bool/0-1 mask as a nuImages mask dict (base64 COCO compressed RLE)."""
    mask = np.asarray(mask)
    return encode_mask_crop(mask, 0, 0, mask.shape[0], mask.shape[1])
