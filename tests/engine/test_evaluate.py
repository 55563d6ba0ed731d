"""Evaluation engine: predictions -> COCO results -> metrics, on a stand-in detector that reads
the image's index from its pixels and answers with that image's ground truth (so the whole path,
image order included, is checked), in one process and in two gloo processes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from nuimcli import CLASSES
from nuimcli.engine.evaluate import (
    category_ids_for_labels,
    evaluate_detector,
    evaluate_model,
    mask_to_rle,
    prediction_to_coco,
)
from nuimcli.errors import UserError
from nuimcli.models.detector import Prediction

W, H = 96, 64


def make_split(root: Path, n: int = 6, seed: int = 0) -> Path:
    """n images (their index written into pixel (0, 0)) with 1-3 rectangles each; COCO json."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(n):
        img = np.full((H, W, 3), 90, np.uint8)
        img[0, 0] = i
        rel = f"samples/CAM_FRONT/img{i}.png"  # PNG: lossless, the index survives
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), img)
        images.append({"id": 100 + i, "file_name": rel, "width": W, "height": H})
        for _ in range(int(rng.integers(1, 4))):
            bw, bh = int(rng.integers(8, 40)), int(rng.integers(8, 30))
            x, y = int(rng.integers(1, W - bw)), int(rng.integers(1, H - bh))
            m = np.zeros((H, W), bool)
            m[y : y + bh, x : x + bw] = True
            anns.append({"id": len(anns), "image_id": 100 + i, "category_id": int(rng.integers(0, 10)),
                         "bbox": [x, y, bw, bh], "area": bw * bh, "segmentation": mask_to_rle(m), "iscrowd": 0})
    cats = [{"id": k, "name": n} for k, n in enumerate(CLASSES)]
    ann_file = root / "annotations" / "val.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return ann_file


class OracleDetector:
    """Answers each image with its ground truth (found from the index in pixel (0, 0))."""

    def __init__(self, ann_file: Path, drop_first: bool = False) -> None:
        gt = json.loads(ann_file.read_text())
        self.by_index: dict[int, list[dict]] = {}
        for a in gt["annotations"]:
            self.by_index.setdefault(a["image_id"] - 100, []).append(a)
        self.drop_first = drop_first
        self.calls: list[int] = []

    def predict(self, images, batch_size=2):
        assert len(images) <= batch_size
        out = []
        for img in images:
            i = int(img[0, 0, 0])
            self.calls.append(i)
            anns = self.by_index.get(i, [])[(1 if self.drop_first else 0):]
            boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], np.float32).reshape(-1, 4)
            masks = np.stack([mask_util.decode(a["segmentation"]).astype(bool) for a in anns]) if anns \
                else np.zeros((0, img.shape[0], img.shape[1]), bool)
            out.append(Prediction(boxes=boxes, scores=np.linspace(0.9, 0.5, len(anns)).astype(np.float32),
                                  labels=np.array([a["category_id"] for a in anns], np.int64), masks=masks))
        return out


def test_mask_to_rle_round_trip():
    m = np.zeros((7, 9), bool)
    m[2:5, 3:8] = True
    r = mask_to_rle(m)
    assert isinstance(r["counts"], str) and r["size"] == [7, 9]
    np.testing.assert_array_equal(mask_util.decode(r).astype(bool), m)


def test_prediction_to_coco_fields():
    m = np.zeros((10, 20), bool)
    m[1:4, 2:6] = True
    pred = Prediction(boxes=np.array([[2, 1, 6, 4]], np.float32), scores=np.array([0.7], np.float32),
                      labels=np.array([3], np.int64), masks=m[None])
    (r,) = prediction_to_coco(pred, 5, [10, 11, 12, 13, 14, 15, 16, 17, 18, 19])
    assert r["bbox"] == [2.0, 1.0, 4.0, 3.0] and r["category_id"] == 13 and r["image_id"] == 5
    assert r["score"] == pytest.approx(0.7)
    np.testing.assert_array_equal(mask_util.decode(r["segmentation"]).astype(bool), m)
    json.dumps(r)
    no_masks = Prediction(boxes=pred.boxes, scores=pred.scores, labels=pred.labels, masks=None)
    assert "segmentation" not in prediction_to_coco(no_masks, 5, list(range(10)))[0]


