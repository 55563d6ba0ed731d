"""Image preprocessing shared by inference and the dataset: resize, normalise, pad, batch.

The test-time functions reproduce mmcv 1.x / mmdet 2.x exactly, because the released
checkpoints only give mmdet's detections on mmdet's input tensor:

* :func:`resize_keep_ratio` = ``mmcv.imrescale`` + mmdet ``Resize(keep_ratio=True)``: the new
  size is ``int(w * s + 0.5)`` with ``s = min(long/max(h, w), short/min(h, w))``, resized
  with OpenCV bilinear on the uint8 image; the scale factor is the realised ratio per axis.
* :func:`normalize` = ``mmcv.imnormalize``: float32, optional BGR→RGB, ``(x - mean) / std``
  done by OpenCV with float64 mean and reciprocal std (as mmcv does).
* :func:`pad_batch` = mmdet ``Pad(size_divisor)`` + collate: zeros at the bottom/right, every
  image to the batch's largest height/width rounded up to the divisor.
"""

from __future__ import annotations

import math
import os
from typing import Sequence, Union

import cv2
import numpy as np
import torch

from nuimcli.errors import UserError


def rescale_size(width: int, height: int, scale: Sequence[float]) -> tuple[tuple[int, int], float]:
    """Size of an image resized to fit ``scale`` keeping its aspect ratio (mmcv ``rescale_size``).

    Args:
        width, height: the original size.
        scale: ``(a, b)``: the longer image edge may be at most ``max(a, b)`` and the shorter
            at most ``min(a, b)`` (e.g. ``(1600, 900)``).

    Returns:
        ``((new_w, new_h), s)`` with ``new_w = int(width * s + 0.5)`` (mmcv rounds half up by
        ``int(x + 0.5)``) and ``s`` the scale factor used.
    """
    if len(scale) != 2 or min(scale) <= 0:
        raise UserError(f"test scale {list(scale)!r}: expected two positive numbers [long, short]")
    long_edge, short_edge = max(scale), min(scale)
    s = min(long_edge / max(height, width), short_edge / min(height, width))
    return (int(width * float(s) + 0.5), int(height * float(s) + 0.5)), s


