"""COCO files users bring (issue 17 item 5): polygon and RLE masks alike, categories not in the
class list skipped, and a one-line error naming the file and the annotation for each mistake that
would otherwise train on wrong targets."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from nuimcli.data.dataset import load_coco_records
from nuimcli.errors import UserError

CLASSES = ("vehicle", "person")


def rle(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> dict:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    r = mask_utils.encode(np.asfortranarray(m))
    r["counts"] = r["counts"].decode()
    return r


def coco() -> dict:
    """Two images in different folders; a polygon (vehicle), an RLE (person) and an 'animal' that
    the class list does not select."""
    return {
        "images": [{"id": 7, "file_name": "a/b/one.jpg", "width": 40, "height": 30},
                   {"id": 9, "file_name": "elsewhere/two.png", "width": 20, "height": 10}],
        "categories": [{"id": 3, "name": "person"}, {"id": 5, "name": "vehicle"}, {"id": 8, "name": "animal"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 5, "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0,
             "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]]},
            {"id": 2, "image_id": 9, "category_id": 3, "bbox": [4, 2, 6, 5], "area": 30, "iscrowd": 0,
             "segmentation": rle(10, 20, 2, 7, 4, 10)},
            {"id": 3, "image_id": 9, "category_id": 8, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0,
             "segmentation": [[0, 0, 5, 0, 5, 5]]},
        ],
    }


def write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "mine.json"
    p.write_text(json.dumps(data))
    return p


def test_polygon_and_rle_masks_and_any_folder_layout(tmp_path):
    records, skipped = load_coco_records(write(tmp_path, coco()), CLASSES, with_mask=True)
    by_id = {r.image_id: r for r in records}
    assert skipped == 1  # the animal: not in the class list, ignored as mmdet's metainfo does
    assert by_id[7].file_name == "a/b/one.jpg" and by_id[9].file_name == "elsewhere/two.png"
    assert by_id[7].labels.tolist() == [CLASSES.index("vehicle")]
    assert by_id[9].labels.tolist() == [CLASSES.index("person")]
    np.testing.assert_allclose(by_id[7].bboxes, [[2, 3, 12, 11]])
    assert isinstance(by_id[7].segmentations[0], list) and isinstance(by_id[9].segmentations[0], dict)


def one_line_error(tmp_path: Path, data: dict, **kw) -> str:
    path = write(tmp_path, data)
    with pytest.raises(UserError) as e:
        load_coco_records(path, CLASSES, **{"with_mask": True, **kw})
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def test_category_id_not_in_categories(tmp_path):
    d = coco()
    d["annotations"][0]["category_id"] = 42
    msg = one_line_error(tmp_path, d)
    assert "annotation 1" in msg and "42" in msg and "categories" in msg


def test_annotation_on_an_image_not_listed(tmp_path):
    d = coco()
    d["annotations"][1]["image_id"] = 1234
    msg = one_line_error(tmp_path, d)
    assert "annotation 2" in msg and "1234" in msg


@pytest.mark.parametrize("what", ["rle", "polygon"])
def test_mask_that_does_not_fit_its_image(tmp_path, what):
    d = coco()
    if what == "rle":
        d["annotations"][1]["segmentation"] = rle(30, 40, 0, 5, 0, 5)  # image 9 is 20x10
        expect = "not the image's 20x10"
    else:
        d["annotations"][0]["segmentation"] = [[2, 3, 80, 3, 80, 11, 2, 11]]  # image 7 is 40 wide
        expect = "outside the image"
    msg = one_line_error(tmp_path, d)
    assert expect in msg


def test_boxes_without_masks_are_refused(tmp_path):
    d = coco()
    for a in d["annotations"]:
        a.pop("segmentation")
    msg = one_line_error(tmp_path, d)
    assert "no mask" in msg and "box-only" in msg
    # a box-only file still loads where masks are not needed
    records, _ = load_coco_records(write(tmp_path, copy.deepcopy(d)), CLASSES, with_mask=False)
    assert sum(len(r.labels) for r in records) == 2


def test_htc_with_a_semantic_head_on_data_without_semantic_maps(tmp_path):
    from nuimcli.data.dataset import build_train_dataset
    from nuimcli.presets import load_preset

    preset = load_preset("htc-r50-1x", overrides=["data.classes=[vehicle, person]", "model.num_classes=2"])
    d = coco()
    d["images"][0].update(width=400, height=300)  # large enough to be kept for training
    with pytest.raises(UserError) as e:
        build_train_dataset(write(tmp_path, d), tmp_path, preset, semantic_root=None, check_files=False)
    msg = str(e.value)
    assert "\n" not in msg and "htc-r50-nosemantic-1x" in msg
