"""Oracle parity: comparing our traced tensors with the oracle's, with the tolerances and the
set-aside rules (used by ``tests/models/test_parity.py`` and ``bench/make_parity_fixtures.py``).

Final detections must match one to one within the tolerances of issue 12 (:data:`BOX_TOL_PX`,
:data:`SCORE_TOL`, :data:`MASK_IOU_MIN`); tensors before NMS within twice those. Only near-ties
may be set aside, and each is counted in the :class:`Report`: candidates or detections within
a hair of a top-k cut or of the score threshold, mask pixels within a hair of the mask
threshold, masks of boxes under 2 px. Nothing here imports mmdet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from nuimcli.testing.inference_parity import Trace

# Final detections: the tolerances of issue 12.
BOX_TOL_PX = 0.01
SCORE_TOL = 1e-4
MASK_IOU_MIN = 0.99
THIN_BOX_PX = 2.0  # masks of boxes narrower or lower than this may be set aside
# Tensors before NMS and the RoI stages: twice the final tolerances. Two machines sum float32
# convolutions in different orders; with the calibrated weights of inference_parity, running
# the backbone channels-last instead of NCHW (another summation order) moves the RPN candidates
# by up to 3e-3 px, stage scores by 3e-5, final boxes by 7e-4 px and scores by 5e-6.
PRE_NMS_BOX_TOL_PX = 0.02
PRE_NMS_SCORE_TOL = 2e-4
SEMANTIC_REL_TOL = 1e-4  # of the semantic logits' largest magnitude (measured: 4e-6)
# "Within a hair": a candidate whose score is this close to a top-k cut or a score threshold,
# or a mask pixel whose probability is this close to the mask threshold (measured noise of the
# mask probabilities: 4e-5), may fall either way on another machine: set aside, counted.
TIE_TOL = SCORE_TOL
MASK_TIE = 5e-4


# --------------------------------------------------------------------------- comparing
@dataclass
class Report:
    """Worst differences of one architecture against the oracle, set-asides and failures."""

    figures: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def worst(self, key: str, value: float, larger_is_worse: bool = True) -> None:
        old = self.figures.get(key)
        if old is None or (value > old if larger_is_worse else value < old):
            self.figures[key] = float(value)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + int(n)

    def summary(self) -> str:
        f = self.figures
        c = self.counts
        line = (f"dets matched {c.get('matched', 0)}/{c.get('theirs', 0)} (ours {c.get('ours', 0)})"
                f" | box {f.get('det_box_px', float('nan')):.1e}px score {f.get('det_score', float('nan')):.1e}"
                f" mask IoU min {f.get('mask_iou_min', float('nan')):.4f} (raw {f.get('mask_iou_raw_min', float('nan')):.4f})"
                f" | rpn pre-NMS box {f.get('rpn_box_px', float('nan')):.1e}px score {f.get('rpn_score', float('nan')):.1e}"
                f" | proposals {f.get('proposal_box_px', float('nan')):.1e}px"
                f" | stages box {f.get('stage_box_px', float('nan')):.1e}px score {f.get('stage_score', float('nan')):.1e}")
        if "semantic" in f:
            line += f" | semantic {f['semantic']:.1e}"
        aside = {k: v for k, v in c.items() if k.startswith("set_aside") and v}
        line += " | set aside: " + (", ".join(f"{k[10:]} {v}" for k, v in aside.items()) if aside else "none")
        return line


def _box_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise max-abs coordinate difference ``[len(a), len(b)]``."""
    return np.abs(a[:, None, :4].astype(np.float64) - b[None, :, :4]).max(-1)