def resize_keep_ratio(img: np.ndarray, scale: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image to fit ``scale`` keeping its ratio, as mmdet's test pipeline does.

    Args:
        img: HxWxC (or HxW) array, usually BGR uint8 as OpenCV reads it.
        scale: ``(long, short)`` bound, e.g. the preset's ``data.test_scale``.

    Returns:
        ``(resized, scale_factor)``: the resized array (same dtype, cv2 bilinear) and a float32
        array ``[w_scale, h_scale, w_scale, h_scale]`` = new size / old size per axis.
    """
    h, w = img.shape[:2]
    (new_w, new_h), _ = rescale_size(w, h, scale)
    if (new_w, new_h) == (w, h):
        out = img  # cv2.resize to the same size is the identity; skip the copy
    else:
        out = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    scale_factor = np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
    return out, scale_factor


def normalize(img: np.ndarray, mean: Sequence[float], std: Sequence[float], to_rgb: bool) -> np.ndarray:
    """Normalise an HxWx3 image like ``mmcv.imnormalize``.

    Args:
        img: HxWx3 array (BGR as loaded), any numeric dtype.
        mean, std: per channel, in the channel order *after* the optional BGR→RGB swap.
        to_rgb: swap BGR→RGB first (pytorch-style presets) or keep BGR (caffe-style).

    Returns:
        float32 HxWx3 array ``(img - mean) / std`` (computed as ``(img - mean) * (1 / std)``
        with float64 constants widened from float32, which is what mmdet 2.x + mmcv do).
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise UserError(f"image of shape {tuple(img.shape)}: expected H x W x 3")
    # mmdet 2.x stores mean/std as float32 before mmcv widens them to float64; going through
    # float32 here too keeps 1/std identical to the last bit (58.395 is not exact in float32).
    mean64 = np.asarray(mean, dtype=np.float32).astype(np.float64)
    stdinv = 1.0 / np.asarray(std, dtype=np.float32).astype(np.float64)
    # Not cv2.subtract/multiply with a (1, 3) "scalar" as mmcv does: OpenCV 4 computes that in
    # float64 but OpenCV 5 in float32 (1 ulp off), and OpenCV 5 reads it as an array for a 1x1
    # image (normalising nothing). float64, then one rounding to float32, is OpenCV 4's result:
    # for uint8 images that is a 256-entry table per channel, applied with cv2.LUT (fast).
    if img.dtype == np.uint8:
        lut = ((np.arange(256, dtype=np.float64)[:, None] - mean64) * stdinv).astype(np.float32)
        src = cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if to_rgb else img
        return cv2.LUT(np.ascontiguousarray(src), lut.reshape(1, 256, 3))
    out = (img[..., ::-1] if to_rgb else img).astype(np.float64)
    np.subtract(out, mean64, out=out)
    np.multiply(out, stdinv, out=out)
    out = out.astype(np.float32)
    return out


def to_chw_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWxC float array → contiguous CxHxW float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()


def pad_batch(images: Sequence[torch.Tensor], size_divisor: int = 32,
              pad_value: float = 0.0) -> torch.Tensor:
    """Stack CxHxW tensors into one zero-padded batch (padding at the bottom and the right).

    Args:
        images: tensors ``[C, H_i, W_i]`` with the same C and dtype.
        size_divisor: the batch height and width are rounded up to a multiple of it
            (mmdet ``Pad(size_divisor=32)``); 0 or 1 = no rounding.

    Returns:
        ``[B, C, H_pad, W_pad]`` with ``H_pad = ceil(max H_i / d) * d`` (same for W).
    """
    if len(images) == 0:
        raise ValueError("pad_batch needs at least one image")
    max_h = max(int(t.shape[-2]) for t in images)
    max_w = max(int(t.shape[-1]) for t in images)
    if size_divisor and size_divisor > 1:
        max_h = int(math.ceil(max_h / size_divisor)) * size_divisor
        max_w = int(math.ceil(max_w / size_divisor)) * size_divisor
    c = int(images[0].shape[0])
    batch = images[0].new_full((len(images), c, max_h, max_w), pad_value)
    for i, t in enumerate(images):
        batch[i, :, : t.shape[-2], : t.shape[-1]] = t
    return batch


def padded_size(height: int, width: int, size_divisor: int = 32) -> tuple[int, int]:
    """``(H_pad, W_pad)`` of a single image padded to a multiple of ``size_divisor``."""
    if not size_divisor or size_divisor <= 1:
        return height, width
    return (int(math.ceil(height / size_divisor)) * size_divisor,
            int(math.ceil(width / size_divisor)) * size_divisor)


ImageLike = Union[np.ndarray, str, os.PathLike]


def load_image(image: ImageLike) -> np.ndarray:
    """Return a BGR uint8 HxWx3 array from a path (read with OpenCV) or check a given array.

    Raises:
        UserError: unreadable file, or an array that is not HxWx3 uint8 (a 2-D grey array is
            accepted and expanded to three channels).
    """
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise UserError(f"image array of shape {tuple(image.shape)}: expected H x W x 3 (BGR)")
        if arr.dtype != np.uint8:
            raise UserError(f"image array of dtype {arr.dtype}: expected uint8 (BGR as OpenCV reads it)")
        if arr.shape[0] < 1 or arr.shape[1] < 1:
            raise UserError(f"image array of shape {tuple(image.shape)} is empty")
        return arr
    path = str(image)
    arr = cv2.imread(path, cv2.IMREAD_COLOR)
    if arr is None:
        raise UserError(f"{path}: cannot read the image (missing file or not an image)")
    return arr
