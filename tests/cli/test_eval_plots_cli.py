"""`nuim eval --plots` / `--show-dir`: every figure and its JSON, checked against COCOeval's numbers
and the hand-countable case of write_case (plus one confused and one background detection);
report.html self-contained; pictures worst first; bad folders are one-line errors."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from nuimcli import CLASSES
from test_eval_cli import call, rle, write_case

PED, TRUCK = CLASSES.index("pedestrian"), CLASSES.index("truck")


def case_with_errors(root: Path) -> tuple[Path, Path]:
    """write_case's 3 perfect detections, plus a truck on image 0's pedestrian (score .85, above the
    pedestrian's own .8, so it takes that GT) and a car on empty road of image 0 (score .6); images
    written so --show-dir can draw them."""
    ann, res = write_case(root)
    r = json.loads(res.read_text())
    r.append({**r[1], "category_id": TRUCK, "score": 0.85})
    m = np.zeros((48, 64), bool)
    m[30:40, 40:60] = True
    r.append({"image_id": 0, "category_id": 0, "bbox": [40, 30, 20, 10], "score": 0.6, "segmentation": rle(m)})
    res.write_text(json.dumps(r))
    for i in range(2):
        p = root / f"samples/CAM_FRONT/img{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), np.full((48, 64, 3), 90 + 60 * i, np.uint8))
    return ann, res


def png_size_and_colours(path: Path) -> tuple[tuple[int, int], int]:
    img = cv2.imread(str(path))
    assert img is not None, path
    return img.shape[:2], len(np.unique(img.reshape(-1, 3), axis=0))


def test_plots_write_figures_json_and_a_self_contained_report(tmp_path, capsys):
    ann, res = case_with_errors(tmp_path)
    d = tmp_path / "plots"
    code, out, err = call(capsys, "eval", "--results", str(res), "--ann-file", str(ann), "--json", "--plots", str(d))
    assert code == 0, err
    doc = json.loads(out)  # stdout stays one JSON document
    for t in ("bbox", "segm"):
        pr = json.loads((d / f"pr_{t}.json").read_text())
        for name, entry in pr["classes"].items():  # the curves are the AP table's numbers
            assert entry["AP"] == pytest.approx(doc[t]["per_class"][name]) if entry["AP"] is not None \
                else doc[t]["per_class"][name] is None
        cm = np.array(json.loads((d / f"confusion_{t}.json").read_text())["matrix"])
        # car: 1 TP + 1 background FP; pedestrian GT taken by the truck; bus TP; pedestrian det
        # (.8) finds its GT taken: background FP; image 1's pedestrian... none: 3 GT in all.
        want = np.zeros((11, 11), int)
        want[0, 0] = want[3, 3] = 1
        want[PED, TRUCK] = 1
        want[10, 0] = want[10, PED] = 1
        np.testing.assert_array_equal(cm, want)
        err_doc = json.loads((d / f"errors_{t}.json").read_text())
        # Pedestrian: its only GT is found by a pedestrian det ranked below a truck: C50 AP 1 (the
        # truck is another class), so every stage is 1.
        assert err_doc["classes"]["pedestrian"]["ap"]["C50"] == pytest.approx(1.0)
        assert err_doc["classes"]["truck"] is None
    # pr: 10 panels in 2 rows of 5 (3.2 x 3.0 in); errors: the mean + car, bus, pedestrian (the classes
    # with GT) in one row of 4 (4.0 x 3.3 in); 100 dpi.
    sizes = {"pr": (600, 1600), "confusion": (800, 900), "errors": (330, 1600)}
    for kind, size in sizes.items():
        for t in ("bbox", "segm"):
            shape, colours = png_size_and_colours(d / f"{kind}_{t}.png")
            assert shape == size and colours > 20, (kind, t, shape, colours)
    html = (d / "report.html").read_text()
    uris = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(uris) == 6 and all(base64.b64decode(u)[:8] == b"\x89PNG\r\n\x1a\n" for u in uris)
    assert "http" not in html.replace("data:", "") and "<script" not in html
    assert "<td>pedestrian</td>" in html and "AP75" in html


def test_show_dir_draws_the_worst_image_first(tmp_path, capsys):
    ann, res = case_with_errors(tmp_path)
    d = tmp_path / "show"
    code, out, err = call(capsys, "eval", "--results", str(res), "--data-root", str(tmp_path), "--show-dir", str(d),
                          "--show-n", "5")
    assert code == 0, err
    index = json.loads((d / "index.json").read_text())
    # Image 0: car FP, truck on the pedestrian (FP + FN), the pedestrian det with its GT taken (FP).
    assert [(r["image"], r["false_positives"], r["false_negatives"]) for r in index] == [
        ("samples/CAM_FRONT/img0.png", 3, 1), ("samples/CAM_FRONT/img1.png", 0, 0)]
    pic = cv2.imread(str(d / index[0]["file"]))
    assert pic.shape[1] > 2 * 64 and pic.shape[0] > 48  # two 64-wide panels plus a title strip
    left, right = pic[:, :64], pic[:, -64:]
    assert len(np.unique(left.reshape(-1, 3), axis=0)) > 10 and not np.array_equal(left, right)
    code, _, err = call(capsys, "eval", "--results", str(res), "--data-root", str(tmp_path), "--show-dir",
                        str(tmp_path / "one"), "--show-n", "1", "--score-thr", "0.9")
    assert code == 0 and [p.name for p in sorted((tmp_path / "one").glob("*.jpg"))] == ["000_img0.jpg"]


def test_plots_into_a_file_is_one_line_exit_2(tmp_path, capsys):
    ann, res = case_with_errors(tmp_path)
    (tmp_path / "f").write_text("x")
    code, out, err = call(capsys, "eval", "--results", str(res), "--ann-file", str(ann), "--plots", str(tmp_path / "f"))
    assert code == 2 and "--plots" in err and "not a folder" in err and "Traceback" not in err and out == ""
