"""``nuim eval --plots`` and ``--show-dir``: from the COCO results and the ground truth to
figures, their numbers as JSON, ``report.html``, and GT-vs-prediction pictures.

``--plots DIR`` writes, for each IoU type the results support (``bbox``, ``segm``):
``pr_<type>.png/.json`` (per-class PR curves), ``confusion_<type>.png/.json``,
``errors_<type>.png/.json`` (COCO error analysis), and ``report.html``.

``--show-dir DIR`` writes ``NNN_<image stem>.jpg`` (ground truth left, prediction right), the
worst images first: most false positives + false negatives (box IoU 0.5, ``score_thr``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from nuimcli.engine.coco_metrics import load_ground_truth
from nuimcli.errors import UserError
from nuimcli.utils.io import atomic_path, atomic_write_json

_TYPE_LABEL = {"bbox": "box", "segm": "mask"}


def _types(results: Sequence[dict], doc: dict[str, Any]) -> list[str]:
    return [t for t in ("bbox", "segm") if t in doc and all(("bbox" if t == "bbox" else "segmentation") in r
                                                             for r in results)]


def write_plots(results: Sequence[dict], gt: dict | str | os.PathLike, out_dir: str | os.PathLike,
                doc: dict[str, Any], score_thr: float = 0.3, reference_compat: bool = False,
                progress: bool = True) -> list[Path]:
    """Write every figure, its JSON and ``report.html`` into ``out_dir``; return the files written.

    ``doc`` is the eval metrics document (its tables go into the report, and its IoU types
    decide which figures are made). ``score_thr`` only affects the confusion matrix.
    """
    from nuimcli.analysis.coco_diag import error_analysis, pr_curves
    from nuimcli.analysis.confusion import confusion_matrix
    from nuimcli.engine.report import write_report
    from nuimcli.utils.progress import make_progress
    from nuimcli.visual.figures import confusion_figure, errors_figure, pr_figure

    g = load_ground_truth(gt if isinstance(gt, dict) else str(gt))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    types = _types(results, doc)
    written: list[Path] = []
    sections: dict[str, list[Path]] = {"pr": [], "confusion": [], "errors": []}
    bar = make_progress("step", transient=True)
    with bar if progress else _Null():
        task = bar.add_task("figures", total=3 * len(types)) if progress else None
        for t in types:
            label = _TYPE_LABEL[t]
            pr = pr_curves(results, g, t, reference_compat)
            atomic_write_json(out / f"pr_{t}.json", pr)
            sections["pr"].append(pr_figure(pr, out / f"pr_{t}.png", f"{label}: precision-recall per class"))
            if progress:
                bar.advance(task)
            cm = confusion_matrix(results, g, t, score_thr=score_thr).to_dict()
            atomic_write_json(out / f"confusion_{t}.json", cm)
            sections["confusion"].append(confusion_figure(cm, out / f"confusion_{t}.png", f"{label}: confusion matrix"))
            if progress:
                bar.advance(task)
            err = error_analysis(results, g, t, reference_compat)
            atomic_write_json(out / f"errors_{t}.json", err)
            sections["errors"].append(errors_figure(err, out / f"errors_{t}.png", f"{label}: COCO error analysis"))
            if progress:
                bar.advance(task)
            written += [out / f"{k}_{t}.{e}" for k in ("pr", "confusion", "errors") for e in ("json", "png")]
    report = write_report(out / "report.html", doc, [
        ("Precision-recall curves", "Per class, from COCOeval's precision array (area all, maxDets 1000): IoU 0.5 "
         "(solid), 0.75 (dashed), mean over 0.50:0.95 (dotted; its mean is the class AP).", sections["pr"]),
        ("Confusion matrix", f"Rows ground truth, columns prediction, last = background; IoU 0.5, detections "
         f"scoring >= {score_thr} (the score threshold never changes AP).", sections["confusion"]),
        ("COCO error analysis", "Per class, as the COCO analysis tool: C75/C50 precision at IoU .75/.5, Loc at IoU "
         ".1, Sim and Oth also forgive confusion with a similar (same nuImages category) / any class, BG removes "
         "the remaining false positives, FN is what recall never reaches.", sections["errors"]),
    ])
    return [*written, report]


def worst_images(results: Sequence[dict], gt: dict, score_thr: float) -> list[tuple[int, int, int]]:
    """``(image_id, false positives, false negatives)`` of every image, most errors first (box IoU
    0.5, detections scoring >= ``score_thr``); ties keep the file's image order."""
    from nuimcli.analysis.confusion import confusion_matrix

    errs = confusion_matrix(results, gt, "bbox", score_thr=score_thr).errors
    order = [im["id"] for im in gt["images"]]
    ranked = sorted(range(len(order)), key=lambda i: -(errs[order[i]][0] + errs[order[i]][1]))
    return [(order[i], *errs[order[i]]) for i in ranked]


def _instances(items: Sequence[dict], h: int, w: int, label_of: dict[int, int]) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """COCO items (annotations or results) → boxes [N, 4] x1y1x2y2, labels [N], masks [N, H, W] or None."""
    from pycocotools import mask as mask_util

    boxes = np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (it["bbox"] for it in items)],
                     np.float64).reshape(-1, 4)
    labels = np.array([label_of.get(it["category_id"], it["category_id"]) for it in items], np.int64)
    masks = None
    if items and all(isinstance(it.get("segmentation"), dict) for it in items):
        rles = [it["segmentation"] if isinstance(it["segmentation"]["counts"], (str, bytes))
                else mask_util.frPyObjects(it["segmentation"], h, w) for it in items]
        masks = np.stack([mask_util.decode(r).astype(bool) for r in rles])
    return boxes, labels, masks


