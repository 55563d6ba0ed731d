"""Pictures for TensorBoard (draw_val_predictions) and the TensorBoard records of a run: val
metrics per epoch and drawn val predictions (read back with tensorboard's own reader)."""

from __future__ import annotations

import numpy as np
import pytest

from nuimcli import CLASSES
from nuimcli.engine.diagnostics import draw_val_predictions
from nuimcli.visual.draw import class_color
from test_evaluate import H, W, OracleDetector, make_split


def test_val_pictures_show_ground_truth_and_prediction_in_class_colours(tmp_path):
    ann = make_split(tmp_path, n=4)
    pics = draw_val_predictions(OracleDetector(ann), ann, tmp_path, n=2)
    assert [name for name, _ in pics] == ["img0", "img1"]
    import json

    gt = json.loads(ann.read_text())
    for (name, pic), im in zip(pics, gt["images"]):
        assert pic.shape[1] > 2 * W and pic.shape[0] > H and pic.dtype == np.uint8
        strip = pic.shape[0] - H
        left, right = pic[strip:, :W], pic[strip:, -W:]
        a = next(a for a in gt["annotations"] if a["image_id"] == im["id"])
        x, y, w, h = a["bbox"]
        inside = left[y + h // 2, x + w // 2].astype(int)
        # Mask blended half-way between the grey image (90) and the class colour.
        want = (np.array([90, 90, 90]) * 0.5 + np.array(class_color(a["category_id"])) * 0.5).round()
        assert np.abs(inside - want).max() <= 1, (CLASSES[a["category_id"]], inside, want)
        assert np.abs(right[y + h // 2, x + w // 2].astype(int) - want).max() <= 1  # the oracle finds it


def test_tensorboard_gets_val_metrics_per_epoch_and_pictures(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nuimcli.engine.train_log import TrainLog

    log = TrainLog(tmp_path, is_main=True)
    log.open_tensorboard()
    assert log.tensorboard_on
    log.val_epoch({"bbox_mAP": 0.25, "segm_mAP": None}, 1)
    log.val_epoch({"bbox_mAP": 0.5}, 2)
    ann = make_split(tmp_path, n=1)
    log.images(draw_val_predictions(OracleDetector(ann), ann, tmp_path, n=1), step=7)
    log.close()
    acc = EventAccumulator(str(tmp_path / "tf_logs"), size_guidance={"images": 0}).Reload()
    assert [(e.step, e.value) for e in acc.Scalars("val_by_epoch/bbox_mAP")] == [(1, 0.25), (2, 0.5)]
    (img,) = acc.Images("val_predictions/img0")
    assert img.step == 7 and img.width > 2 * W and img.height > H
