"""COCO metrics: known answers, and equality with pycocotools' COCOeval in both id modes."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import warnings

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from nuimcli import CLASSES
from nuimcli.engine.coco_metrics import (
    METRIC_NAMES,
    evaluate_results,
    load_ground_truth,
    shifted_ground_truth,
)
from nuimcli.errors import UserError


def rle_of(mask: np.ndarray) -> dict:
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode()
    return r


def rect_mask(h: int, w: int, x: int, y: int, bw: int, bh: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y : y + bh, x : x + bw] = True
    return m


def make_gt(boxes_per_image: list[list[tuple[int, int, int, int, int]]], w: int = 200, h: int = 200) -> dict:
    """GT with one image per list; each box (x, y, bw, bh, category); annotation ids from 0."""
    images, anns = [], []
    for i, boxes in enumerate(boxes_per_image):
        images.append({"id": i, "file_name": f"samples/CAM_FRONT/{i}.jpg", "width": w, "height": h})
        for x, y, bw, bh, c in boxes:
            anns.append({
                "id": len(anns), "image_id": i, "category_id": c, "bbox": [x, y, bw, bh], "area": bw * bh,
                "segmentation": rle_of(rect_mask(h, w, x, y, bw, bh)), "iscrowd": 0,
            })
    cats = [{"id": i, "name": n} for i, n in enumerate(CLASSES)]
    return {"images": images, "annotations": anns, "categories": cats}


def det(image_id: int, x: int, y: int, bw: int, bh: int, c: int, score: float, w: int = 200, h: int = 200) -> dict:
    return {
        "image_id": image_id, "category_id": c, "score": score, "bbox": [float(x), float(y), float(bw), float(bh)],
        "segmentation": rle_of(rect_mask(h, w, x, y, bw, bh)),
    }


def perfect_dets(gt: dict, rng: np.random.Generator | None = None) -> list[dict]:
    rng = rng or np.random.default_rng(0)
    img = {i["id"]: i for i in gt["images"]}
    return [
        det(a["image_id"], *a["bbox"], a["category_id"], float(rng.uniform(0.5, 1.0)),
            img[a["image_id"]]["width"], img[a["image_id"]]["height"])
        for a in gt["annotations"]
    ]


def cocoeval_stats(gt: dict, dets: list[dict], iou_type: str) -> np.ndarray:
    """Raw pycocotools, set up as mmdet 2.x CocoDataset.evaluate does (maxDets 100/300/1000)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        d = copy.deepcopy(dets)
        if iou_type == "segm":
            for x in d:
                x.pop("bbox")
        ev = COCOeval(coco, coco.loadRes(d), iou_type)
        ev.params.catIds = [c["id"] for c in gt["categories"]]
        ev.params.imgIds = [i["id"] for i in gt["images"]]
        ev.params.maxDets = [100, 300, 1000]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats[:7])


def ours(m) -> np.ndarray:
    return np.array([m.summary()[k] for k in METRIC_NAMES])


