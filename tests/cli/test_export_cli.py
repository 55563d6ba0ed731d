"""`nuim export` end to end: the figures (table / --json), then the exported file given to
`nuim predict --checkpoint` and `nuim eval --checkpoint` gives the same detections and the same
metrics as the checkpoint it came from; bad input is a one-line exit 2."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from nuimcli import CLASSES
from nuimcli.cli import main
from nuimcli.testing.random_weights import synthetic_image



def call(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """The tiny Mask R-CNN with calibrated random weights, as a checkpoint."""
    from nuimcli.checkpoints import save_checkpoint
    from nuimcli.presets import load_preset
    from nuimcli.testing.random_weights import calibrated_model

    p = load_preset("mask-rcnn-r18-tiny", ["data.test_scale=[256,144]"])
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, calibrated_model(p, 256, 144), p)
    return str(path)


@pytest.mark.parametrize("fmt", [pytest.param("torchscript", marks=pytest.mark.slow), "onnx"])
def test_export_then_predict_and_eval_like_the_checkpoint(fmt, ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = call(capsys, "export", ckpt, "--format", fmt, "--input-size", "256x144", "--out", "m.model",
                          "--threads", "2", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["format"] == fmt and doc["preset"] == "mask-rcnn-r18-tiny" and doc["comparison"]["ok"]
    assert doc["comparison"]["detections_ref"] > 0

    # three images, two of another size and aspect ratio: resized outside the graph
    rel = []
    for i, (w, h) in enumerate([(512, 288), (384, 216), (256, 144)]):
        name = f"samples/CAM_FRONT/f{i}.png"
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / name), synthetic_image(w, h, i + 1))
        rel.append(name)
    runs = {}
    for tag, model in (("pth", ckpt), ("exp", "m.model")):
        code, _, err = call(capsys, "predict", *[str(tmp_path / r) for r in rel], "--checkpoint", model,
                            "--out", f"pred_{tag}", "--device", "cpu", "--score-thr", "0.2")
        assert code == 0, err
        runs[tag] = [json.loads((tmp_path / f"pred_{tag}" / f"f{i}.json").read_text()) for i in range(3)]
    for a, b in zip(runs["pth"], runs["exp"]):
        da, db = a["detections"], b["detections"]
        assert len(da) == len(db) > 0
        for x, y in zip(sorted(da, key=lambda d: -d["score"]), sorted(db, key=lambda d: -d["score"])):
            assert x["label"] == y["label"]
            # 0.05 px at the input size, x2 at 640x360, + the JSON's 2-decimal rounding
            assert np.abs(np.subtract(x["bbox"], y["bbox"])).max() <= 0.05 * 2 + 0.01
            assert abs(x["score"] - y["score"]) <= 1e-3

    # ground truth = the checkpoint's own detections; both runs must score the same
    images, anns = [], []
    for i, (r, js) in enumerate(zip(rel, runs["pth"])):
        images.append({"id": i, "file_name": r, "width": js["width"], "height": js["height"]})
        for d in js["detections"]:
            x1, y1, x2, y2 = d["bbox"]
            anns.append({"id": len(anns), "image_id": i, "category_id": d["label"], "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": (x2 - x1) * (y2 - y1), "segmentation": d["mask"], "iscrowd": 0})
    (tmp_path / "gt.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                  "categories": [{"id": k, "name": n} for k, n in enumerate(CLASSES)]}))
    metrics = {}
    for tag, model in (("pth", ckpt), ("exp", "m.model")):
        code, out, err = call(capsys, "eval", "--checkpoint", model, "--data-root", str(tmp_path), "--ann-file",
                              "gt.json", "--json", "--device", "cpu")
        assert code == 0, err
        metrics[tag] = json.loads(out)
    for k in ("bbox", "segm"):
        assert metrics["pth"][k]["AP"] > 0.5
        assert abs(metrics["pth"][k]["AP"] - metrics["exp"][k]["AP"]) <= 1e-3, k


def test_dynamic_export_shows_a_column_per_checked_size(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = call(capsys, "export", "--random-weights", "mask-rcnn-r18-tiny", "--format", "onnx",
                          "--dynamic", "--threads", "2")
    assert code == 0, err
    # the tiny preset's test scale, and where a 4:3 image lands in it
    assert "any input size (dynamic), checked at 384x216, 288x216" in " ".join(out.split())
    header = next(line for line in out.splitlines() if "check" in line and "allowed" in line)
    assert "384x216" in header and "288x216" in header
    assert (tmp_path / "mask-rcnn-r18-tiny.onnx").is_file()


@pytest.mark.parametrize("args, message", [
    (["--random-weights", "mask-rcnn-r18-tiny", "--format", "tflite"], "--format 'tflite'"),
    (["--random-weights", "mask-rcnn-r18-tiny", "--format", "onnx", "--input-size", "big"], "--input-size 'big'"),
    (["--random-weights", "mask-rcnn-r18-tiny", "--format", "onnx", "--dynamic", "--input-size", "256x144"],
     "exclude each other"),
    (["--random-weights", "mask-rcnn-r18-tiny", "--format", "torchscript", "--half"], "needs a CUDA device"),
    (["--random-weights", "no-such-preset", "--format", "onnx"], "no-such-preset"),
    (["--format", "onnx"], "give MODEL"),
])
def test_bad_input_is_one_line_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = call(capsys, "export", *args)
    assert code == 2, (out, err)
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_not_an_exported_file_is_not_taken_for_one(tmp_path):
    from nuimcli.export.formats import detect_format

    (tmp_path / "x.onnx").write_bytes(b"\x80\x02not onnx")
    assert detect_format(tmp_path / "x.onnx") is None