def _match_sets(rep: Report, key: str, ours_b: np.ndarray, ours_s: np.ndarray, theirs_b: np.ndarray,
                theirs_s: np.ndarray, cut: Optional[float]) -> None:
    """Two candidate lists that should be the same set (order may differ among equal scores):
    each of either side needs a partner with a box within :data:`PRE_NMS_BOX_TOL_PX` and a score
    within :data:`PRE_NMS_SCORE_TOL`; one without is set aside only if its score is within
    :data:`PRE_NMS_SCORE_TOL` of ``cut`` (the score at a top-k cut), else a failure."""
    if len(ours_b) == 0 or len(theirs_b) == 0:
        if len(ours_b) != len(theirs_b):
            rep.failures.append(f"{key}: ours {len(ours_b)} vs oracle {len(theirs_b)}")
        return
    d = _box_diff(theirs_b, ours_b)
    ds = np.abs(theirs_s[:, None].astype(np.float64) - ours_s[None, :])
    # Clipping gives several candidates the same box (the whole image): among equal boxes the
    # partner is the one with the nearest score.
    cost = np.where(ds <= PRE_NMS_SCORE_TOL, d + ds, np.inf)
    for side, c, scores in (("oracle", cost, theirs_s), ("ours", cost.T, ours_s)):
        j = c.argmin(1)
        best = (d if side == "oracle" else d.T)[np.arange(len(j)), j]
        ok = np.isfinite(c.min(1)) & (best <= PRE_NMS_BOX_TOL_PX)
        rep.worst(f"{key}_box_px", float(best[ok].max()) if ok.any() else 0.0)
        if ok.any():
            other = ours_s if side == "oracle" else theirs_s
            rep.worst(f"{key}_score", float(np.abs(scores[ok] - other[j[ok]]).max()))
        for i in np.nonzero(~ok)[0]:
            if cut is not None and abs(float(scores[i]) - cut) <= PRE_NMS_SCORE_TOL:
                rep.add(f"set_aside_{key}_cut")
            else:
                near = float(d.min(0 if side == "ours" else 1)[i])
                rep.failures.append(f"{key}: {side} candidate {i} (score {float(scores[i]):.6f}) has no partner"
                                    f" (nearest box {near:.3g} px)")


def compare_rpn(rep: Report, ours: dict, theirs: dict, nms_pre: int, anchors_per_level: Sequence[int],
                max_proposals: int) -> None:
    """RPN candidates per level (pre-NMS) and the proposals, each compared as sets."""
    for lvl, n_anchors in enumerate(anchors_per_level):
        o = ours["rpn_levels"] == lvl
        t = theirs["rpn_levels"] == lvl
        ts = theirs["rpn_scores"][t]
        # Only a level with more anchors than nms_pre has a top-k cut.
        cut = float(np.sort(ts)[::-1][nms_pre - 1]) if n_anchors > nms_pre and len(ts) >= nms_pre else None
        _match_sets(rep, "rpn", ours["rpn_boxes"][o], ours["rpn_scores"][o], theirs["rpn_boxes"][t], ts, cut)
    op, tp = ours["proposals"], theirs["proposals"]
    cut = float(tp[-1, 4]) if len(tp) == max_proposals else None
    _match_sets(rep, "proposal", op[:, :4], op[:, 4], tp[:, :4], tp[:, 4], cut)


