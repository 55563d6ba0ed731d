"""COCO json + images → training records: filtering, skip rules, masks, semantic maps, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from nuimcli import CLASSES
from nuimcli.data.dataset import build_train_dataset, decode_masks, load_coco_records
from nuimcli.errors import UserError
from nuimcli.presets import load_preset


def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"counts": r["counts"].decode("ascii"), "size": list(r["size"])}


def write_coco(root: Path, with_semantic: bool = False) -> Path:
    """4 images: 0 normal, 1 without annotations, 2 only skipped annotations, 3 too small."""
    (root / "samples" / "CAM_FRONT").mkdir(parents=True)
    sizes = [(80, 60), (80, 60), (80, 60), (80, 20)]
    images, anns = [], []
    for i, (w, h) in enumerate(sizes):
        fn = f"samples/CAM_FRONT/img{i}.jpg"
        cv2.imwrite(str(root / fn), np.full((h, w, 3), 40 * i, np.uint8))
        images.append({"id": i, "token": f"t{i}", "file_name": fn, "width": w, "height": h})
        if with_semantic:
            p = root / "annotations" / "semantic_masks" / fn.replace("jpg", "png")
            p.parent.mkdir(parents=True, exist_ok=True)
            sem = np.zeros((h, w), np.uint8)
            sem[10:30, 10:30] = 17
            cv2.imwrite(str(p), sem)
    m = np.zeros((60, 80), np.uint8)
    m[10:30, 10:40] = 1

    def ann(img, cat, bbox, **kw):
        a = {"image_id": img, "category_id": cat, "bbox": bbox, "area": bbox[2] * bbox[3],
             "segmentation": _rle(m), "iscrowd": 0, "id": len(anns)}
        a.update(kw)
        anns.append(a)

    ann(0, 0, [10, 10, 30, 20])
    ann(0, 7, [40, 5, 20, 40], segmentation=[[40, 5, 60, 5, 60, 45, 40, 45]])
    ann(0, 3, [10, 10, 0.5, 20])  # w < 1: skipped
    ann(0, 3, [100, 100, 10, 10])  # outside the image: skipped
    ann(0, 3, [10, 10, 10, 10], ignore=True)
    ann(0, 3, [10, 10, 10, 10], iscrowd=1)
    ann(0, 42, [10, 10, 10, 10])  # not one of the classes
    ann(2, 1, [10, 10, 10, 10], area=0)  # area <= 0: skipped, so image 2 has nothing usable
    ann(3, 1, [10, 5, 10, 10], segmentation=[[10, 5, 20, 5, 20, 15, 10, 15]])  # image too small (h = 20 < 32)
    cats = [{"id": i, "name": n} for i, n in enumerate(CLASSES)] + [{"id": 42, "name": "animal"}]
    path = root / "annotations" / "nuimages_v1.0-train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_records_follow_mmdet_skip_rules(tmp_path):
    ann = write_coco(tmp_path)
    recs, skipped = load_coco_records(ann, CLASSES)
    assert [len(r.labels) for r in recs] == [2, 0, 0, 1]
    assert skipped == 6
    r0 = recs[0]
    assert r0.labels.tolist() == [0, 7]
    assert r0.bboxes.tolist() == [[10, 10, 40, 30], [40, 5, 60, 45]]
    masks = decode_masks(r0.segmentations, 60, 80)
    assert masks.shape == (2, 60, 80) and masks.dtype == np.uint8
    assert masks[0, 10:30, 10:40].all() and masks[0].sum() == 600
    assert masks[1, 10:40, 45:55].all() and masks[1, :, :35].sum() == 0


def test_labels_follow_class_names_not_json_order(tmp_path):
    ann = write_coco(tmp_path)
    data = json.loads(ann.read_text())
    data["categories"] = data["categories"][::-1]
    ann.write_text(json.dumps(data))
    recs, _ = load_coco_records(ann, CLASSES)
    assert recs[0].labels.tolist() == [0, 7]


def test_train_filter_and_sample(tmp_path):
    ann = write_coco(tmp_path)
    preset = load_preset("mask-rcnn-r18-tiny")
    ds = build_train_dataset(ann, tmp_path, preset)
    assert len(ds) == 1 and ds.records[0].file_name.endswith("img0.jpg")
    s = ds[(0, 123)]
    assert s.img.shape[0] == 3 and s.gt_masks.shape[0] == 2
    assert s.img_meta.seed == 123 and s.img_meta.ori_shape == (60, 80)


def test_semantic_maps_loaded_for_htc(tmp_path):
    ann = write_coco(tmp_path, with_semantic=True)
    preset = load_preset("htc-r50-1x")
    ds = build_train_dataset(ann, tmp_path, preset, semantic_root=tmp_path / "annotations" / "semantic_masks")
    raw = ds.load_raw(0)
    assert raw["semantic"].shape == (60, 80) and raw["semantic"][20, 20] == 17 and raw["semantic"][0, 0] == 0
    s = ds[(0, 0)]
    ph, pw = s.img_meta.pad_shape
    assert s.gt_semantic_seg.shape == (ph // 8, pw // 8)


def test_missing_semantic_png_is_named(tmp_path):
    ann = write_coco(tmp_path, with_semantic=True)
    png = tmp_path / "annotations" / "semantic_masks" / "samples" / "CAM_FRONT" / "img0.png"
    png.unlink()
    with pytest.raises(UserError, match="img0.png"):
        build_train_dataset(ann, tmp_path, load_preset("htc-r50-1x"),
                            semantic_root=tmp_path / "annotations" / "semantic_masks")


def test_missing_image_is_named(tmp_path):
    ann = write_coco(tmp_path)
    (tmp_path / "samples" / "CAM_FRONT" / "img0.jpg").unlink()
    with pytest.raises(UserError, match=r"img0\.jpg: image listed in .* not found"):
        build_train_dataset(ann, tmp_path, load_preset("mask-rcnn-r18-tiny"))


@pytest.mark.parametrize("content, what", [
    ("not json at all {", "not valid JSON"),
    ("[1, 2, 3]", "top level is a list"),
    ('{"images": [], "annotations": []}', "no 'categories' list"),
    ('{"images": [{"id": 1}], "annotations": [], "categories": []}', "image entry lacks"),
])
def test_not_a_coco_file(tmp_path, content, what):
    p = tmp_path / "x.json"
    p.write_text(content)
    with pytest.raises(UserError, match=what) as e:
        load_coco_records(p, CLASSES)
    assert str(p) in str(e.value)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(UserError, match="annotation file not found"):
        load_coco_records(tmp_path / "nope.json", CLASSES)


def test_no_usable_image(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"images": [{"id": 0, "file_name": "a.jpg", "width": 50, "height": 50}],
                             "annotations": [], "categories": []}))
    with pytest.raises(UserError, match="no training image left"):
        build_train_dataset(p, tmp_path, load_preset("mask-rcnn-r18-tiny"))
