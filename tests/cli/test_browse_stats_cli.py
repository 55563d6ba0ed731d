"""`nuim browse` and `nuim stats` on a converted synthetic version: pictures of the images' size
with the GT drawn, token lookup, the stats figure and JSON, and the error paths (exit 2 / 1)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from nuimcli.visual.draw import class_color
from test_eval_cli import call

W, H = 320, 180


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from nuimcli.data import convert as cv
    from nuimcli.synthetic import generate_nuimages

    r = tmp_path_factory.mktemp("syn")
    generate_nuimages(r, "v1.0-mini", num_samples=3, width=W, height=H, seed=5, objects_per_image=(4, 8),
                      null_mask_fraction=0.1, sweeps_per_sample=0)
    cv.convert(r, ["v1.0-mini"], nproc=0)
    return r


def test_browse_draws_gt_in_class_colours(root, tmp_path, capsys):
    code, out, err = call(capsys, "browse", "--data-root", str(root), "--version", "v1.0-mini", "--out",
                          str(tmp_path / "b"), "--n", "2", "--json")
    assert code == 0, err
    items = json.loads(out)
    assert len(items) == 2 and all(i["error"] is None and i["instances"] > 0 for i in items)
    gt = json.loads((root / "annotations" / "nuimages_v1.0-mini.json").read_text())
    first = gt["images"][0]
    pic = cv2.imread(items[0]["out"])
    raw = cv2.imread(str(root / first["file_name"]))
    assert pic.shape == (H, W, 3)
    from pycocotools import mask as mask_util

    anns = [a for a in gt["annotations"] if a["image_id"] == first["id"]]
    masks = [mask_util.decode(a["segmentation"]).astype(bool) for a in anns]
    k = int(np.argmax([m.sum() for m in masks]))
    a = anns[k]
    # Pixels of the largest instance only (no other mask on them), away from its outline.
    m = masks[k] & ~np.any([x for i, x in enumerate(masks) if i != k] or [np.zeros_like(masks[k])], axis=0)
    m = cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert m.sum() > 50
    # There the picture moved half-way towards the class colour (tags may cover a few pixels: median).
    want = raw[m].astype(float) * 0.5 + np.array(class_color(a["category_id"])) * 0.5
    assert np.median(np.abs(pic[m].astype(float) - want)) < 12


def test_browse_one_sample_by_token_with_the_semantic_map(root, tmp_path, capsys):
    sd = next(r for r in json.loads((root / "v1.0-mini" / "sample_data.json").read_text()) if r["is_key_frame"])
    code, out, err = call(capsys, "browse", "--data-root", str(root), "--version", "v1.0-mini", "--out",
                          str(tmp_path / "s"), "--sample", sd["sample_token"], "--semantic")
    assert code == 0, err
    (pic,) = list((tmp_path / "s").glob("*.jpg"))
    assert pic.stem == Path(sd["filename"]).stem
    code, _, _ = call(capsys, "browse", "--data-root", str(root), "--version", "v1.0-mini", "--out",
                      str(tmp_path / "p"), "--sample", sd["token"])  # the sample_data token, no semantic map
    plain = cv2.imread(str(tmp_path / "p" / pic.name)).astype(int)
    # The semantic map (road, surfaces) tints pixels no instance covers: many pixels differ.
    assert code == 0 and (np.abs(cv2.imread(str(pic)).astype(int) - plain).max(axis=2) > 20).mean() > 0.2


def test_browse_errors(root, tmp_path, capsys):
    code, _, err = call(capsys, "browse", "--data-root", str(root), "--version", "v1.0-mini", "--out",
                        str(tmp_path / "x"), "--sample", "nope")
    assert code == 2 and "--sample nope: no such image" in err and "Traceback" not in err
    code, _, err = call(capsys, "browse", "--data-root", str(root), "--version", "v9", "--out", str(tmp_path / "x"))
    assert code == 2 and "nuimages_v9.json: no such file" in err and "nuim convert" in err
    # One image gone: the others are still drawn, exit 1 names it.
    gt = json.loads((root / "annotations" / "nuimages_v1.0-mini.json").read_text())
    img = root / gt["images"][1]["file_name"]
    data = img.read_bytes()
    img.unlink()
    try:
        code, out, err = call(capsys, "browse", "--data-root", str(root), "--version", "v1.0-mini", "--out",
                              str(tmp_path / "y"), "--n", "3")
    finally:
        img.write_bytes(data)
    assert code == 1 and img.name in err.replace("\n", "") and len(list((tmp_path / "y").glob("*.jpg"))) == 2


def test_stats_json_and_figure(root, tmp_path, capsys):
    gt = json.loads((root / "annotations" / "nuimages_v1.0-mini.json").read_text())
    res = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9,
            "segmentation": a["segmentation"]} for a in gt["annotations"]]
    (tmp_path / "res.json").write_text(json.dumps(res))
    png = tmp_path / "stats.png"
    code, out, err = call(capsys, "stats", "--data-root", str(root), "--version", "v1.0-mini", "--json",
                          "--results", str(tmp_path / "res.json"), "--out", str(png))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["images"] == 3 and doc["objects"] == len(gt["annotations"]) and doc["raw_tables"]
    assert all(v["bbox_AP"] == 1.0 for v in doc["ap_per_camera"].values())
    img = cv2.imread(str(png))
    # 7 panels (classes, per image, box, area, attributes, null masks, cameras): 3 rows of 3, 5.5 x 3.8 in, 100 dpi
    assert img.shape == (1140, 1650, 3) and len(np.unique(img.reshape(-1, 3), axis=0)) > 50
    code, out, err = call(capsys, "stats", "--data-root", str(root), "--version", "v1.0-mini", "--out",
                          str(tmp_path / "s.png"))
    assert code == 0 and "objects" in out and "null masks" in out
