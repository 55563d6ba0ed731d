"""Comparing an exported file's detections with the PyTorch model's on one image.

Detections are matched one to one (same label, nearest box) before comparing, because two
detections of one class with scores equal to float rounding may come out of NMS in either
order: a different order is not a different prediction. Masks are compared pasted (binary,
at the input size) by IoU, which is what a user sees.

A mask passes when its IoU reaches the tolerance, or when every pixel that differs is one
whose pasted reference probability lies within ``mask_prob_margin`` of the threshold (pasted
with either box, see :func:`_mask_agreement`). Such a pixel flips with float rounding alone: a 9-pixel mask of a small object loses IoU 0.11 to one
of them (seen on Cascade's ONNX export, probabilities 3e-4 apart), though nothing a user could
call a different mask happened. A flipped pixel the model was sure about still fails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from nuimcli.models.roi_heads.postprocess import paste_window


@dataclass(frozen=True)
class Tolerances:
    """Largest allowed differences: box corners (px), scores, and the smallest mask IoU."""

    box_px: float = 0.05
    score: float = 1e-3
    mask_iou: float = 0.98
    #: a pixel whose reference probability is this close to the threshold may flip (see above)
    mask_prob_margin: float = 0.01


#: float32 export (the issue's contract).
FLOAT32 = Tolerances()
#: float16 export on CUDA: not measured on a GPU yet (none was available); set from fp16's
#: ~1e-3 relative precision on box coordinates of up to 1600 px and softmax scores.
FLOAT16 = Tolerances(box_px=2.0, score=1e-2, mask_iou=0.9, mask_prob_margin=0.05)


@dataclass
class Comparison:
    """Figures of one comparison; ``ok`` when all are within the tolerances."""

    detections_ref: int
    detections_exported: int
    max_box_diff_px: float
    max_score_diff: float
    min_mask_iou: float
    labels_equal: bool
    #: pixels (all masks) that differ although the reference probability was clear of the threshold
    clear_pixels_flipped: int
    ok: bool
    tolerances: Tolerances

    def to_dict(self) -> dict:
        """JSON-ready figures."""
        return asdict(self)

    def failure(self) -> str:
        """A one-line description of what is out of tolerance ('' when ``ok``)."""
        t = self.tolerances
        if self.detections_ref != self.detections_exported:  # nothing else was compared
            return f"{self.detections_exported} detections vs {self.detections_ref}"
        if not self.labels_equal:
            return "labels differ (no one-to-one match of the detections by label)"
        parts = []
        if self.max_box_diff_px > t.box_px:
            parts.append(f"boxes differ by {self.max_box_diff_px:.4g} px (> {t.box_px})")
        if self.max_score_diff > t.score:
            parts.append(f"scores differ by {self.max_score_diff:.3g} (> {t.score})")
        if self.clear_pixels_flipped:
            parts.append(f"mask IoU {self.min_mask_iou:.4f} (< {t.mask_iou}) with {self.clear_pixels_flipped} "
                         f"pixels flipped whose probability was more than {t.mask_prob_margin} from the threshold")
        return "; ".join(parts)


def _match(ref_boxes: np.ndarray, ref_labels: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each reference detection, the index of its counterpart (greedy: nearest unused box of
    the same label; -1 when none is left)."""
    out = np.full(len(ref_boxes), -1, dtype=np.int64)
    used = np.zeros(len(boxes), dtype=bool)
    for i in range(len(ref_boxes)):
        cand = np.flatnonzero((labels == ref_labels[i]) & ~used)
        if cand.size:
            j = cand[np.abs(boxes[cand] - ref_boxes[i]).max(1).argmin()]
            out[i] = j
            used[j] = True
    return out


def compare(ref: Sequence[np.ndarray], got: Sequence[np.ndarray], height: int, width: int,
            mask_thr: float, tol: Tolerances = FLOAT32) -> Comparison:
    """Compare two graph outputs ``(boxes, scores, labels, mask_probs, ...)`` of one image of
    ``height`` x ``width`` (masks pasted at that size with ``mask_thr``)."""
    rb, rs, rl, rm = (np.asarray(a) for a in ref[:4])
    gb, gs, gl, gm = (np.asarray(a) for a in got[:4])
    n_ref, n_got = len(rb), len(gb)
    if n_ref != n_got:
        return Comparison(n_ref, n_got, float("inf"), float("inf"), 0.0, False, 0, False, tol)
    if n_ref == 0:
        return Comparison(0, 0, 0.0, 0.0, 1.0, True, 0, True, tol)
    idx = _match(rb, rl, gb, gl)
    labels_equal = bool((idx >= 0).all())
    if not labels_equal:
        return Comparison(n_ref, n_got, float("inf"), float("inf"), 0.0, False, 0, False, tol)
    gb, gs, gm = gb[idx].astype(np.float32), gs[idx], gm[idx]
    box_diff = float(np.abs(gb - rb).max())
    score_diff = float(np.abs(gs.astype(np.float32) - rs).max())
    min_iou, clear_flips = 1.0, 0
    for i in range(n_ref):
        iou, flips = _mask_agreement(rm[i], rb[i], gm[i], gb[i], height, width, mask_thr, tol.mask_prob_margin)
        min_iou = min(min_iou, iou)
        clear_flips += flips if iou < tol.mask_iou else 0
    ok = box_diff <= tol.box_px and score_diff <= tol.score and clear_flips == 0
    return Comparison(n_ref, n_got, box_diff, score_diff, min_iou, True, clear_flips, ok, tol)


def _pasted_probs(mask: np.ndarray, box: np.ndarray, height: int, width: int) -> torch.Tensor:
    """One ``[M, M]`` probability map pasted into a ``height`` x ``width`` image (0 outside its box)."""
    out = torch.zeros((height, width))
    region, (ys, xs) = paste_window(torch.from_numpy(np.asarray(mask, dtype=np.float32))[None],
                                    torch.from_numpy(np.asarray(box, dtype=np.float32))[None], height, width)
    out[ys, xs] = region
    return out


def _mask_agreement(ref_mask: np.ndarray, ref_box: np.ndarray, mask: np.ndarray, box: np.ndarray, height: int,
                    width: int, thr: float, margin: float) -> tuple[float, int]:
    """(IoU of the two pasted binary masks, pixels that differ although the reference was clear
    there). Two empty masks agree perfectly.

    A pixel is clear when the reference probabilities pasted with the reference box *and* with the
    exported box (boxes may differ by the box tolerance, which on a box a few pixels tall moves a
    pixel across several of the 28 mask cells) lie on the same side of ``thr``, both more than
    ``margin`` from it.
    """
    ref_p, got_p = _pasted_probs(ref_mask, ref_box, height, width), _pasted_probs(mask, box, height, width)
    ref_at_box = _pasted_probs(ref_mask, box, height, width)
    a, b = ref_p >= thr, got_p >= thr
    union = int((a | b).sum())
    iou = int((a & b).sum()) / union if union else 1.0
    clear = ((ref_p - thr).abs() > margin) & ((ref_at_box - thr).abs() > margin) & (a == (ref_at_box >= thr))
    return iou, int(((a ^ b) & clear).sum())
