"""Confusion matrix over the classes plus background, and per-image false positives / negatives.

Matching, per image, at one IoU threshold (0.5) over the detections scoring at least
``score_thr`` (a display threshold: AP never depends on it), in descending score order:

1. a detection takes the unmatched ground truth **of its own class** with the highest IoU
   >= the threshold (a true positive, on the diagonal), as COCO matching would;
2. otherwise the unmatched ground truth of **another class** with the highest IoU >= the
   threshold (a confusion: row = true class, column = predicted class);
3. otherwise it is a false positive on background (row "background").

Every ground truth left unmatched is a false negative (column "background"). Crowd ground
truth (``iscrowd`` 1) takes no part. IoU is box IoU for ``bbox`` and mask IoU for ``segm``
(pycocotools ``mask.iou``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nuimcli.engine.coco_metrics import evaluated_categories, load_ground_truth


@dataclass
class ConfusionResult:
    """``matrix[true, predicted]`` counts, ``(K + 1) x (K + 1)``, index K = background; per image
    ``errors[image_id] = (false positives, false negatives)`` (confusions count as both)."""

    names: list[str]
    matrix: np.ndarray
    errors: dict[int, tuple[int, int]]
    iou_type: str
    iou_thr: float
    score_thr: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: names (classes then "background"), the matrix as nested lists, the thresholds."""
        return {"iou_type": self.iou_type, "iou_thr": self.iou_thr, "score_thr": self.score_thr,
                "names": [*self.names, "background"], "rows": "ground truth", "columns": "prediction",
                "matrix": self.matrix.astype(int).tolist()}


def _geometry(items: Sequence[dict], iou_type: str) -> list:
    return [it["bbox"] if iou_type == "bbox" else it["segmentation"] for it in items]


def confusion_matrix(results: Sequence[dict], gt: dict | str, iou_type: str = "bbox", score_thr: float = 0.3,
                     iou_thr: float = 0.5) -> ConfusionResult:
    """Match ``results`` (a COCO results list) to the ground truth ``gt`` as the module docstring
    says; return the matrix and the per-image error counts."""
    from pycocotools import mask as mask_util

    g = load_ground_truth(gt)
    cats = sorted(evaluated_categories(g), key=lambda c: c["id"])
    index = {c["id"]: k for k, c in enumerate(cats)}
    bg = len(cats)
    mat = np.zeros((bg + 1, bg + 1), np.int64)
    gts: dict[int, list[dict]] = defaultdict(list)
    for a in g["annotations"]:
        if a["category_id"] in index and not a.get("iscrowd", 0):
            gts[a["image_id"]].append(a)
    dts: dict[int, list[dict]] = defaultdict(list)
    for r in results:
        if r["score"] >= score_thr and r["category_id"] in index:
            dts[r["image_id"]].append(r)
    errors: dict[int, tuple[int, int]] = {}
    for img in g["images"]:
        iid = img["id"]
        gl, dl = gts.get(iid, []), sorted(dts.get(iid, []), key=lambda r: -r["score"])
        fp = fn = 0
        if gl and dl:
            if iou_type == "segm":
                ious = mask_util.iou(_geometry(dl, iou_type), _geometry(gl, iou_type), [0] * len(gl))
            else:
                ious = mask_util.iou(np.asarray(_geometry(dl, iou_type), np.float64),
                                     np.asarray(_geometry(gl, iou_type), np.float64), [0] * len(gl))
            ious = np.asarray(ious, np.float64).reshape(len(dl), len(gl))
        else:
            ious = np.zeros((len(dl), len(gl)))
        used = np.zeros(len(gl), bool)
        same = np.array([[d["category_id"] == a["category_id"] for a in gl] for d in dl], bool).reshape(len(dl), len(gl))
        for i, d in enumerate(dl):
            pred = index[d["category_id"]]
            ok = (ious[i] >= iou_thr) & ~used
            cand = ok & same[i]
            if not cand.any():
                cand = ok
            if cand.any():
                j = int(np.argmax(np.where(cand, ious[i], -1.0)))
                used[j] = True
                true = index[gl[j]["category_id"]]
                mat[true, pred] += 1
                if true != pred:
                    fp += 1
                    fn += 1
            else:
                mat[bg, pred] += 1
                fp += 1
        for j in np.flatnonzero(~used):
            mat[index[gl[j]["category_id"]], bg] += 1
            fn += 1
        errors[iid] = (fp, fn)
    return ConfusionResult(names=[str(c.get("name", c["id"])) for c in cats], matrix=mat, errors=errors,
                           iou_type=iou_type, iou_thr=iou_thr, score_thr=score_thr)
