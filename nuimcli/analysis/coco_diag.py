"""The numbers behind ``nuim eval --plots``: per-class precision-recall curves and the COCO
error-analysis breakdown, both read from ``COCOeval``'s precision array (run by
faster-coco-eval, as :mod:`nuimcli.engine.coco_metrics` does).

Error analysis follows the COCO detection-analysis tool (``analyze()`` of the COCO API, ported
in mmdet's ``coco_error_analysis.py``), per class, at 100 detections per image, area "all":

- ``C75``, ``C50``: precision at IoU 0.75 and 0.5;
- ``Loc``: at IoU 0.1 (localisation errors forgiven);
- ``Sim``: also forgiving confusion with a class of the same nuImages category prefix
  (:data:`SIMILAR_GROUPS`): those ground truths become crowd regions of the class under study;
- ``Oth``: also forgiving confusion with any other class;
- ``BG``: also removing every remaining false positive (precision 1 wherever recall is reached);
- ``FN``: precision 1 everywhere; the gap to ``BG`` is the recall never reached.

Each value is the area under that precision-recall curve (101 recall points), as the tool
prints in its legends.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any, Sequence

import numpy as np

from nuimcli.engine.coco_metrics import _results_coco, evaluated_categories, load_ground_truth, shifted_ground_truth

#: The nuImages category prefixes (``vehicle.car`` ...) as groups of class names: "similar" classes.
SIMILAR_GROUPS: tuple[tuple[str, ...], ...] = (
    ("car", "truck", "trailer", "bus", "construction_vehicle"),
    ("bicycle", "motorcycle"),
    ("pedestrian",),
    ("traffic_cone", "barrier"),
)
#: Error-analysis stages, in the order the COCO tool stacks them.
ERROR_KEYS: tuple[str, ...] = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
#: IoU thresholds of the PR curves (the last is the mean over 0.50:0.05:0.95).
PR_IOUS: tuple[str, ...] = ("0.5", "0.75", "0.5:0.95")
#: The 101 recall points of COCOeval.
RECALL = np.linspace(0.0, 1.0, 101)

def similar_names(name: str) -> tuple[str, ...]:
    """The other classes of ``name``'s group in :data:`SIMILAR_GROUPS` (empty for an unknown name)."""
    for g in SIMILAR_GROUPS:
        if name in g:
            return tuple(n for n in g if n != name)
    return ()