def compare_stages(rep: Report, ours: dict, theirs: dict, scale_factor: Sequence[float]) -> None:
    """RoI-stage tensors row by row (both sides ran on the oracle's proposals): box-head scores
    (softmax of the logits) within :data:`PRE_NMS_SCORE_TOL`, stage RoIs and last-stage boxes
    within :data:`PRE_NMS_BOX_TOL_PX` (stage RoIs are in the network frame, so they are mapped
    to original pixels first), and the semantic logits within :data:`SEMANTIC_REL_TOL` of
    their largest magnitude."""
    s = 0
    while f"stage{s}_cls" in theirs:
        k = f"stage{s}_cls"
        if ours.get(k, np.zeros(0)).shape != theirs[k].shape:
            rep.failures.append(f"{k}: shape {ours.get(k, np.zeros(0)).shape} vs oracle {theirs[k].shape}")
            return
        p_o = F.softmax(torch.from_numpy(ours[k]).double(), -1).numpy()
        p_t = F.softmax(torch.from_numpy(theirs[k]).double(), -1).numpy()
        rep.worst("stage_score", float(np.abs(p_o - p_t).max()))
        if s > 0:
            sf = float(scale_factor[0])
            rep.worst("stage_box_px", float(np.abs(ours[f"stage{s}_rois"] - theirs[f"stage{s}_rois"]).max()) / sf)
        s += 1
    for k in ("roi_boxes", "roi_scores"):
        if ours[k].shape != theirs[k].shape:
            rep.failures.append(f"{k}: shape {ours[k].shape} vs oracle {theirs[k].shape}")
            return
    rep.worst("stage_box_px", float(np.abs(ours["roi_boxes"] - theirs["roi_boxes"]).max()))
    rep.worst("stage_score", float(np.abs(ours["roi_scores"] - theirs["roi_scores"]).max()))
    if "semantic" in theirs:
        rel = np.abs(ours["semantic"] - theirs["semantic"]).max() / max(float(np.abs(theirs["semantic"]).max()), 1e-12)
        rep.worst("semantic", float(rel))
    for key, tol in (("stage_box_px", PRE_NMS_BOX_TOL_PX), ("stage_score", PRE_NMS_SCORE_TOL),
                     ("semantic", SEMANTIC_REL_TOL)):
        if rep.figures.get(key, 0.0) > tol:
            rep.failures.append(f"{key}: {rep.figures[key]:.3g} > {tol:g}")


def compare_detections(rep: Report, ours, theirs: dict, score_thr: float, max_per_img: int,
                       mask_ties: Optional[Callable[[int], np.ndarray]] = None) -> None:
    """Final detections one to one (same label, greedy by the oracle's score, nearest box).

    Every pair needs its box within :data:`BOX_TOL_PX`, score within :data:`SCORE_TOL` and mask
    IoU >= :data:`MASK_IOU_MIN`. Set aside, counted: detections without a partner whose score
    is within :data:`TIE_TOL` of the top-``max_per_img`` cut or of ``score_thr``; masks of boxes
    under :data:`THIN_BOX_PX` wide or high (a sub-pixel sliver's few pixels flip either way);
    mask pixels where ours is within :data:`MASK_TIE` of the mask threshold (``mask_ties(j)``
    gives them for our detection ``j``; without it none are excused), left out of the IoU.
    """
    tb, ts, tl = theirs["det_boxes"], theirs["det_scores"], theirs["det_labels"]
    ob, os_, ol = ours.boxes, ours.scores, ours.labels
    rep.add("theirs", len(tb))
    rep.add("ours", len(ob))
    t_masks = decode_masks(theirs) if "det_masks" in theirs else None
    used = np.zeros(len(ob), bool)
    unmatched_t = []
    for i in np.argsort(-ts, kind="stable"):
        cand = np.nonzero(~used & (ol == tl[i]))[0]
        if len(cand) == 0:
            unmatched_t.append(i)
            continue
        d = np.abs(ob[cand].astype(np.float64) - tb[i]).max(1) + 1e3 * np.abs(os_[cand] - ts[i])
        j = int(cand[int(np.argmin(d))])
        box_d = float(np.abs(ob[j].astype(np.float64) - tb[i]).max())
        score_d = abs(float(os_[j]) - float(ts[i]))
        if box_d > BOX_TOL_PX or score_d > SCORE_TOL:
            unmatched_t.append(i)
            continue
        used[j] = True
        rep.add("matched")
        rep.worst("det_box_px", box_d)
        rep.worst("det_score", score_d)
        if t_masks is not None and ours.masks is not None:
            compare_mask(rep, ours.masks[j], t_masks[i], tb[i], int(tl[i]),
                          (lambda j=j: mask_ties(j)) if mask_ties is not None else None)
    cut_t = float(ts.min()) if len(ts) == max_per_img else None
    cut_o = float(os_.min()) if len(os_) == max_per_img else None
    for side, idx, scores, cut in (("oracle", unmatched_t, ts, cut_t),
                                   ("ours", np.nonzero(~used)[0], os_, cut_o)):
        for i in idx:
            s = float(scores[i])
            if cut is not None and abs(s - cut) <= TIE_TOL:
                rep.add("set_aside_topk_cut")
            elif abs(s - score_thr) <= TIE_TOL:
                rep.add("set_aside_score_thr")
            else:
                rep.failures.append(f"detection of {side} without partner: label {int((tl if side == 'oracle' else ol)[i])}"
                                    f" score {s:.6f} box {(tb if side == 'oracle' else ob)[i].round(3).tolist()}")
    for k in ("det_box_px", "det_score"):
        rep.figures.setdefault(k, 0.0)
    rep.figures.setdefault("mask_iou_min", 1.0)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum()) / union


