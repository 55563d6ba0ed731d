"""Confusion matrix and per-image errors on the hand-made case of test_coco_diag (counted by hand)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from test_coco_diag import CAR, PED, TRUCK, hand_case  # noqa: E402

from nuimcli.analysis.confusion import confusion_matrix  # noqa: E402

BG = 10


def test_every_detection_and_ground_truth_is_counted_once():
    """score_thr 0: d1 -> A and d3 -> D (car, car); d2 on the truck (truck, car); d5 on the pedestrian
    (pedestrian, car); d6 and d4 (IoU .33 < .5) on background; C and E missed (car, background)."""
    gt, dets = hand_case()
    r = confusion_matrix(dets, gt, "bbox", score_thr=0.0)
    want = np.zeros((11, 11), int)
    want[CAR, CAR] = 2
    want[TRUCK, CAR] = 1
    want[PED, CAR] = 1
    want[BG, CAR] = 2
    want[CAR, BG] = 2
    np.testing.assert_array_equal(r.matrix, want)
    assert r.matrix.sum() == len(dets) + 2  # every detection once, plus the two missed GT
    assert r.errors == {1: (4, 4)}
    doc = r.to_dict()
    assert doc["names"][-1] == "background" and len(doc["matrix"]) == 11


def test_score_threshold_drops_detections_and_frees_ground_truth():
    """score_thr 0.7 keeps d1, d2, d6, d3: the pedestrian is now missed."""
    gt, dets = hand_case()
    m = confusion_matrix(dets, gt, "bbox", score_thr=0.7).matrix
    assert m[CAR, CAR] == 2 and m[TRUCK, CAR] == 1 and m[BG, CAR] == 1
    assert m[CAR, BG] == 2 and m[PED, BG] == 1 and m[PED, CAR] == 0


def test_own_class_wins_over_a_better_overlap_of_another_class():
    """A car detection overlapping a pedestrian (IoU 1) and a car (IoU .67) is a true positive."""
    gt, _ = hand_case()
    gt["annotations"] = [{**gt["annotations"][0], "bbox": [0, 0, 10, 10], "category_id": PED},
                         {**gt["annotations"][1], "bbox": [0, 2, 10, 10], "category_id": CAR}]
    det = [{"image_id": 1, "category_id": CAR, "bbox": [0, 0, 10, 10], "score": 0.9}]
    m = confusion_matrix(det, gt, "bbox").matrix
    assert m[CAR, CAR] == 1 and m[PED, BG] == 1 and m[BG].sum() == 0
