"""COCO box and mask metrics for nuImages, computed the way mmdet 2.x ``CocoDataset.evaluate`` does.

The computation is pycocotools' ``COCOeval`` (matching, accumulation, 101-point interpolated
precision), run by ``faster-coco-eval`` — a maintained C++ port of the same algorithm that gives
the same numbers several times faster. ``tests/engine/test_coco_metrics.py`` checks the numbers
against pycocotools itself.

Settings as in the reference evaluation (``models.md`` §6): IoU thresholds 0.50:0.05:0.95,
COCO area ranges, ``maxDets = [100, 300, 1000]``. AP is read at 100 detections per image;
AP50, AP75, APs, APm, APl and the per-class AP at 1000 (mmdet reads ``stats[1:6]`` there);
AR@100 at 100. Mask results are evaluated without their ``bbox`` so that a detection's area for
the small/medium/large split is its mask area (mmdet >= 2.12 does the same; the overall AP does
not depend on it).

Annotation ids: the converter numbers annotations from 0, and ``COCOeval`` records a match by
storing the matched annotation's id and later tests it for truth, so the annotation with id 0 can
never be a true positive (``models.md`` §5.6). By default the ground truth is evaluated as if
every annotation id were shifted by +1, so every annotation can match; the numbers then equal
``COCOeval``'s on that shifted file. ``reference_compat=True`` evaluates the file as it is, equal to
raw ``COCOeval`` (how the published table was computed).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from nuimcli import CLASSES
from nuimcli.errors import UserError

#: maxDets as mmdet's ``proposal_nums``.
MAX_DETS: tuple[int, int, int] = (100, 300, 1000)
IOU_TYPES: tuple[str, str] = ("bbox", "segm")
#: Names of the summary metrics, in display order.
METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR@100")


@dataclass
class IoUTypeMetrics:
    """Metrics of one IoU type (``bbox`` or ``segm``); values in [0, 1], ``nan`` when undefined
    (no ground truth in that area range / class)."""

    AP: float
    AP50: float
    AP75: float
    APs: float
    APm: float
    APl: float
    AR100: float
    #: class name -> AP@[.5:.95] (area all, last maxDet), ``nan`` for a class without ground truth.
    per_class: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """The seven summary numbers keyed by :data:`METRIC_NAMES`."""
        return {
            "AP": self.AP, "AP50": self.AP50, "AP75": self.AP75, "APs": self.APs,
            "APm": self.APm, "APl": self.APl, "AR@100": self.AR100,
        }


@dataclass
class CocoMetrics:
    """Box and mask metrics of one results list against one ground-truth file."""

    bbox: IoUTypeMetrics | None
    segm: IoUTypeMetrics | None
    reference_compat: bool
    num_images: int
    num_detections: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; undefined values (``nan``) become ``null``."""

        def clean(v: float) -> float | None:
            return None if v is None or math.isnan(v) else float(v)

        out: dict[str, Any] = {
            "mode": "reference-compat" if self.reference_compat else "shifted-ids",
            "num_images": self.num_images,
            "num_detections": self.num_detections,
        }
        for name in IOU_TYPES:
            m: IoUTypeMetrics | None = getattr(self, name)
            if m is None:
                continue
            d = {k: clean(v) for k, v in m.summary().items()}
            d["per_class"] = {k: clean(v) for k, v in m.per_class.items()}
            out[name] = d
        return out


# --------------------------------------------------------------------------- inputs


