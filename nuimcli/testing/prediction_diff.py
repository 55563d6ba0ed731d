"""How far two sets of predictions of one image are apart (half vs float32, CUDA vs CPU, fast vs exact)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, 4]`` x ``[M, 4]`` → IoU ``[N, M]`` (x1, y1, x2, y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def prediction_diff(ref: Any, other: Any, min_iou: float = 0.5) -> dict[str, Any]:
    """Match ``other``'s detections to ``ref``'s one to one (same label, greedy in ``ref``'s score
    order, highest box IoU >= ``min_iou``) and report: counts, matched pairs, the largest box
    coordinate and score differences over the pairs, and the smallest and mean mask IoU.

    ``ref`` and ``other`` are :class:`~nuimcli.models.detector.Prediction` (or anything with
    ``boxes``, ``scores``, ``labels`` and optional ``masks``).
    """
    n, m = len(ref.scores), len(other.scores)
    iou = _box_iou(ref.boxes, other.boxes) if n and m else np.zeros((n, m))
    iou = np.where(ref.labels[:, None] == other.labels[None, :], iou, -1.0)
    used = np.zeros(m, bool)
    box_d, score_d, mask_iou = [], [], []
    for i in np.argsort(-ref.scores, kind="stable"):
        cand = np.where(used, -1.0, iou[i]) if m else np.zeros(0)
        if not m or cand.max() < min_iou:
            continue
        j = int(cand.argmax())
        used[j] = True
        box_d.append(float(np.abs(ref.boxes[i] - other.boxes[j]).max()))
        score_d.append(float(abs(ref.scores[i] - other.scores[j])))
        if getattr(ref, "masks", None) is not None and getattr(other, "masks", None) is not None:
            a, b = ref.masks[i], other.masks[j]
            union = np.logical_or(a, b).sum()
            mask_iou.append(float(np.logical_and(a, b).sum() / union) if union else 1.0)
    return dict(detections_ref=n, detections_other=m, matched=len(box_d),
                box_max_abs_px=max(box_d, default=0.0), score_max_abs=max(score_d, default=0.0),
                mask_iou_min=min(mask_iou, default=None), mask_iou_mean=float(np.mean(mask_iou)) if mask_iou else None)