def compare_mask(rep: Report, a: np.ndarray, b: np.ndarray, box: np.ndarray, label: int,
                  ties: Optional[Callable[[], np.ndarray]]) -> None:
    """One matched pair's masks (ours ``a``, the oracle's ``b``); see :func:`compare_detections`."""
    iou = _iou(a, b)
    rep.worst("mask_iou_raw_min", iou, larger_is_worse=False)
    if min(box[2] - box[0], box[3] - box[1]) < THIN_BOX_PX:
        if iou < MASK_IOU_MIN:
            rep.add("set_aside_thin_mask")
        return
    if iou < MASK_IOU_MIN and ties is not None:
        t = ties()
        excused = int((np.logical_xor(a, b) & t).sum())
        if excused:
            rep.add("set_aside_mask_tie_px", excused)
            iou = _iou(a & ~t, b & ~t)
    rep.worst("mask_iou_min", iou, larger_is_worse=False)
    if iou < MASK_IOU_MIN:
        rep.failures.append(f"mask IoU {iou:.4f} < {MASK_IOU_MIN} (label {label}, box {box.round(2).tolist()},"
                            f" {int(np.logical_xor(a, b).sum())} of {int(np.logical_or(a, b).sum())} px differ)")


# --------------------------------------------------------------------------- masks as RLE
def encode_masks(masks: np.ndarray) -> np.ndarray:
    """bool ``[N, H, W]`` → fixed-width bytes array of COCO RLE counts (no pickle needed)."""
    from pycocotools import mask as mask_util

    counts = [mask_util.encode(np.asfortranarray(m.astype(np.uint8)))["counts"] for m in masks]
    return np.asarray(counts, dtype=np.bytes_) if counts else np.zeros(0, dtype="S1")


def decode_masks(fx: dict) -> np.ndarray:
    """The fixture's ``det_masks`` (RLE counts) at ``det_mask_size`` ``(H, W)`` → bool ``[N, H, W]``."""
    from pycocotools import mask as mask_util

    h, w = (int(v) for v in fx["det_mask_size"])
    out = np.zeros((len(fx["det_masks"]), h, w), dtype=bool)
    for i, c in enumerate(fx["det_masks"]):
        out[i] = mask_util.decode({"size": [h, w], "counts": bytes(c)}).astype(bool)
    return out


def compare(model: nn.Module, ours: "Trace", fx: dict) -> Report:
    """Every comparison of one architecture: RPN candidates and proposals (as sets), RoI stages
    row by row (``ours``: a :class:`~nuimcli.testing.inference_parity.Trace` made with the
    fixture's proposals), final detections one to one."""
    rep = Report()
    t = ours.tensors
    compare_rpn(rep, t, fx, model.rpn_head.nms_pre, t["rpn_anchors_per_level"], model.rpn_head.max_per_img)
    compare_stages(rep, t, fx, ours.meta.scale_factor)
    test_cfg = model.roi_head.test_cfg
    compare_detections(rep, ours.prediction, fx, test_cfg.score_thr, test_cfg.max_per_img,
                       mask_ties=lambda j: ours.mask_ties(j, MASK_TIE))
    return rep