def _prepare(gt: dict | str, reference_compat: bool) -> tuple[dict, list[dict]]:
    gt = load_ground_truth(gt)
    # Same id handling as the AP tables (see coco_metrics), so the curves match those numbers.
    gt = shifted_ground_truth(gt) if not reference_compat else {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
    return gt, evaluated_categories(gt)

def _run(gt: dict, results: Sequence[dict], iou_type: str, cat_ids: list[int], iou_thrs: Sequence[float] | None,
         max_dets: Sequence[int]) -> np.ndarray:
    """``COCOeval`` precision ``[T, R, K, A, M]`` with -1 (undefined) kept."""
    from faster_coco_eval import COCO, COCOeval_faster

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", UserWarning)  # annotation id 0 in reference-compat mode
        gt_coco = COCO(gt, print_function=lambda *a, **k: None)
        dt = _results_coco(gt_coco, results, iou_type)
        ev = COCOeval_faster(gt_coco, dt, iou_type, print_function=lambda *a, **k: None, rle_iou_max_workers=1)
        ev.params.catIds = list(cat_ids)
        ev.params.imgIds = sorted(im["id"] for im in gt["images"])
        ev.params.maxDets = list(max_dets)
        if iou_thrs is not None:
            ev.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
    return np.asarray(ev.eval["precision"])

def _curve(p: np.ndarray) -> list[float] | None:
    """A precision curve over the 101 recall points; None when the class has no ground truth."""
    if (p < 0).all():
        return None
    return [float(v) for v in np.where(p < 0, 0.0, p)]

def pr_curves(results: Sequence[dict], gt: dict | str, iou_type: str, reference_compat: bool = False) -> dict[str, Any]:
    """Per-class precision at the 101 recall points, for IoU 0.5, 0.75 and the mean over 0.50:0.95.

    Read from the same ``COCOeval`` run as the AP tables (maxDets 100/300/1000, area "all", the
    last maxDet as mmdet's per-class AP), so the mean of a class's ``0.5:0.95`` curve is its AP
    in the table. Returns ``{"iou_type", "recall": [101], "classes": {name: {"0.5": [101] | None,
    "0.75": ..., "0.5:0.95": ..., "AP": float | None}}}``.
    """
    from nuimcli.engine.coco_metrics import MAX_DETS

    g, cats = _prepare(gt, reference_compat)
    prec = _run(g, results, iou_type, [c["id"] for c in cats], None, MAX_DETS)[..., 0, -1]  # [T, R, K]
    thrs = np.linspace(0.5, 0.95, 10)
    out: dict[str, Any] = {"iou_type": iou_type, "recall": [float(r) for r in RECALL], "classes": {}}
    for k, c in enumerate(sorted(cats, key=lambda c: c["id"])):
        p = prec[:, :, k]
        entry: dict[str, Any] = {"0.5": _curve(p[np.isclose(thrs, 0.5)][0]), "0.75": _curve(p[np.isclose(thrs, 0.75)][0])}
        valid = p[p > -1]
        # Mean over IoUs per recall point; a class without ground truth has no curve.
        entry["0.5:0.95"] = None if not valid.size else [float(v) for v in np.where(p < 0, 0, p).mean(axis=0)]
        entry["AP"] = float(valid.mean()) if valid.size else None
        out["classes"][str(c.get("name", c["id"]))] = entry
    return out

def error_analysis(results: Sequence[dict], gt: dict | str, iou_type: str,
                   reference_compat: bool = False) -> dict[str, Any]:
    """The COCO error breakdown per class (see the module docstring).

    Returns ``{"iou_type", "recall": [101], "classes": {name: {"ap": {C75..FN: float},
    "curves": {C75..FN: [101]}} | None}, "overall": {C75..FN: float}}`` — a class without ground
    truth is None; ``overall`` is the mean over the classes that have ground truth.
    """
    g, cats = _prepare(gt, reference_compat)
    cats = sorted(cats, key=lambda c: c["id"])
    ids = {str(c.get("name", c["id"])): c["id"] for c in cats}
    base = _run(g, results, iou_type, list(ids.values()), (0.75, 0.5, 0.1), (100,))[:, :, :, 0, 0]  # [3, R, K]
    out: dict[str, Any] = {"iou_type": iou_type, "recall": [float(r) for r in RECALL], "classes": {}}
    per_class_aps = []
    for k, (name, cid) in enumerate(ids.items()):
        if (base[0, :, k] < 0).all():
            out["classes"][name] = None
            continue
        curves = [np.where(base[t, :, k] < 0, 0.0, base[t, :, k]) for t in range(3)]
        mine = [r for r in results if r["category_id"] == cid]
        for forgiven in ([ids[n] for n in similar_names(name) if n in ids], [i for i in ids.values() if i != cid]):
            # Ground truth of the forgiven classes becomes a crowd region of this class: a detection
            # on it is then neither a true nor a false positive (the COCO tool's "ignore").
            anns = []
            for a in g["annotations"]:
                if a["category_id"] == cid:
                    anns.append(a)
                elif a["category_id"] in forgiven:
                    anns.append({**a, "category_id": cid, "iscrowd": 1})
            p = _run({**g, "annotations": anns}, mine, iou_type, [cid], (0.1,), (100,))[0, :, 0, 0, 0]
            # Forgiving more can only help; max() keeps the stack monotone as the tool's plot is.
            curves.append(np.maximum(np.where(p < 0, 0.0, p), curves[-1]))
        curves.append((curves[-1] > 0).astype(np.float64))  # BG: every remaining false positive removed
        curves.append(np.ones_like(curves[0]))  # FN
        aps = {key: float(c.mean()) for key, c in zip(ERROR_KEYS, curves)}
        per_class_aps.append(aps)
        out["classes"][name] = {"ap": aps, "curves": {key: [float(v) for v in c] for key, c in zip(ERROR_KEYS, curves)}}
    out["overall"] = {key: (float(np.mean([a[key] for a in per_class_aps])) if per_class_aps else None)
                      for key in ERROR_KEYS}
    return out
