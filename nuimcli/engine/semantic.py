"""HTC's semantic map as files and as a metric.

Files: a semantic map is saved exactly as ``nuim convert`` saves the ground truth — a
single-channel 8-bit PNG whose pixel value is the devkit's semantic index (0 = background /
noise, 1..31 the nuImages categories and surfaces) written with OpenCV's default PNG settings —
so a prediction and its ground truth can be compared pixel for pixel, and the devkit's tools read
both.

Metric: IoU per class accumulated over every pixel of the split (one confusion matrix, not a
mean of per-image IoUs), over the indices that occur in the ground truth, index 0 ignored
(the semantic head's ignore index), at the PNGs' resolution; mIoU is their mean.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from nuimcli.errors import UserError
from nuimcli.utils.io import atomic_path

#: Indices a uint8 semantic PNG can hold.
NUM_INDICES = 256


def write_semantic_png(path: str | os.PathLike, semantic: np.ndarray) -> Path:
    """Write a uint8 ``[H, W]`` semantic map as ``nuim convert`` writes its PNGs (atomically)."""
    sem = np.asarray(semantic)
    if sem.ndim != 2:
        raise ValueError(f"semantic map must be [H, W], got shape {sem.shape}")
    if sem.dtype != np.uint8:
        if sem.size and (sem.min() < 0 or sem.max() >= NUM_INDICES):
            raise ValueError("semantic indices must fit in 0..255")
        sem = sem.astype(np.uint8)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(sem)):
            raise UserError(f"{path}: cannot write the PNG (is the disk full or read-only?)")
    return Path(path)


def read_semantic_png(path: str | os.PathLike) -> np.ndarray:
    """A semantic PNG back as uint8 ``[H, W]`` (``cv2.IMREAD_UNCHANGED``: no colour conversion)."""
    sem = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if sem is None or sem.ndim != 2:
        raise UserError(f"{path}: not a single-channel semantic PNG")
    return sem


class SemanticIoU:
    """A confusion matrix over every pixel seen; :meth:`result` gives IoU per class and mIoU."""

    def __init__(self, ignore_index: int = 0) -> None:
        self.ignore_index = ignore_index
        self.confusion = np.zeros((NUM_INDICES, NUM_INDICES), np.int64)  # [gt, pred]
        self.images = 0

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Count one image. ``pred`` is resampled (nearest) to ``gt``'s size when they differ:
        the metric is at the ground-truth PNG's resolution."""
        gt = np.asarray(gt)
        pred = np.asarray(pred)
        if pred.shape != gt.shape:
            pred = cv2.resize(pred.astype(np.uint8), (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_NEAREST)
        valid = gt != self.ignore_index
        idx = gt[valid].astype(np.int64) * NUM_INDICES + pred[valid].astype(np.int64)
        self.confusion += np.bincount(idx, minlength=NUM_INDICES * NUM_INDICES).reshape(NUM_INDICES, NUM_INDICES)
        self.images += 1

    def result(self, names: Optional[dict[int, str]] = None) -> dict:
        """``{"per_class": {name: IoU}, "mIoU": mean, "classes": n, "images": n}`` over the indices
        present in the ground truth (``mIoU`` None when there is none) (``names`` maps index → name; default ``"index <i>"``)."""
        c = self.confusion
        gt_pixels = c.sum(1)
        tp = np.diag(c)
        union = gt_pixels + c.sum(0) - tp
        per_class: dict[str, float] = {}
        for i in np.flatnonzero(gt_pixels):
            if i == self.ignore_index:
                continue
            name = (names or {}).get(int(i), f"index {int(i)}")
            per_class[name] = float(tp[i] / union[i])
        # None, not NaN, when the ground truth has no class: metrics.json is strict JSON.
        miou = float(np.mean(list(per_class.values()))) if per_class else None
        return {"per_class": per_class, "mIoU": miou, "classes": len(per_class), "images": self.images}


def index_names() -> dict[int, str]:
    """Devkit semantic index → category name for the official 25 nuImages categories
    (``name_to_index_mapping``: names sorted, 1..23, driveable surface 24, ego vehicle 31)."""
    from nuimcli.data.nuimages import name_to_index_mapping
    from nuimcli.synthetic.schema import CATEGORIES

    return {i: n for n, i in name_to_index_mapping([{"name": n} for n, _ in CATEGORIES]).items()}


class SemanticEval:
    """The semantic part of ``nuim eval``: each image's predicted map against its ground-truth PNG
    ``<root>/<file_name with jpg→png>`` (the layout ``nuim convert`` writes)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.iou = SemanticIoU()

    def add(self, file_name: str, pred: np.ndarray) -> None:
        """Count one image (its ground-truth PNG must exist: :class:`UserError` naming it)."""
        from nuimcli.data.dataset import semantic_path

        path = semantic_path(self.root, file_name)
        if not path.is_file():
            raise UserError(f"semantic PNG {path} does not exist (write it with `nuim convert`, or give --semantic-root)")
        self.iou.add(read_semantic_png(path), pred)

    def merge(self, confusions: list[np.ndarray], images: int) -> None:
        """Replace the counts by the sum of every process's (distributed evaluation)."""
        self.iou.confusion = np.sum(confusions, axis=0)
        self.iou.images = images

    def result(self) -> dict:
        """:meth:`SemanticIoU.result` with category names, plus the folder compared against."""
        return {**self.iou.result(index_names()), "semantic_root": str(self.root)}
