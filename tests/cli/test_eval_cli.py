"""`nuim eval`: --results files, --json purity, --out files, argument errors, a model run
(stand-in detector), and the round trip results.json -> --results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util

from nuimcli import CLASSES
from nuimcli.cli import main
from nuimcli.presets import load_preset


def run_nuim(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nuimcli", *args], capture_output=True, text=True, **kw)


def call(capsys, *args: str) -> tuple[int, str, str]:
    """Run `nuim ARGS` in this process; (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def rle(m: np.ndarray) -> dict:
    r = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    r["counts"] = r["counts"].decode()
    return r


def write_case(root: Path) -> tuple[Path, Path]:
    """GT with 3 annotations (ids 0..2) on 2 images, and perfect results for them."""
    w, h = 64, 48
    boxes = [(0, 4, 4, 20, 10, 0), (0, 30, 20, 16, 20, 7), (1, 10, 10, 30, 30, 3)]
    images = [{"id": i, "file_name": f"samples/CAM_FRONT/img{i}.png", "width": w, "height": h} for i in range(2)]
    anns, res = [], []
    for k, (img, x, y, bw, bh, c) in enumerate(boxes):
        m = np.zeros((h, w), bool)
        m[y : y + bh, x : x + bw] = True
        anns.append({"id": k, "image_id": img, "category_id": c, "bbox": [x, y, bw, bh], "area": bw * bh,
                     "segmentation": rle(m), "iscrowd": 0})
        res.append({"image_id": img, "category_id": c, "bbox": [x, y, bw, bh], "score": 0.9 - 0.1 * k,
                    "segmentation": rle(m)})
    gt = {"images": images, "annotations": anns, "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES)]}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "nuimages_v1.0-val.json").write_text(json.dumps(gt))
    (root / "res.json").write_text(json.dumps(res))
    return root / "annotations" / "nuimages_v1.0-val.json", root / "res.json"


def test_results_file_json_stdout_only(tmp_path):
    ann, res = write_case(tmp_path)
    r = run_nuim("eval", "--results", str(res), "--ann-file", str(ann), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # stdout is exactly one JSON document
    assert doc["mode"] == "shifted-ids" and doc["num_detections"] == 3
    assert doc["bbox"]["AP"] == 1.0 and doc["segm"]["AP"] == 1.0
    assert doc["segm"]["per_class"]["pedestrian"] == 1.0 and doc["segm"]["per_class"]["truck"] is None
    r2 = run_nuim("eval", "--results", str(res), "--data-root", str(tmp_path), "--json", "--reference-compat")
    doc2 = json.loads(r2.stdout)  # default ann file under --data-root
    assert doc2["mode"] == "reference-compat" and doc2["bbox"]["AP"] < 1.0
    assert doc2["bbox"]["per_class"]["car"] == 0.0  # annotation 0 is the only car: never matched


def test_results_file_table_and_out(tmp_path, capsys):
    ann, res = write_case(tmp_path)
    code, out, err = call(capsys, "eval", "--results", str(res), "--ann-file", str(ann), "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert "AP50" in out and "per-class AP" in out and "pedestrian" in out and "100.0" in out
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["bbox"]["AP"] == 1.0
    assert not (tmp_path / "o" / "results.json").exists()  # nothing new to write without a model


@pytest.mark.parametrize(
    "args, message",
    [
        (["--results", "RES", "--checkpoint", "x.pth"], "not both"),
        ([], "give --checkpoint"),
        (["--results", "RES", "--ann-file", "nope.json"], "nope.json: no such file"),
        (["--results", "BAD"], "not valid JSON"),
        (["--results", "RES", "--data-root", "elsewhere"], "nuim convert"),
    ],
)
def test_bad_usage_is_one_line_exit_2(tmp_path, capsys, args, message):
    ann, res = write_case(tmp_path)
    (tmp_path / "bad.json").write_text("[{")
    args = [a.replace("RES", str(res)).replace("BAD", str(tmp_path / "bad.json")) for a in args]
    if "--ann-file" not in args and "--data-root" not in args:
        args += ["--ann-file", str(ann)]
    code, out, err = call(capsys, "eval", *args)
    assert code == 2 and message in err and "Traceback" not in err and out == ""


class Oracle:
    """Stand-in detector: answers each image with the ground truth of that image."""

    def __init__(self, ann: Path) -> None:
        gt = json.loads(ann.read_text())
        self.preset = load_preset("mask-rcnn-r18-tiny")
        self.anns = gt["annotations"]
        self.n = 0

    def predict(self, images, batch_size=2):
        from nuimcli.models.detector import Prediction

        out = []
        for img in images:
            i = int(img[0, 0, 0])
            anns = [a for a in self.anns if a["image_id"] == i]
            self.n += 1
            out.append(Prediction(
                boxes=np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                                for a in anns], np.float32).reshape(-1, 4),
                scores=np.array([0.8] * len(anns), np.float32),
                labels=np.array([a["category_id"] for a in anns], np.int64),
                masks=np.stack([mask_util.decode(a["segmentation"]).astype(bool) for a in anns])))
        return out


def test_model_run_writes_results_that_evaluate_the_same(tmp_path, capsys, monkeypatch):
    import cv2

    import nuimcli

    ann, _ = write_case(tmp_path)
    for i in range(2):
        img = np.full((48, 64, 3), 100, np.uint8)
        img[0, 0] = i
        (tmp_path / "samples/CAM_FRONT").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / f"samples/CAM_FRONT/img{i}.png"), img)
    seen = {}

    def fake_load(name, preset=None, device="cpu", trust_checkpoint=False, exact=False, half=False):
        seen.update(name=name, preset=preset, device=device, exact=exact)
        return Oracle(ann)

    monkeypatch.setattr(nuimcli, "load", fake_load)
    code, out, err = call(capsys, "eval", "--checkpoint", "some.pth", "--data-root", str(tmp_path),
                          "--out", str(tmp_path / "o"), "--json", "--threads", "1")
    assert code == 0, err
    doc = json.loads(out)
    assert seen == {"name": "some.pth", "preset": None, "device": "cpu", "exact": False}  # fast by default
    assert doc["preset"] == "mask-rcnn-r18-tiny" and doc["bbox"]["AP"] == 1.0 and doc["segm"]["AP"] == 1.0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert len(results) == 3 and all(isinstance(r["segmentation"]["counts"], str) for r in results)
    assert {"bbox", "score", "category_id", "segmentation", "image_id"} <= set(results[0])
    assert json.loads((tmp_path / "o" / "metrics.json").read_text()) == doc
    code, out2, err = call(capsys, "eval", "--results", str(tmp_path / "o" / "results.json"),
                           "--data-root", str(tmp_path), "--json")
    doc2 = json.loads(out2)
    for t in ("bbox", "segm"):
        assert doc2[t] == doc[t]