def assert_equal_to_cocoeval(mine: np.ndarray, ref: np.ndarray) -> None:
    # COCOeval writes -1 where we write nan (no ground truth in that slice).
    ref = np.where(ref == -1, np.nan, ref)
    np.testing.assert_array_equal(np.isnan(mine), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(mine[ok], ref[ok], rtol=0, atol=1e-12)


def random_case(seed: int, n_images: int = 25, w: int = 320, h: int = 180) -> tuple[dict, list[dict]]:
    """Random GT (up to 8 objects per image, all sizes) and noisy detections (hits, misses, wrong class)."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(n_images):
        objs = []
        for _ in range(int(rng.integers(0, 8))):
            bw, bh = int(rng.integers(3, 160)), int(rng.integers(3, 120))
            objs.append((int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh)), bw, bh, int(rng.integers(0, 10))))
        boxes.append(objs)
    gt = make_gt(boxes, w, h)
    dets = []
    for a in gt["annotations"]:
        x, y, bw, bh = a["bbox"]
        for _ in range(int(rng.integers(0, 3))):
            dx, dy = (int(v) for v in rng.integers(-6, 7, 2))
            nx, ny = max(0, x + dx), max(0, y + dy)
            c = a["category_id"] if rng.random() < 0.8 else int(rng.integers(0, 10))
            dets.append(det(a["image_id"], nx, ny, min(bw, w - nx), min(bh, h - ny), c, float(rng.random()), w, h))
    for i in range(n_images):
        for _ in range(int(rng.integers(0, 6))):
            bw, bh = int(rng.integers(3, 80)), int(rng.integers(3, 80))
            dets.append(det(i, int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh)), bw, bh,
                            int(rng.integers(0, 10)), float(rng.random()), w, h))
    return gt, dets


# --------------------------------------------------------------------------- known answers


def test_perfect_predictions_give_ap_one_by_default():
    gt = make_gt([[(10, 10, 50, 40, 0), (100, 100, 20, 20, 7)], [(5, 5, 150, 150, 3), (60, 20, 8, 8, 7)]])
    m = evaluate_results(perfect_dets(gt), gt)
    for t in ("bbox", "segm"):
        r = getattr(m, t)
        assert r.AP == 1.0 and r.AP50 == 1.0 and r.AP75 == 1.0 and r.AR100 == 1.0
        assert r.APs == 1.0 and r.APm == 1.0 and r.APl == 1.0
        assert r.per_class["car"] == 1.0 and r.per_class["pedestrian"] == 1.0 and r.per_class["bus"] == 1.0
        assert math.isnan(r.per_class["truck"])  # no ground truth of that class


def test_reference_compat_id0_annotation_cannot_match():
    gt = make_gt([[(10, 10, 50, 40, 0)]])  # a single annotation, id 0
    dets = perfect_dets(gt)
    assert evaluate_results(dets, gt).bbox.AP == 1.0
    m = evaluate_results(dets, gt, reference_compat=True)
    for t in ("bbox", "segm"):
        r = getattr(m, t)
        assert r.AP == 0.0 and r.AR100 == 0.0  # its perfect detection counts as a false positive
        assert_equal_to_cocoeval(ours(r), cocoeval_stats(gt, dets, t))


@pytest.mark.parametrize("id0_first", [True, False])
def test_reference_compat_known_values(id0_first):
    # Two annotations (ids 0 and 1) and two perfect detections. Raw COCOeval: the match to id 0
    # is a false positive, so recall stops at 1/2. If it is the higher-scored detection,
    # precision is [0, 1/2] -> 51 of 101 recall points at 0.5; otherwise [1, 1/2] -> 51 at 1.0.
    gt = make_gt([[(10, 10, 50, 40, 0), (100, 100, 60, 50, 0)]])
    s0, s1 = (0.9, 0.8) if id0_first else (0.8, 0.9)
    dets = [det(0, 10, 10, 50, 40, 0, s0), det(0, 100, 100, 60, 50, 0, s1)]
    expected = 51 * (0.5 if id0_first else 1.0) / 101
    m = evaluate_results(dets, gt, reference_compat=True)
    assert m.bbox.AP == pytest.approx(expected, abs=1e-12)
    assert m.segm.AP == pytest.approx(expected, abs=1e-12)
    assert m.bbox.AR100 == pytest.approx(0.5)
    assert evaluate_results(dets, gt).bbox.AP == 1.0


def test_shifted_box_known_lower_values():
    # GT 100x100 at (0, 0); detection shifted 10 px right: IoU = 9000 / 11000 = 0.818, a match
    # at the 7 thresholds 0.50..0.80 of 10 -> AP 0.7, AP50 = AP75 = 1; area 10000 > 96^2: large.
    gt = make_gt([[(0, 0, 100, 100, 2)]])
    dets = [det(0, 10, 0, 100, 100, 2, 0.9)]
    for compat in (False, True):
        if compat:
            gt_ = shifted_ground_truth(gt)  # id 1: both modes must then agree
        else:
            gt_ = gt
        m = evaluate_results(dets, gt_, reference_compat=compat)
        for t in ("bbox", "segm"):
            r = getattr(m, t)
            assert r.AP == pytest.approx(0.7, abs=1e-12)
            assert r.AP50 == 1.0 and r.AP75 == 1.0
            assert r.APl == pytest.approx(0.7, abs=1e-12)
            assert math.isnan(r.APs) and math.isnan(r.APm)
            assert r.AR100 == pytest.approx(0.7, abs=1e-12)
            assert r.per_class["trailer"] == pytest.approx(0.7, abs=1e-12)


def test_mask_area_decides_size_split():
    # The detection's box is large (100x100) but its mask is small (a 20x20 corner): without the
    # bbox in mask results, the mask area (400 < 32^2) puts it in "small".
    gt = make_gt([[(0, 0, 20, 20, 0)]])
    d = det(0, 0, 0, 20, 20, 0, 0.9)
    d["bbox"] = [0.0, 0.0, 100.0, 100.0]
    r = evaluate_results([d], gt).segm
    assert r.APs == 1.0 and math.isnan(r.APl)


# --------------------------------------------------------------------------- equality with COCOeval


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_cocoeval_both_modes(seed):
    gt, dets = random_case(seed)
    # make sure annotation 0 is matched, so the two modes really differ
    a0 = gt["annotations"][0]
    img = gt["images"][a0["image_id"]]
    dets.append(det(a0["image_id"], *a0["bbox"], a0["category_id"], 0.99, img["width"], img["height"]))
    shifted = shifted_ground_truth(gt)
    default = evaluate_results(dets, gt)
    compat = evaluate_results(dets, gt, reference_compat=True)
    for t in ("bbox", "segm"):
        assert_equal_to_cocoeval(ours(getattr(default, t)), cocoeval_stats(shifted, dets, t))
        assert_equal_to_cocoeval(ours(getattr(compat, t)), cocoeval_stats(gt, dets, t))
        assert getattr(default, t).AP > getattr(compat, t).AP


def test_per_class_table_consistent_with_overall_ap():
    gt, dets = random_case(3)
    m = evaluate_results(dets, gt)
    for t in ("bbox", "segm"):
        r = getattr(m, t)
        vals = [v for v in r.per_class.values() if not math.isnan(v)]
        classes_with_gt = {CLASSES[a["category_id"]] for a in gt["annotations"]}
        assert {k for k, v in r.per_class.items() if not math.isnan(v)} == classes_with_gt
        # COCO AP is the mean over classes with ground truth (here <= 100 detections per image,
        # so AP@100 and the per-class AP@1000 see the same detections).
        assert r.AP == pytest.approx(float(np.mean(vals)), abs=1e-12)
        assert list(r.per_class) == list(CLASSES)


def test_empty_results_give_zero():
    gt = make_gt([[(10, 10, 50, 40, 0)]])
    m = evaluate_results([], gt)
    assert m.bbox.AP == 0.0 and m.segm.AP == 0.0 and m.num_detections == 0


def test_box_only_results_skip_masks_and_inputs_are_not_modified(tmp_path):
    gt = make_gt([[(10, 10, 50, 40, 0)], [(30, 30, 20, 20, 9)]])
    dets = [{k: v for k, v in d.items() if k != "segmentation"} for d in perfect_dets(gt)]
    before_d, before_gt = copy.deepcopy(dets), copy.deepcopy(gt)
    m = evaluate_results(dets, gt)
    assert m.segm is None and m.bbox.AP == 1.0
    assert dets == before_d and gt == before_gt
    full = perfect_dets(gt)
    before_full = copy.deepcopy(full)
    for compat in (False, True):
        evaluate_results(full, gt, reference_compat=compat)
    assert full == before_full and gt == before_gt
    out = m.to_dict()
    assert "segm" not in out and out["mode"] == "shifted-ids"
    assert out["bbox"]["per_class"]["truck"] is None  # nan -> null in JSON
    json.dumps(out, allow_nan=False)


def test_reads_files(tmp_path):
    gt = make_gt([[(10, 10, 50, 40, 0)]])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(perfect_dets(gt)))
    m = evaluate_results(tmp_path / "res.json", tmp_path / "gt.json")
    assert m.segm.AP == 1.0 and m.num_images == 1


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(image_id=99), "image_id 99"),
        (lambda d: d.update(category_id=42), "category_id 42"),
        (lambda d: d.pop("score"), "missing key 'score'"),
        (lambda d: d.update(bbox=[1, 2, 3]), "bbox must be"),
        (lambda d: d["segmentation"].update(size=[10, 10]), "segmentation size"),
        (lambda d: (d.pop("bbox"), d.pop("segmentation")), "needs 'bbox' or 'segmentation'"),
    ],
)
def test_bad_results_are_user_errors(mutate, message):
    gt = make_gt([[(10, 10, 50, 40, 0)]])
    dets = perfect_dets(gt)
    mutate(dets[0])
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        evaluate_results(dets, gt)


def test_bad_files_are_user_errors(tmp_path):
    gt = make_gt([[(10, 10, 50, 40, 0)]])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "nogt.json").write_text(json.dumps({"images": []}))
    with pytest.raises(UserError, match="broken.json: not valid JSON"):
        evaluate_results(tmp_path / "broken.json", tmp_path / "gt.json")
    with pytest.raises(UserError, match="missing.json: no such file"):
        evaluate_results([], tmp_path / "missing.json")
    with pytest.raises(UserError, match="missing list 'annotations'"):
        load_ground_truth(tmp_path / "nogt.json")
    with pytest.raises(UserError, match="expected a list"):
        (tmp_path / "obj.json").write_text("{}")
        evaluate_results(tmp_path / "obj.json", tmp_path / "gt.json")