def test_category_ids_by_name():
    gt = {"categories": [{"id": 7 - k if k < 8 else k, "name": n} for k, n in enumerate(CLASSES)]}
    ids = category_ids_for_labels(gt)
    assert [next(c["name"] for c in gt["categories"] if c["id"] == i) for i in ids] == list(CLASSES)
    with pytest.raises(UserError, match="no category named barrier"):
        category_ids_for_labels({"categories": gt["categories"][:-1]})


def test_evaluate_model_perfect_and_missing(tmp_path):
    ann = make_split(tmp_path, n=5)
    model = OracleDetector(ann)
    out = evaluate_model(model, ann, tmp_path, batch_size=2, progress=False)
    assert model.calls == [0, 1, 2, 3, 4]  # every image once, in order
    assert out.metrics.bbox.AP == 1.0 and out.metrics.segm.AP == 1.0
    gt = json.loads(ann.read_text())
    assert len(out.results) == len(gt["annotations"])
    # reference-compat: the perfect detection of annotation 0 is a false positive
    compat = evaluate_model(OracleDetector(ann), ann, tmp_path, reference_compat=True, progress=False)
    assert compat.metrics.bbox.AP < 1.0
    # a model that misses one object per image
    lower = evaluate_model(OracleDetector(ann, drop_first=True), ann, tmp_path, progress=False)
    assert lower.metrics.bbox.AR100 < 1.0 and lower.metrics.segm.AP < 1.0


def test_evaluate_detector_flat_metrics_for_the_trainer(tmp_path):
    ann = make_split(tmp_path, n=3)

    class Wrapped:  # DDP-like wrapper: the detector is .module
        def __init__(self, m):
            self.module = m

    m = evaluate_detector(Wrapped(OracleDetector(ann)), ann, tmp_path, progress=False)
    assert m["bbox_mAP"] == 1.0 and m["segm_mAP"] == 1.0 and m["bbox_AR@100"] == 1.0
    assert set(m) == {f"{t}_{k}" for t in ("bbox", "segm")
                      for k in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l", "AR@100")}
    json.dumps(m, allow_nan=False)


def test_missing_images_are_a_user_error(tmp_path):
    ann = make_split(tmp_path, n=3)
    (tmp_path / "samples/CAM_FRONT/img1.png").unlink()
    with pytest.raises(UserError, match="img1.png does not exist"):
        evaluate_model(OracleDetector(ann), ann, tmp_path, progress=False)
    with pytest.raises(UserError, match="no such file"):
        evaluate_model(OracleDetector(ann), tmp_path / "nope.json", tmp_path, progress=False)


# --------------------------------------------------------------------------- two processes


def _ddp_worker(world, root: str) -> None:
    from nuimcli.engine.distributed import cleanup, init

    init(world, "cpu")
    torch.set_num_threads(1)
    try:
        ann = Path(root) / "annotations" / "val.json"
        model = OracleDetector(ann)
        out = evaluate_model(model, ann, root, batch_size=2, progress=False)
        rec = {"calls": model.calls, "results": out.results,
               "AP": None if out.metrics is None else [out.metrics.bbox.AP, out.metrics.segm.AP]}
        (Path(root) / f"rank{world.rank}.json").write_text(json.dumps(rec))
    finally:
        cleanup()


def test_two_process_evaluation_gathers_on_rank0(tmp_path):
    from nuimcli.engine.distributed import spawn

    ann = make_split(tmp_path, n=7)
    spawn(_ddp_worker, 2, args=(str(tmp_path),))
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["calls"] == [0, 2, 4, 6] and r1["calls"] == [1, 3, 5]
    assert r1["results"] is None and r1["AP"] is None
    assert r0["AP"] == [1.0, 1.0]
    single = evaluate_model(OracleDetector(ann), ann, tmp_path, progress=False)
    assert r0["results"] == single.results  # all images, in the file's image order