def test_cuda_request_without_cuda(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    ann, _ = write_case(tmp_path)
    code, _, err = call(capsys, "eval", "--checkpoint", "x.pth", "--ann-file", str(ann), "--device", "cuda")
    assert code == 2 and "CUDA is not available" in err


# --------------------------------------------------------------------------- a real checkpoint


def known_answer_checkpoint(path: Path):
    """Save the tiny preset's real Detector with a known-answer RoI head (see
    tests/engine/test_predict.py): every kept detection is a box-filling 'pedestrian'."""
    import torch

    from nuimcli.models.build import build_model
    from nuimcli.checkpoints import save_checkpoint

    preset = load_preset("mask-rcnn-r18-tiny", ["model.roi.max_per_img=3"])
    torch.manual_seed(0)
    model = build_model(preset).eval()
    bh, mh = model.roi_head.bbox_head, model.roi_head.mask_head
    with torch.no_grad():
        for p in (bh.fc_cls.weight, bh.fc_cls.bias, bh.fc_reg.weight, bh.fc_reg.bias, mh.conv_logits.weight):
            p.zero_()
        bh.fc_cls.bias[7] = 5.0
        mh.conv_logits.bias.fill_(-5.0)
        mh.conv_logits.bias[7] = 5.0
    save_checkpoint(path, model, preset)
    return model


def test_real_checkpoint_end_to_end(tmp_path):
    """`nuim eval --checkpoint` in a fresh process on a split whose ground truth is what the
    checkpoint finds: AP 1.0 by default; below 1 with --reference-compat (annotation 0)."""
    import cv2

    model = known_answer_checkpoint(tmp_path / "known.pth")
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(2):
        img = rng.integers(0, 255, (216, 384, 3), dtype=np.uint8)
        rel = f"samples/CAM_BACK/frame{i}.jpg"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / rel), img)
        img = cv2.imread(str(tmp_path / rel))  # what eval will read (JPEG-decoded)
        images.append({"id": i, "file_name": rel, "width": 384, "height": 216})
        (pred,) = model.predict([img])
        assert len(pred) == 3
        for box, m in zip(pred.boxes, pred.masks):
            x1, y1, x2, y2 = (float(v) for v in box)
            anns.append({"id": len(anns), "image_id": i, "category_id": 7, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": float(m.sum()), "segmentation": rle(m), "iscrowd": 0})
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": [{"id": k, "name": n} for k, n in enumerate(CLASSES)]}))
    r = run_nuim("eval", "--checkpoint", str(tmp_path / "known.pth"), "--data-root", str(tmp_path),
                 "--ann-file", str(ann), "--json", "--out", str(tmp_path / "o"), "--threads", "1")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["preset"] == "mask-rcnn-r18-tiny" and doc["num_detections"] == 6
    assert doc["bbox"]["AP"] == 1.0 and doc["segm"]["AP"] == 1.0
    assert doc["bbox"]["per_class"]["pedestrian"] == 1.0
    r = run_nuim("eval", "--results", str(tmp_path / "o" / "results.json"), "--ann-file", str(ann), "--json",
                 "--reference-compat")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bbox"]["AP"] < 1.0


def test_checkpoint_of_another_preset_gives_the_mismatch_report(tmp_path, capsys):
    ann, _ = write_case(tmp_path)
    known_answer_checkpoint(tmp_path / "known.pth")
    code, out, err = call(capsys, "eval", "--checkpoint", str(tmp_path / "known.pth"), "--preset",
                          "mask-rcnn-r50-1x", "--ann-file", str(ann), "--data-root", str(tmp_path))
    assert code == 2 and out == ""
    assert "does not match preset 'mask-rcnn-r50-1x'" in err and "Traceback" not in err


# --------------------------------------------------------------------------- --gpus


def test_gpus_with_cuda_on_a_cpu_only_machine_is_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    ann, _ = write_case(tmp_path)
    code, out, err = call(capsys, "eval", "--checkpoint", "x.pth", "--ann-file", str(ann), "--gpus", "2",
                          "--device", "cuda")
    assert code == 2 and out == "" and "CUDA is not available" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_gpus_on_cpu_runs_gloo_processes_with_the_same_metrics(tmp_path):
    """`nuim eval --gpus 2 --device cpu`: two CPU processes (gloo), each predicting half of the
    images; rank 0's document equals the one-process run. A missing checkpoint in the workers is
    the usual one-line error (the exception crosses the process boundary)."""
    import cv2

    known_answer_checkpoint(tmp_path / "known.pth")
    ann, _ = write_case(tmp_path)
    (tmp_path / "samples/CAM_FRONT").mkdir(parents=True)
    for i in range(2):
        img = np.full((48, 64, 3), 100 + 40 * i, np.uint8)
        cv2.imwrite(str(tmp_path / f"samples/CAM_FRONT/img{i}.png"), img)
    args = ["eval", "--checkpoint", str(tmp_path / "known.pth"), "--data-root", str(tmp_path), "--json",
            "--threads", "1", "--device", "cpu"]
    one = run_nuim(*args)
    two = run_nuim(*args, "--gpus", "2")
    assert one.returncode == 0 and two.returncode == 0, (one.stderr, two.stderr)
    assert json.loads(two.stdout) == json.loads(one.stdout)
    assert json.loads(one.stdout)["num_detections"] == 6  # 3 per image: the comparison has something to compare
    bad = run_nuim("eval", "--checkpoint", str(tmp_path / "gone.pth"), "--data-root", str(tmp_path), "--gpus", "2",
                   "--device", "cpu")
    assert bad.returncode == 2 and "gone.pth: no such checkpoint file" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
