"""PR curves and COCO error analysis: against COCOeval's own numbers (the AP tables) and against a
hand-made case whose every error stage is computed by hand below."""

from __future__ import annotations

import numpy as np
import pytest

from nuimcli import CLASSES
from nuimcli.analysis.coco_diag import ERROR_KEYS, error_analysis, pr_curves, similar_names
from nuimcli.engine.coco_metrics import evaluate_results

CAR, TRUCK, PED = CLASSES.index("car"), CLASSES.index("truck"), CLASSES.index("pedestrian")


def hand_case() -> tuple[dict, list[dict]]:
    """One 100x100 image. Car GT: A (found), D (found at IoU 0.67), E (found at IoU 0.33), C (missed);
    a truck B and a pedestrian F. Car detections, best first: d1 on A, d2 on the truck, d6 on
    background, d3 on D, d5 on the pedestrian, d4 on E."""
    boxes = {"A": ([0, 0, 10, 10], CAR), "B": ([20, 0, 10, 10], TRUCK), "C": ([40, 0, 10, 10], CAR),
             "D": ([0, 20, 10, 10], CAR), "E": ([20, 20, 10, 10], CAR), "F": ([40, 20, 10, 10], PED)}
    anns = [{"id": k, "image_id": 1, "category_id": c, "bbox": b, "area": 100.0, "iscrowd": 0}
            for k, (b, c) in enumerate(boxes.values())]
    gt = {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "x.jpg"}], "annotations": anns,
          "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES)]}
    dets = [([0, 0, 10, 10], 0.9), ([20, 0, 10, 10], 0.8), ([60, 60, 10, 10], 0.75), ([0, 22, 10, 10], 0.7),
            ([40, 20, 10, 10], 0.66), ([25, 20, 10, 10], 0.65)]
    return gt, [{"image_id": 1, "category_id": CAR, "bbox": b, "score": s} for b, s in dets]


def test_similar_groups_follow_the_category_prefixes():
    assert set(similar_names("car")) == {"truck", "trailer", "bus", "construction_vehicle"}
    assert similar_names("bicycle") == ("motorcycle",) and similar_names("pedestrian") == ()
    assert similar_names("barrier") == ("traffic_cone",)


def test_error_breakdown_of_the_hand_made_case():
    """Areas under the 101-point interpolated PR curve, by hand (4 car GTs, so each TP adds 0.25 recall;
    ``r <= 0.25`` covers 26 recall points, each further quarter 25):
    C75  T F F F F F           -> 26/101
    C50  T F F T F F  (1, .5)  -> (26 + 25 * .5) / 101
    Loc  T F F T F T  (1, .5, .5) -> (26 + 50 * .5) / 101
    Sim  truck ignored: T F T F T (1, 2/3, 3/5) -> (26 + 25 * 2/3 + 25 * .6) / 101
    Oth  pedestrian also ignored: T F T T (1, 2/3, 3/4) -> (26 + 50 * .75) / 101
    BG   precision 1 up to recall .75 -> 76/101;  FN -> 1."""
    gt, dets = hand_case()
    err = error_analysis(dets, gt, "bbox")
    car = err["classes"]["car"]["ap"]
    want = {"C75": 26 / 101, "C50": 38.5 / 101, "Loc": 51 / 101, "Sim": (26 + 25 * 2 / 3 + 15) / 101,
            "Oth": 63.5 / 101, "BG": 76 / 101, "FN": 1.0}
    assert car == pytest.approx(want, abs=1e-6)
    # No detection of these classes: only FN is above zero; classes without GT are None.
    assert err["classes"]["truck"]["ap"] == pytest.approx({**{k: 0.0 for k in ERROR_KEYS}, "FN": 1.0})
    assert err["classes"]["bus"] is None
    assert err["overall"]["C75"] == pytest.approx((26 / 101) / 3)  # mean over car, truck, pedestrian
    curves = err["classes"]["car"]["curves"]
    for a, b in zip(ERROR_KEYS, ERROR_KEYS[1:]):  # each stage forgives more: curves never go down
        assert np.all(np.asarray(curves[b]) >= np.asarray(curves[a]) - 1e-12)


def test_pr_curves_agree_with_the_ap_tables():
    """The mean of each class's 0.5:0.95 curve is COCOeval's per-class AP; IoU 0.5 curve by hand."""
    gt, dets = hand_case()
    dets = dets + [{"image_id": 1, "category_id": TRUCK, "bbox": [21, 0, 10, 10], "score": 0.5}]
    pr = pr_curves(dets, gt, "bbox")
    m = evaluate_results(dets, gt).bbox
    assert m is not None
    for name, entry in pr["classes"].items():
        want = m.per_class[name]
        if np.isnan(want):
            assert entry["AP"] is None and entry["0.5"] is None
        else:
            assert entry["AP"] == pytest.approx(want, abs=1e-9)
            assert np.mean(entry["0.5:0.95"]) == pytest.approx(want, abs=1e-9)
    c50 = np.asarray(pr["classes"]["car"]["0.5"])
    assert np.all(c50[:26] == 1.0) and np.allclose(c50[26:51], 0.5) and np.all(c50[51:] == 0)
    assert len(pr["recall"]) == 101 and pr["classes"]["pedestrian"]["0.5"] == [0.0] * 101


def test_masks_evaluate_like_boxes_when_masks_fill_their_boxes():
    from pycocotools import mask as mask_util

    gt, dets = hand_case()

    def rle(b):
        m = np.zeros((100, 100), np.uint8)
        m[b[1] : b[1] + b[3], b[0] : b[0] + b[2]] = 1
        r = mask_util.encode(np.asfortranarray(m))
        r["counts"] = r["counts"].decode()
        return r

    for a in gt["annotations"]:
        a["segmentation"] = rle(a["bbox"])
    for d in dets:
        d["segmentation"] = rle(d["bbox"])
    box, seg = error_analysis(dets, gt, "bbox"), error_analysis(dets, gt, "segm")
    assert seg["classes"]["car"]["ap"] == pytest.approx(box["classes"]["car"]["ap"], abs=1e-9)