def _with_boxes(items: Sequence[dict]) -> list[dict]:
    """Items lacking a ``bbox`` (mask-only results) get the box around their mask."""
    from pycocotools import mask as mask_util

    out = []
    for it in items:
        if "bbox" not in it:
            it = {**it, "bbox": [float(v) for v in mask_util.toBbox(it["segmentation"])]}
        out.append(it)
    return out


def write_show_dir(results: Sequence[dict], gt: dict | str | os.PathLike, data_root: str | os.PathLike,
                   out_dir: str | os.PathLike, score_thr: float = 0.3, n: int = 20,
                   progress: bool = True) -> list[dict[str, Any]]:
    """Draw the ``n`` worst images (see :func:`worst_images`): ground truth left, predictions
    scoring >= ``score_thr`` right, in the shared class colours. Returns one record per picture
    (``file``, ``image``, ``false_positives``, ``false_negatives``). An image that cannot be read
    is a :class:`UserError` naming it."""
    import cv2

    from nuimcli.data.transforms import load_image
    from nuimcli.engine.coco_metrics import evaluated_categories
    from nuimcli.utils.progress import make_progress
    from nuimcli.visual.draw import draw_predictions, side_by_side

    g = load_ground_truth(gt if isinstance(gt, dict) else str(gt))
    results = _with_boxes(results)
    label_of = {c["id"]: k for k, c in enumerate(sorted(evaluated_categories(g), key=lambda c: c["id"]))}
    by_img_gt: dict[int, list[dict]] = {}
    for a in g["annotations"]:
        by_img_gt.setdefault(a["image_id"], []).append(a)
    by_img_dt: dict[int, list[dict]] = {}
    for r in results:
        if r["score"] >= score_thr:
            by_img_dt.setdefault(r["image_id"], []).append(r)
    images = {im["id"]: im for im in g["images"]}
    picked = worst_images(results, g, score_thr)[: max(0, n)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    bar = make_progress("img", transient=True)
    with bar if progress else _Null():
        task = bar.add_task("show", total=len(picked)) if progress else None
        for rank, (iid, fp, fn) in enumerate(picked):
            im = images[iid]
            path = Path(data_root) / im["file_name"]
            if not path.is_file():
                raise UserError(f"image {path} does not exist (is --data-root right?)")
            img = load_image(path)
            h, w = img.shape[:2]
            gb, gl, gm = _instances(by_img_gt.get(iid, []), h, w, label_of)
            db, dl, dm = _instances(by_img_dt.get(iid, []), h, w, label_of)
            scores = np.array([r["score"] for r in by_img_dt.get(iid, [])], np.float64)
            left = draw_predictions(img, gb, None, gl, gm)
            right = draw_predictions(img, db, scores, dl, dm)
            pic = side_by_side(left, right, ("ground truth", f"prediction (score >= {score_thr}): {fp} FP, {fn} FN"))
            name = f"{rank:03d}_{Path(im['file_name']).stem}.jpg"
            with atomic_path(out / name) as tmp:
                if not cv2.imwrite(str(tmp), pic, [cv2.IMWRITE_JPEG_QUALITY, 92]):
                    raise UserError(f"{out / name}: could not write the picture")
            records.append({"file": name, "image": im["file_name"], "false_positives": fp, "false_negatives": fn})
            if progress:
                bar.advance(task)
    atomic_write_json(out / "index.json", records, indent=2)
    return records


def draw_val_predictions(model: Any, ann_file: str | os.PathLike, data_root: str | os.PathLike, n: int = 3,
                         score_thr: float = 0.3) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` images of ``ann_file`` with ``model``'s detections scoring >= ``score_thr``
    drawn (ground truth left, prediction right, as ``--show-dir``): ``[(file stem, BGR image)]``.
    ``model`` has ``predict(list_of_BGR_arrays) -> list[Prediction]``."""
    import torch

    from nuimcli.data.transforms import load_image
    from nuimcli.engine.coco_metrics import evaluated_categories
    from nuimcli.visual.draw import draw_predictions, side_by_side

    g = load_ground_truth(str(ann_file))
    label_of = {c["id"]: k for k, c in enumerate(sorted(evaluated_categories(g), key=lambda c: c["id"]))}
    out = []
    for im in g["images"][: max(0, n)]:
        img = load_image(Path(data_root) / im["file_name"])
        with torch.no_grad():
            (pred,) = model.predict([img])
        keep = np.asarray(pred.scores) >= score_thr
        anns = [a for a in g["annotations"] if a["image_id"] == im["id"]]
        gb, gl, gm = _instances(anns, img.shape[0], img.shape[1], label_of)
        right = draw_predictions(img, np.asarray(pred.boxes)[keep], np.asarray(pred.scores)[keep],
                                 np.asarray(pred.labels)[keep], None if pred.masks is None else pred.masks[keep])
        out.append((Path(im["file_name"]).stem, side_by_side(draw_predictions(img, gb, None, gl, gm), right)))
    return out


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