def load_json_file(path: str | os.PathLike, what: str) -> Any:
    """Read a JSON file; a missing or malformed file is a :class:`UserError` naming it."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {p}: no such file")
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {p}: not valid JSON ({e})") from None


def load_ground_truth(path_or_dict: str | os.PathLike | dict) -> dict:
    """Load and check a COCO ground-truth file (the converter's ``nuimages_v1.0-val.json``).

    Returns the dict (``images``, ``annotations``, ``categories``). Raises :class:`UserError`
    naming the file and the problem when a key is missing or malformed.
    """
    if isinstance(path_or_dict, dict):
        gt, where = path_or_dict, "ground truth"
    else:
        gt, where = load_json_file(path_or_dict, "annotation file"), f"annotation file {path_or_dict}"
    if not isinstance(gt, dict):
        raise UserError(f"{where}: expected a COCO object with images/annotations/categories, got {type(gt).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise UserError(f"{where}: missing list '{key}' (not a COCO instances file?)")
    if not gt["categories"]:
        raise UserError(f"{where}: 'categories' is empty")
    for i, img in enumerate(gt["images"]):
        if not isinstance(img, dict) or not all(k in img for k in ("id", "width", "height")):
            raise UserError(f"{where}: images[{i}] needs 'id', 'width' and 'height'")
    for i, ann in enumerate(gt["annotations"]):
        if not isinstance(ann, dict) or not all(k in ann for k in ("id", "image_id", "category_id", "bbox")):
            raise UserError(f"{where}: annotations[{i}] needs 'id', 'image_id', 'category_id' and 'bbox'")
    ids = [a["id"] for a in gt["annotations"]]
    if len(set(ids)) != len(ids):
        raise UserError(f"{where}: annotation ids are not unique")
    return gt


def evaluated_categories(gt: dict, classes: Optional[Sequence[str]] = None) -> list[dict]:
    """The categories evaluated, sorted by id: those named in ``classes`` (the model's list, as
    mmdet picks ``cat_ids`` by its classes); without ``classes``, those named like the 10 nuImages
    classes, or every category when none of them is."""
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    if classes is not None:
        return [c for c in cats if c.get("name") in set(classes)]
    named = [c for c in cats if c.get("name") in CLASSES]
    return named or cats


def shifted_ground_truth(gt: dict, shift: int = 1) -> dict:
    """A copy of ``gt`` with every annotation id increased by ``shift`` (the input is not changed)."""
    return {**gt, "annotations": [{**a, "id": a["id"] + shift} for a in gt["annotations"]]}


def check_results(results: Sequence[dict], gt: dict, where: str = "results") -> tuple[bool, bool]:
    """Check a COCO results list against ``gt``; return (all have ``bbox``, all have ``segmentation``).

    Every entry needs ``image_id`` (an image of ``gt``), ``category_id`` (a category of ``gt``),
    ``score`` and at least one of ``bbox`` ([x, y, w, h]) / ``segmentation`` (RLE of the image's
    size). A bad entry is a :class:`UserError` naming its index and key — nothing is dropped.
    """
    if not isinstance(results, list):
        raise UserError(f"{where}: expected a list of detections, got {type(results).__name__}")
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    all_box = all_seg = True
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise UserError(f"{where}[{i}]: expected an object, got {type(r).__name__}")
        try:
            img_id, cat_id, score = r["image_id"], r["category_id"], r["score"]
        except KeyError as e:
            raise UserError(f"{where}[{i}]: missing key {e}") from None
        if img_id not in sizes:
            raise UserError(f"{where}[{i}]: image_id {img_id!r} is not an image of the annotation file")
        if cat_id not in cat_ids:
            raise UserError(f"{where}[{i}]: category_id {cat_id!r} is not a category of the annotation file")
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            raise UserError(f"{where}[{i}]: score must be a number, got {score!r}")
        box = r.get("bbox")
        if box is None:
            all_box = False
        elif not (isinstance(box, (list, tuple)) and len(box) == 4):
            raise UserError(f"{where}[{i}]: bbox must be [x, y, w, h], got {box!r}")
        seg = r.get("segmentation")
        if seg is None:
            all_seg = False
        else:
            if not (isinstance(seg, dict) and "counts" in seg and "size" in seg):
                raise UserError(f"{where}[{i}]: segmentation must be an RLE object with 'size' and 'counts'")
            if tuple(seg["size"]) != sizes[img_id]:
                raise UserError(
                    f"{where}[{i}]: segmentation size {list(seg['size'])} differs from image {img_id}'s "
                    f"size [{sizes[img_id][0]}, {sizes[img_id][1]}] (height, width)"
                )
        if box is None and seg is None:
            raise UserError(f"{where}[{i}]: needs 'bbox' or 'segmentation'")
    return all_box, all_seg


# --------------------------------------------------------------------------- evaluation


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    pass


def _summarize(ev: Any, ap: bool, iou_thr: float | None = None, area: str = "all", max_dets: int = 100) -> float:
    """pycocotools' ``COCOeval.summarize`` for one number, but ``nan`` instead of -1."""
    p = ev.params
    a = list(p.areaRngLbl).index(area)
    m = list(p.maxDets).index(max_dets)
    s = ev.eval["precision"] if ap else ev.eval["recall"]  # [T,R,K,A,M] / [T,K,A,M]
    if iou_thr is not None:
        s = s[np.flatnonzero(np.isclose(p.iouThrs, iou_thr))]
    s = s[..., a, m]
    valid = s[s > -1]
    return float(np.mean(valid)) if valid.size else float("nan")


def _results_coco(gt_coco: Any, results: Sequence[dict], iou_type: str) -> Any:
    """The detections as a COCO object, as ``COCO.loadRes`` builds it for ``iou_type``.

    ``loadRes`` takes a detection's area from its ``bbox`` whenever the first result has one,
    which is why mmdet (>= 2.12) deletes ``bbox`` from mask results. Here the annotations are
    built directly: ``segm`` detections get their mask area (pycocotools' ``area``), ``bbox``
    detections w * h; ids 1..N in list order and ``iscrowd`` 0, as ``loadRes`` assigns them.
    Only the keys the evaluation reads are copied, so the caller's dicts stay untouched.
    """
    from faster_coco_eval import COCO
    from pycocotools import mask as mask_util

    anns: list[dict] = []
    if iou_type == "bbox":
        for i, r in enumerate(results):
            b = r["bbox"]
            anns.append({"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
                         "bbox": b, "area": b[2] * b[3], "id": i + 1, "iscrowd": 0})
    else:
        area = mask_util.area  # one C call per mask: faster than the batched form here
        for i, r in enumerate(results):
            seg = r["segmentation"]
            if isinstance(seg.get("counts"), list):  # uncompressed RLE -> compressed, as loadRes expects
                seg = mask_util.frPyObjects(seg, *seg["size"])
            anns.append({"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
                         "segmentation": seg, "area": float(area(seg)), "id": i + 1, "iscrowd": 0})
    res = COCO(print_function=_quiet)
    res.dataset = {"images": gt_coco.dataset["images"], "categories": gt_coco.dataset["categories"], "annotations": anns}
    res.createIndex()
    return res


def _evaluate_type(gt_coco: Any, dets: Sequence[dict], iou_type: str, cat_ids: list[int], img_ids: list[int],
                   cat_names: dict[int, str]) -> IoUTypeMetrics:
    from faster_coco_eval import COCOeval_faster

    dt_coco = _results_coco(gt_coco, dets, iou_type)
    # One thread: the IoU work per (image, class) is small; threads only contend (measured).
    ev = COCOeval_faster(gt_coco, dt_coco, iou_type, print_function=_quiet, rle_iou_max_workers=1)
    ev.params.catIds = list(cat_ids)
    ev.params.imgIds = list(img_ids)
    ev.params.maxDets = list(MAX_DETS)
    ev.evaluate()
    ev.accumulate()
    last = MAX_DETS[-1]
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = {}
    for k, cid in enumerate(ev.params.catIds):  # evaluate() sorted catIds: k indexes that order
        s = precision[:, :, k, 0, -1]
        s = s[s > -1]
        per_class[cat_names[cid]] = float(np.mean(s)) if s.size else float("nan")
    return IoUTypeMetrics(
        AP=_summarize(ev, True, max_dets=MAX_DETS[0]),
        AP50=_summarize(ev, True, iou_thr=0.5, max_dets=last),
        AP75=_summarize(ev, True, iou_thr=0.75, max_dets=last),
        APs=_summarize(ev, True, area="small", max_dets=last),
        APm=_summarize(ev, True, area="medium", max_dets=last),
        APl=_summarize(ev, True, area="large", max_dets=last),
        AR100=_summarize(ev, False, max_dets=MAX_DETS[0]),
        per_class=per_class,
    )


def evaluate_results(
    results: Sequence[dict] | str | os.PathLike,
    ground_truth: dict | str | os.PathLike,
    reference_compat: bool = False,
    iou_types: Iterable[str] = IOU_TYPES,
    classes: Optional[Sequence[str]] = None,
) -> CocoMetrics:
    """COCO metrics of ``results`` (a COCO results list or a path to one) against ``ground_truth``.

    Each result: ``image_id``, ``category_id``, ``score``, ``bbox`` [x, y, w, h] and/or
    ``segmentation`` (RLE). Box metrics need every entry to have a ``bbox``, mask metrics a
    ``segmentation``; an IoU type the results cannot support is skipped (``None``), and asking
    for none that they support is a :class:`UserError`. ``reference_compat`` evaluates the
    annotation ids as they are (see the module docstring). ``classes``: evaluate the categories of
    these names (the model's classes; see :func:`evaluated_categories`). The inputs are not modified.
    """
    from faster_coco_eval import COCO

    where = "results"
    if not isinstance(results, list):
        where = f"results file {results}"
        results = load_json_file(results, "results file")
    gt = load_ground_truth(ground_truth)
    has_box, has_seg = check_results(results, gt, where)
    wanted = [t for t in iou_types if t in IOU_TYPES]
    if not results:
        has_box = has_seg = True  # an empty list is a valid (all-zero) result for both types
    doable = [t for t in wanted if (t == "bbox" and has_box) or (t == "segm" and has_seg)]
    if not doable:
        raise UserError(f"{where}: entries lack {' and '.join(repr(t) for t in wanted)} needed for {'/'.join(wanted)} metrics")

    if not reference_compat:
        gt = shifted_ground_truth(gt)
    else:  # shallow copies: the evaluator writes into annotation dicts
        gt = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
    cats = evaluated_categories(gt, classes)
    cat_ids = [c["id"] for c in cats]
    cat_names = {c["id"]: str(c.get("name", c["id"])) for c in cats}
    img_ids = sorted(img["id"] for img in gt["images"])

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # The library warns about annotation id 0; in reference-compat mode that is the point.
        warnings.simplefilter("ignore", UserWarning)
        gt_coco = COCO(gt, print_function=_quiet)
        out: dict[str, IoUTypeMetrics | None] = {"bbox": None, "segm": None}
        for t in doable:
            out[t] = _evaluate_type(gt_coco, results, t, cat_ids, img_ids, cat_names)
    return CocoMetrics(
        bbox=out["bbox"], segm=out["segm"], reference_compat=reference_compat,
        num_images=len(img_ids), num_detections=len(results),
    )
