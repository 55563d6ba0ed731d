"""engine/semantic.py: the semantic PNG is `nuim convert`'s encoding (byte for byte), IoU per class
and mIoU by hand (accumulated over pixels, indices of the ground truth only, 0 ignored), and
`nuim eval` of a tiny random HTC on a converted synthetic set against an independent count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from nuimcli.engine.semantic import SemanticIoU, index_names, read_semantic_png, write_semantic_png


def test_iou_by_hand_accumulated_over_pixels_not_images():
    acc = SemanticIoU()
    gt = np.array([[0, 1, 1], [2, 2, 24]], np.uint8)
    pred = np.array([[1, 1, 2], [2, 0, 24]], np.uint8)
    acc.add(gt, pred)
    r = acc.result()
    # class 1: TP 1, union 2; class 2: TP 1, GT 2 + predicted 2 - 1 = 3; 24: 1/1; pixel (0, 0) is GT 0: ignored
    assert r["per_class"] == pytest.approx({"index 1": 1 / 2, "index 2": 1 / 3, "index 24": 1.0})
    assert r["mIoU"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3) and r["classes"] == 3
    acc.add(np.ones((1, 4), np.uint8), np.ones((1, 4), np.uint8))
    r = acc.result()
    # over all pixels: class 1 TP 5 of union 6 (a mean of per-image IoUs would say 0.75)
    assert r["per_class"]["index 1"] == pytest.approx(5 / 6) and r["images"] == 2
    assert r["per_class"]["index 2"] == pytest.approx(1 / 3)


def test_indices_only_predicted_are_not_classes_and_prediction_resized_to_gt():
    acc = SemanticIoU()
    gt = np.array([[3, 3], [0, 0]], np.uint8)
    pred = np.array([[3, 3, 5, 5]] * 2 + [[9, 9, 9, 9]] * 2, np.uint8)  # 4x4, twice the GT's size
    acc.add(gt, pred)
    r = acc.result()
    assert list(r["per_class"]) == ["index 3"]  # 5 and 9 occur only in the prediction
    assert r["per_class"]["index 3"] == pytest.approx(1 / 2)  # nearest resize to 2x2: [3, 5] on the top row
    empty = SemanticIoU()
    empty.add(np.zeros((2, 2), np.uint8), np.ones((2, 2), np.uint8))  # only index 0 in the ground truth
    assert empty.result()["mIoU"] is None and json.dumps(empty.result(), allow_nan=False)  # strict JSON


def test_names_are_the_devkit_indices():
    names = index_names()
    assert names[1] == "animal" and names[24] == "flat.driveable_surface" and names[31] == "vehicle.ego"
    assert names[23] == "vehicle.truck" and len(names) == 25


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A converted synthetic v1.0-val (3 key frames, 96x64): images and semantic PNGs."""
    from nuimcli.data import convert as cv
    from nuimcli.synthetic.generate import generate_nuimages

    root = tmp_path_factory.mktemp("sem")
    generate_nuimages(root, version="v1.0-val", num_samples=3, width=96, height=64, sweeps_per_sample=0)
    (summary,) = cv.convert(root, ["v1.0-val"], root / "annotations", nproc=0)
    return root, Path(summary.json_path), Path(summary.semantic_dir)


def test_png_is_byte_identical_to_the_converter(converted, tmp_path):
    _, _, sem_dir = converted
    pngs = sorted(sem_dir.rglob("*.png"))
    assert pngs
    for png in pngs:
        sem = read_semantic_png(png)
        assert sem.dtype == np.uint8 and sem.ndim == 2 and set(np.unique(sem)) <= set(range(32))
        ours = write_semantic_png(tmp_path / png.name, sem)
        assert ours.read_bytes() == png.read_bytes()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def _htc_checkpoint(path: Path):
    """A tiny HTC (ResNet-18, 64-channel FPN, small test scale) with random weights, saved."""
    import torch

    from nuimcli.checkpoints import save_checkpoint
    from nuimcli.models.build import build_model
    from nuimcli.presets import load_preset

    preset = load_preset("htc-r50-1x", ["model.backbone.depth=18", "model.fpn_channels=64",
                                        "model.rpn.feat_channels=64", "model.roi.fc_out_channels=128",
                                        "model.rpn.test_nms_pre=100", "model.rpn.test_max_per_img=50",
                                        "data.test_scale=[192,128]"])
    torch.manual_seed(0)
    model = build_model(preset).eval()
    with torch.no_grad():  # a semantic map that is not one class everywhere: bias the logits per index
        model.roi_head.semantic_head.conv_logits.bias.copy_(torch.linspace(-1, 1, 32))
    save_checkpoint(path, model, preset)
    return model


def test_eval_reports_semantic_iou_of_an_htc_model(converted, tmp_path):
    root, ann, sem_dir = converted
    model = _htc_checkpoint(tmp_path / "htc.pth")
    r = subprocess.run([sys.executable, "-m", "nuimcli", "eval", "--checkpoint", str(tmp_path / "htc.pth"),
                        "--data-root", str(root), "--ann-file", str(ann), "--json", "--threads", "1", "--exact"],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    sem = doc["semantic"]
    # independent count: predict each image here, one confusion matrix by numpy over all pixels
    images = json.loads(ann.read_text())["images"]
    names = index_names()
    inter, union, present = np.zeros(256), np.zeros(256), set()
    for im in images:
        gt = cv2.imread(str(sem_dir / im["file_name"].replace("jpg", "png")), cv2.IMREAD_UNCHANGED)
        (pred,) = model.predict([cv2.imread(str(root / im["file_name"]))])
        p, valid = pred.semantic, gt > 0
        present |= set(np.unique(gt[valid]).tolist())
        for k in range(1, 256):
            inter[k] += ((gt == k) & (p == k)).sum()
            union[k] += (((gt == k) | (p == k)) & valid).sum()
    want = {names[k]: inter[k] / union[k] for k in sorted(present)}
    assert len(set(np.unique(p).tolist())) > 1  # the map is not one class everywhere
    assert sem["per_class"] == pytest.approx(want) and sem["images"] == len(images)
    assert sem["mIoU"] == pytest.approx(np.mean(list(want.values())))
    assert "flat.driveable_surface" in sem["per_class"]  # every synthetic key frame has one
