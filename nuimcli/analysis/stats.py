"""``nuim stats``: what a converted split holds — images, objects per class and per image, box
sizes, mask areas, attributes per class, null masks (raw tables), and AP per camera for a results
file. Everything is plain numbers (the JSON document); the table and figure are drawn from it."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from typing import Any, Optional, Sequence

import numpy as np

#: Box-size bins, sqrt(w * h) in pixels: COCO's small / medium / large split at 32 and 96, finer around them.
SIZE_EDGES: tuple[float, ...] = (0, 8, 16, 32, 64, 96, 128, 256, 512, float("inf"))
#: Mask-area bins in pixels (the squares of the size edges, so both histograms line up).
AREA_EDGES: tuple[float, ...] = tuple(e * e for e in SIZE_EDGES)


def histogram(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """Counts per bin ``[edges[i], edges[i + 1])``."""
    counts, _ = np.histogram(np.asarray(values, np.float64), bins=np.asarray(edges, np.float64))
    return [int(c) for c in counts]


def split_stats(gt: dict, attributes: Optional[dict[int, list[str]]] = None,
                null_masks: Optional[Counter] = None) -> dict[str, Any]:
    """The statistics of a COCO ground truth (see the module docstring). ``attributes``: annotation
    id -> names (None without raw tables); ``null_masks``: class -> key-frame objects whose mask
    is null (None without raw tables)."""
    from pycocotools import mask as mask_util

    names = {c["id"]: str(c.get("name", c["id"])) for c in sorted(gt["categories"], key=lambda c: c["id"])}
    per_class = Counter({n: 0 for n in names.values()})
    per_image = Counter({im["id"]: 0 for im in gt["images"]})
    sizes, areas = [], []
    attrs: dict[str, Counter] = defaultdict(Counter)
    for a in gt["annotations"]:
        name = names.get(a["category_id"], str(a["category_id"]))
        per_class[name] += 1
        per_image[a["image_id"]] += 1
        w, h = a["bbox"][2], a["bbox"][3]
        sizes.append(float(np.sqrt(max(w, 0) * max(h, 0))))
        seg = a.get("segmentation")
        if isinstance(seg, dict) and "counts" in seg:
            areas.append(float(mask_util.area(seg)))
        if attributes is not None:
            for t in attributes.get(a["id"], []) or ["(none)"]:
                attrs[name][t] += 1
    counts = list(per_image.values())
    max_n = max(counts, default=0)
    doc: dict[str, Any] = {
        "images": len(gt["images"]),
        "objects": len(gt["annotations"]),
        "objects_per_class": dict(per_class),
        "objects_per_image": {"mean": float(np.mean(counts)) if counts else 0.0, "max": max_n,
                              "histogram": [int(c) for c in np.bincount(np.asarray(counts, np.int64),
                                                                          minlength=max_n + 1)] if counts else []},
        "box_size": {"edges": [e if np.isfinite(e) else None for e in SIZE_EDGES], "histogram": histogram(sizes, SIZE_EDGES)},
        "mask_area": {"edges": [e if np.isfinite(e) else None for e in AREA_EDGES], "histogram": histogram(areas, AREA_EDGES)},
        "attributes_per_class": None if attributes is None else {k: dict(v) for k, v in sorted(attrs.items())},
        "null_masks": None if null_masks is None else {n: int(null_masks.get(n, 0)) for n in names.values()},
    }
    return doc


def ap_per_camera(results: Sequence[dict] | str | os.PathLike, gt: dict) -> dict[str, dict[str, Optional[float]]]:
    """Box and mask AP of ``results`` on each camera's images (``samples/<CAM>/...``): camera ->
    ``{"images", "bbox_AP", "segm_AP"}`` (None where undefined or not in the results)."""
    from nuimcli.analysis.dataset_gt import camera_of
    from nuimcli.engine.coco_metrics import check_results, evaluate_results, load_json_file

    where = "results"
    if not isinstance(results, list):
        where = f"results file {results}"
        results = load_json_file(results, "results file")
    check_results(results, gt, where)
    cams: dict[str, set] = defaultdict(set)
    for im in gt["images"]:
        cams[camera_of(im["file_name"])].add(im["id"])
    out = {}
    for cam in sorted(cams):
        ids = cams[cam]
        sub = {**gt, "images": [im for im in gt["images"] if im["id"] in ids],
               "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
        m = evaluate_results([r for r in results if r["image_id"] in ids], sub).to_dict()
        out[cam] = {"images": len(ids), "bbox_AP": (m.get("bbox") or {}).get("AP"),
                    "segm_AP": (m.get("segm") or {}).get("AP")}
    return out
