"""Predict engine: drawing, the per-image JSON (round trip of boxes and RLE masks), inputs
(files, folders, globs, bad files), output names; and a real Detector end to end."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

from nuimcli import CLASSES
from nuimcli.engine.predict import (
    class_color,
    draw_predictions,
    expand_inputs,
    output_stems,
    predict_files,
)
from nuimcli.errors import UserError
from nuimcli.models.detector import Prediction


class KnownDetector:
    """Finds one 'pedestrian' (label 7, score 0.9) and one low-score 'car' (0.1) in every image:
    an ellipse mask in the image centre and its box; the HTC-like semantic map marks the top rows."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict(self, images, batch_size=2):
        self.batches.append(len(images))
        out = []
        for img in images:
            h, w = img.shape[:2]
            m = np.zeros((h, w), np.uint8)
            cv2.ellipse(m, (w // 2, h // 2), (w // 6, h // 5), 0, 0, 360, 1, -1)
            m2 = np.zeros((h, w), np.uint8)
            m2[:5, :5] = 1
            ys, xs = np.nonzero(m)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            sem = np.zeros((h, w), np.uint8)
            sem[: h // 4] = 3
            out.append(Prediction(
                boxes=np.array([box, [0, 0, 5, 5]], np.float32), scores=np.array([0.9, 0.1], np.float32),
                labels=np.array([7, 0], np.int64), masks=np.stack([m, m2]).astype(bool), semantic=sem,
            ))
        return out


def grey_image(path: Path, w: int = 160, h: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((h, w, 3), 128, np.uint8)
    img[:, : w // 8] = 40  # some structure
    cv2.imwrite(str(path), img)
    return path


def test_draw_changes_mask_pixels_only_near_detection():
    img = np.full((100, 160, 3), 128, np.uint8)
    m = np.zeros((100, 160), bool)
    m[40:60, 60:100] = True
    out = draw_predictions(img, np.array([[60, 40, 100, 60]], np.float32), np.array([0.8], np.float32),
                           np.array([2], np.int64), masks=m[None])
    assert out.shape == img.shape and out.dtype == np.uint8
    inner = m.copy()
    inner[:45] = False  # the tag sits above the box; look below it
    expected = np.round(128 * 0.5 + np.array(class_color(2), np.float32) * 0.5)
    changed = np.abs(out[inner].astype(int) - img[inner].astype(int)).sum(1) > 0
    assert changed.mean() > 0.9
    np.testing.assert_allclose(np.median(out[inner], axis=0), expected, atol=1)
    assert (out[90:, :40] == img[90:, :40]).all()  # far from the detection: untouched
    assert (img == 128).all()  # input not modified


def test_draw_semantic_and_empty():
    img = np.full((50, 60, 3), 100, np.uint8)
    sem = np.zeros((50, 60), np.uint8)
    sem[:10] = 5
    out = draw_predictions(img, np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                           masks=np.zeros((0, 50, 60), bool), semantic=sem)
    assert (out[:10] != img[:10]).any(axis=-1).all() and (out[10:] == img[10:]).all()
    same = draw_predictions(img, np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    assert (same == img).all()


def test_predict_files_outputs_round_trip(tmp_path):
    a = grey_image(tmp_path / "in" / "a.jpg", 160, 100)
    b = grey_image(tmp_path / "in" / "b.png", 90, 70)
    model = KnownDetector()
    items = predict_files(model, [str(a), str(b)], tmp_path / "out", score_thr=0.3, progress=False)
    assert [i.ok for i in items] == [True, True]
    for src, item in zip((a, b), items):
        pic = cv2.imread(str(tmp_path / "out" / f"{src.stem}.jpg"))
        orig = cv2.imread(str(src))
        assert pic.shape == orig.shape  # the input's size
        rec = json.loads((tmp_path / "out" / f"{src.stem}.json").read_text())
        assert rec["image"] == src.name and (rec["width"], rec["height"]) == (orig.shape[1], orig.shape[0])
        assert len(rec["detections"]) == 1 == item.num_detections  # the 0.1 car is below --score-thr
        d = rec["detections"][0]
        assert d["label"] == 7 and d["category"] == "pedestrian" and d["score"] == pytest.approx(0.9)
        expected = KnownDetector().predict([orig])[0]
        np.testing.assert_allclose(d["bbox"], expected.boxes[0], atol=0.01)
        mask = mask_util.decode(d["mask"]).astype(bool)
        np.testing.assert_array_equal(mask, expected.masks[0])  # the RLE is the drawn mask
        inside = mask.copy()
        inside[: int(d["bbox"][1]) + 20] = False  # below the score tag
        diff = np.abs(pic.astype(int) - orig.astype(int)).sum(-1)
        assert (diff[inside] > 20).mean() > 0.9  # pixels inside the mask changed (JPEG noise is smaller)
        assert item.classes == {"pedestrian": 1}
    assert model.batches == [2]


def test_show_semantic_changes_background(tmp_path):
    a = grey_image(tmp_path / "a.png", 160, 100)
    predict_files(KnownDetector(), [str(a)], tmp_path / "plain", progress=False)
    predict_files(KnownDetector(), [str(a)], tmp_path / "sem", show_semantic=True, progress=False)
    plain = cv2.imread(str(tmp_path / "plain" / "a.jpg")).astype(int)
    sem = cv2.imread(str(tmp_path / "sem" / "a.jpg")).astype(int)
    assert np.abs(sem[2:20, 40:] - plain[2:20, 40:]).mean() > 10  # top quarter coloured
    assert np.abs(sem[80:, 40:] - plain[80:, 40:]).mean() < 2


def test_bad_files_are_reported_and_others_written(tmp_path):
    good = grey_image(tmp_path / "good.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "empty.png").write_bytes(b"")
    items = predict_files(KnownDetector(),
                          [str(good), str(tmp_path / "notes.txt"), str(tmp_path / "broken.jpg"),
                           str(tmp_path / "empty.png"), str(tmp_path / "missing.jpg"), str(tmp_path / "*.gif")],
                          tmp_path / "out", progress=False)
    by = {Path(i.source).name: i for i in items}
    assert by["good.jpg"].ok and (tmp_path / "out" / "good.jpg").is_file()
    for name in ("notes.txt", "broken.jpg", "empty.png"):
        assert not by[name].ok and "not an image" in by[name].error
        assert not (tmp_path / "out" / f"{Path(name).stem}.jpg").exists()
    assert by["missing.jpg"].error == "no such file"
    assert by["*.gif"].error == "no file matches"


def test_expand_inputs_folder_glob_dedup(tmp_path):
    for n in ("x.jpg", "y.PNG", "z.txt"):
        (tmp_path / "d" / n).parent.mkdir(exist_ok=True)
        (tmp_path / "d" / n).write_bytes(b"x")
    (tmp_path / "d" / "sub").mkdir()
    files, failed = expand_inputs([str(tmp_path / "d"), str(tmp_path / "d" / "*.jpg"), str(tmp_path / "d" / "z.txt")])
    assert [f.name for f in files] == ["x.jpg", "y.PNG", "z.txt"] and not failed
    (tmp_path / "e").mkdir()
    _, failed = expand_inputs([str(tmp_path / "e")])
    assert failed[0].error == "folder has no image files"


def test_output_stems_never_collide(tmp_path):
    files = [tmp_path / "a" / "img.jpg", tmp_path / "b" / "img.png", tmp_path / "out" / "c.jpg", tmp_path / "img-2.jpg"]
    assert output_stems(files, tmp_path / "out") == ["img", "img-2", "c-2", "img-2-2"]


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="score-thr"):
        predict_files(KnownDetector(), [str(grey_image(tmp_path / "a.jpg"))], tmp_path, score_thr=1.5)
    with pytest.raises(UserError, match="no input images"):
        predict_files(KnownDetector(), [], tmp_path)


def test_classes_and_colours():
    assert len({class_color(i) for i in range(len(CLASSES))}) == len(CLASSES)


# --------------------------------------------------------------------------- a real Detector


def known_answer_detector():
    """The tiny preset's real Detector with its RoI head set to a known answer: every proposal is
    a 'pedestrian' (label 7) with softmax score e^5 / (e^5 + 10) and an unchanged box, and the mask
    head says 'inside' everywhere for that class (so each mask fills its box). RPN, RoI
    extraction, NMS (IoU 0.5), mask pasting and rescaling all run for real; 3 kept per image."""
    import torch

    from nuimcli.models.build import build_model
    from nuimcli.presets import load_preset

    torch.manual_seed(0)
    model = build_model(load_preset("mask-rcnn-r18-tiny", ["model.roi.max_per_img=3"])).eval()
    bh, mh = model.roi_head.bbox_head, model.roi_head.mask_head
    with torch.no_grad():
        for p in (bh.fc_cls.weight, bh.fc_cls.bias, bh.fc_reg.weight, bh.fc_reg.bias, mh.conv_logits.weight):
            p.zero_()
        bh.fc_cls.bias[7] = 5.0
        mh.conv_logits.bias.fill_(-5.0)
        mh.conv_logits.bias[7] = 5.0
    return model


def test_real_detector_pictures_and_json(tmp_path):
    model = known_answer_detector()
    src = grey_image(tmp_path / "in" / "street.jpg", 400, 230)  # not the test scale: rescaling is exercised
    (item,) = predict_files(model, [str(src)], tmp_path / "out", score_thr=0.3, progress=False)
    assert item.ok and item.num_detections == 3 and item.classes == {"pedestrian": 3}
    orig = cv2.imread(str(src))
    pic = cv2.imread(item.image_out)
    assert pic.shape == orig.shape
    (pred,) = model.predict([orig])
    rec = json.loads(Path(item.json_out).read_text())
    assert (rec["width"], rec["height"]) == (400, 230)
    expected_score = float(np.exp(5.0) / (np.exp(5.0) + 10))
    diff = np.abs(pic.astype(int) - orig.astype(int)).sum(-1)
    for d, box, mask in zip(rec["detections"], pred.boxes, pred.masks):
        assert d["category"] == "pedestrian" and d["score"] == pytest.approx(expected_score, abs=1e-4)
        np.testing.assert_allclose(d["bbox"], box, atol=0.01)
        decoded = mask_util.decode(d["mask"]).astype(bool)
        np.testing.assert_array_equal(decoded, mask)  # the JSON's RLE is the drawn mask
        assert decoded.sum() > 50
        assert (diff[decoded] > 20).mean() > 0.5  # the picture changed inside it
