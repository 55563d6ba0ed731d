"""prediction_diff: matching and the figures it reports."""

from __future__ import annotations

import numpy as np

from nuimcli.models.detector import Prediction
from nuimcli.testing.prediction_diff import prediction_diff


def _pred(boxes, scores, labels, h=20, w=20) -> Prediction:
    boxes = np.asarray(boxes, np.float32)
    masks = np.zeros((len(boxes), h, w), bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        masks[k, y1:y2, x1:x2] = True
    return Prediction(boxes=boxes, scores=np.asarray(scores, np.float32), labels=np.asarray(labels, np.int64),
                      masks=masks)


def test_identical_predictions():
    p = _pred([[0, 0, 10, 10], [5, 5, 15, 15]], [0.9, 0.8], [1, 2])
    d = prediction_diff(p, p)
    assert d["matched"] == 2 and d["box_max_abs_px"] == 0 and d["score_max_abs"] == 0 and d["mask_iou_min"] == 1.0


def test_shifted_box_other_label_and_missing_one():
    ref = _pred([[0, 0, 10, 10], [5, 5, 15, 15], [0, 10, 8, 18]], [0.9, 0.8, 0.7], [1, 2, 3])
    other = _pred([[0, 0, 10, 12], [5, 5, 15, 15]], [0.85, 0.8], [1, 4])  # second: other label, no match
    d = prediction_diff(ref, other)
    assert (d["detections_ref"], d["detections_other"], d["matched"]) == (3, 2, 1)
    assert d["box_max_abs_px"] == 2.0 and abs(d["score_max_abs"] - 0.05) < 1e-6
    assert abs(d["mask_iou_min"] - 100 / 120) < 1e-9
