"""Split statistics on a hand-made ground truth (counted by hand), the raw-table join on a synthetic
nuImages version (against the raw rows themselves), and AP per camera."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util

from nuimcli import CLASSES
from nuimcli.analysis.dataset_gt import annotation_attributes, load_raw_extras, load_split
from nuimcli.analysis.stats import ap_per_camera, split_stats


def rle(h, w, x, y, bw, bh):
    m = np.zeros((h, w), np.uint8)
    m[y : y + bh, x : x + bw] = 1
    r = mask_util.encode(np.asfortranarray(m))
    r["counts"] = r["counts"].decode()
    return r


def hand_gt() -> dict:
    """Two front images (2 and 0 objects) and one back image (1 object); boxes of size 4, 20, 100."""
    images = [{"id": 0, "file_name": "samples/CAM_FRONT/a.jpg", "width": 200, "height": 200},
              {"id": 1, "file_name": "samples/CAM_FRONT/b.jpg", "width": 200, "height": 200},
              {"id": 2, "file_name": "samples/CAM_BACK/c.jpg", "width": 200, "height": 200}]
    spec = [(0, 0, 4, 4, 0), (0, 10, 20, 20, 7), (2, 0, 100, 100, 7)]  # image, x, side, side, class
    anns = [{"id": k, "image_id": i, "category_id": c, "bbox": [x, 0, w, h], "area": w * h, "iscrowd": 0,
             "segmentation": rle(200, 200, x, 0, w, h)} for k, (i, x, w, h, c) in enumerate(spec)]
    return {"images": images, "annotations": anns, "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES)]}


def test_split_stats_by_hand():
    doc = split_stats(hand_gt())
    assert doc["images"] == 3 and doc["objects"] == 3
    assert doc["objects_per_class"]["pedestrian"] == 2 and doc["objects_per_class"]["car"] == 1
    assert doc["objects_per_image"] == {"mean": 1.0, "max": 2, "histogram": [1, 1, 1]}
    # sizes 4, 20, 100 -> bins [0,8), [16,32), [96,128); areas 16, 400, 10000 -> the squared bins
    assert doc["box_size"]["histogram"] == [1, 0, 1, 0, 0, 1, 0, 0, 0]
    assert doc["mask_area"]["histogram"] == [1, 0, 1, 0, 0, 1, 0, 0, 0]
    assert doc["attributes_per_class"] is None and doc["null_masks"] is None


def test_ap_per_camera():
    gt = hand_gt()
    front_only = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9,
                   "segmentation": a["segmentation"]} for a in gt["annotations"] if a["image_id"] != 2]
    cams = ap_per_camera(front_only, gt)
    assert cams == {"CAM_BACK": {"images": 1, "bbox_AP": 0.0, "segm_AP": 0.0},
                    "CAM_FRONT": {"images": 2, "bbox_AP": 1.0, "segm_AP": 1.0}}


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """A small synthetic version (with null masks) converted as `nuim convert` does."""
    from nuimcli.data import convert as cv
    from nuimcli.synthetic import generate_nuimages

    root = tmp_path_factory.mktemp("syn")
    generate_nuimages(root, "v1.0-mini", num_samples=4, width=320, height=180, seed=3, objects_per_image=(6, 12),
                      null_mask_fraction=0.15, sweeps_per_sample=0)
    cv.convert(root, ["v1.0-mini"], nproc=0)
    return root


def test_attributes_and_null_masks_agree_with_the_raw_rows(converted):
    from nuimcli.data.nuimages import NAME_MAPPING

    version = converted / "v1.0-mini"
    cats = {r["token"]: NAME_MAPPING.get(r["name"]) for r in json.loads((version / "category.json").read_text())}
    attrs = {r["token"]: r["name"] for r in json.loads((version / "attribute.json").read_text())}
    key = {r["token"] for r in json.loads((version / "sample_data.json").read_text()) if r["is_key_frame"]}
    want_attrs: dict[str, Counter] = {}
    want_null = Counter()
    for r in json.loads((version / "object_ann.json").read_text()):
        name = cats[r["category_token"]]
        if name is None or r["sample_data_token"] not in key:
            continue
        if r["mask"] is None:
            want_null[name] += 1
            continue
        for t in [attrs[t] for t in r["attribute_tokens"]] or ["(none)"]:
            want_attrs.setdefault(name, Counter())[t] += 1
    gt = load_split(converted, "v1.0-mini")
    extras = load_raw_extras(converted, "v1.0-mini")
    assert extras is not None and sum(want_null.values()) > 0  # the case has null masks to count
    doc = split_stats(gt, annotation_attributes(gt, extras), extras.null_masks)
    assert doc["attributes_per_class"] == {k: dict(v) for k, v in want_attrs.items()}
    assert {k: v for k, v in doc["null_masks"].items() if v} == dict(want_null)
    assert doc["objects"] == len(gt["annotations"]) == sum(sum(c.values()) for c in want_attrs.values())
