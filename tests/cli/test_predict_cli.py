"""`nuim predict`: outputs, the summary table, bad files (exit 1), argument errors, and the
no-checkpoint path (released file from the zoo; offline message)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from nuimcli.cli import main
from nuimcli.models.detector import Prediction
from nuimcli.presets import load_preset


def call(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


class Known:
    """Stand-in detector: one 'bus' box with a rectangular mask in every image."""

    def __init__(self, preset: str = "mask-rcnn-r18-tiny") -> None:
        self.preset = load_preset(preset)
        self.has_semantic_head = self.preset.model.semantic.enabled

    def predict(self, images, batch_size=2):
        out = []
        for img in images:
            h, w = img.shape[:2]
            m = np.zeros((1, h, w), bool)
            m[0, h // 4 : h // 2, w // 4 : w // 2] = True
            out.append(Prediction(boxes=np.array([[w // 4, h // 4, w // 2, h // 2]], np.float32),
                                  scores=np.array([0.75], np.float32), labels=np.array([3], np.int64), masks=m,
                                  semantic=np.ones((h, w), np.uint8)))
        return out


@pytest.fixture
def fake_load(monkeypatch):
    import nuimcli

    calls = []

    def load(name, preset=None, device="cpu", trust_checkpoint=False, exact=False, half=False):
        calls.append((name, preset, device))
        modes.append((exact, half))
        return Known(preset or "mask-rcnn-r18-tiny")

    modes = load.modes = []

    monkeypatch.setattr(nuimcli, "load", load)
    return calls


def test_exact_and_half_reach_the_loader(tmp_path, capsys, monkeypatch):
    import nuimcli

    modes = []
    monkeypatch.setattr(nuimcli, "load", lambda name, exact=False, half=False, **kw: modes.append((exact, half))
                        or Known())
    files = images(tmp_path / "in", names=("a.jpg",))
    assert call(capsys, "predict", str(files[0]), "-c", "m.pth", "--out", str(tmp_path / "o1"))[0] == 0
    assert call(capsys, "predict", str(files[0]), "-c", "m.pth", "--out", str(tmp_path / "o2"),
                "--exact", "--half")[0] == 0
    assert modes == [(False, False), (True, True)]  # fast float32 by default


def images(root: Path, names=("a.jpg", "b.jpg")) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for n in names:
        cv2.imwrite(str(root / n), np.full((60, 80, 3), 120, np.uint8))
        out.append(root / n)
    return out


def test_folder_and_glob_end_to_end(tmp_path, capsys, fake_load):
    imgs = images(tmp_path / "in", ("a.jpg", "b.jpg", "c.png"))
    code, out, err = call(capsys, "predict", str(tmp_path / "in" / "*.jpg"), str(imgs[2]), "--checkpoint", "m.pth",
                          "--out", str(tmp_path / "out"), "--score-thr", "0.5")
    assert code == 0, err
    assert fake_load == [("m.pth", None, "cpu")]
    for stem in ("a", "b", "c"):
        rec = json.loads((tmp_path / "out" / f"{stem}.json").read_text())
        assert rec["detections"][0]["category"] == "bus" and rec["width"] == 80 and rec["height"] == 60
        assert cv2.imread(str(tmp_path / "out" / f"{stem}.jpg")).shape == (60, 80, 3)
    assert "bus×1" in out and "80×60" in out


def test_bad_file_exit_1_others_written(tmp_path, capsys, fake_load):
    good = images(tmp_path, ("good.jpg",))[0]
    (tmp_path / "bad.jpg").write_text("definitely not a JPEG")
    code, out, err = call(capsys, "predict", str(good), str(tmp_path / "bad.jpg"), "--checkpoint", "m.pth",
                          "--out", str(tmp_path / "out"))
    assert code == 1
    assert "bad.jpg" in err and "1 of 2" in err and "Traceback" not in err
    assert (tmp_path / "out" / "good.jpg").is_file() and not (tmp_path / "out" / "bad.jpg").exists()
    assert "not an image" in out  # the table names the reason


def test_score_threshold_filters(tmp_path, capsys, fake_load):
    img = images(tmp_path, ("a.jpg",))[0]
    code, _, err = call(capsys, "predict", str(img), "-c", "m.pth", "--out", str(tmp_path / "o"), "--score-thr", "0.8")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "a.json").read_text())["detections"] == []


def test_show_semantic_needs_a_semantic_head(tmp_path, capsys, fake_load):
    img = images(tmp_path, ("a.jpg",))[0]
    code, _, err = call(capsys, "predict", str(img), "-c", "m.pth", "--show-semantic", "--out", str(tmp_path / "o"))
    assert code == 2 and "no semantic head" in err
    code, _, err = call(capsys, "predict", str(img), "-c", "m.pth", "--preset", "htc-r50-1x", "--show-semantic",
                        "--out", str(tmp_path / "o"))
    assert code == 0, err


def test_nothing_to_read_is_exit_2(tmp_path, capsys, fake_load):
    code, _, err = call(capsys, "predict", str(tmp_path / "missing.jpg"), "-c", "m.pth")
    assert code == 2 and "missing.jpg" in err and fake_load == []  # no model loaded for nothing


def test_bad_score_thr_is_usage_error(tmp_path, capsys, fake_load):
    img = images(tmp_path, ("a.jpg",))[0]
    code, _, _ = call(capsys, "predict", str(img), "--score-thr", "2")
    assert code == 2


def test_without_checkpoint_uses_released_file(tmp_path, capsys, monkeypatch, fake_load):
    from nuimcli import zoo

    monkeypatch.setenv("NUIM_HOME", str(tmp_path / "home"))
    img = images(tmp_path, ("a.jpg",))[0]
    entry = zoo.get_entry("mask-rcnn-r50-1x")
    entry.path.parent.mkdir(parents=True)
    entry.path.write_bytes(b"cached")  # already downloaded: used as is
    code, _, err = call(capsys, "predict", str(img), "--preset", "mask-rcnn-r50-1x", "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert fake_load == [(str(entry.path), None, "cpu")]


def test_without_checkpoint_offline_says_how(tmp_path, capsys, monkeypatch, fake_load):
    from nuimcli import zoo

    monkeypatch.setenv("NUIM_HOME", str(tmp_path / "home"))
    (tmp_path / "mirror").mkdir()
    monkeypatch.setenv("NUIM_ZOO_URL", str(tmp_path / "mirror"))  # an empty mirror: the file is not there
    img = images(tmp_path, ("a.jpg",))[0]
    best = zoo.best_released(None)
    assert best.mask_ap == max(e.mask_ap for e in zoo.registry() if e.released)
    code, _, err = call(capsys, "predict", str(img), "--out", str(tmp_path / "o"))
    assert code == 2 and fake_load == []
    flat = " ".join(err.split())
    assert best.checkpoint_url in flat and str(best.path) in flat and "--checkpoint" in flat
    code, _, err = call(capsys, "predict", str(img), "--preset", "htc-r50-1x")
    assert code == 2 and "no released checkpoint" in err


def test_real_checkpoint_end_to_end(tmp_path):
    """`nuim predict --checkpoint FILE` in a fresh process with a real (known-answer) checkpoint."""
    import subprocess
    import sys

    from pycocotools import mask as mask_util

    sys.path.insert(0, str(Path(__file__).parent))
    from test_eval_cli import known_answer_checkpoint  # one known-answer checkpoint for both CLI tests

    model = known_answer_checkpoint(tmp_path / "known.pth")
    good = images(tmp_path / "in", ("street.jpg",))[0]
    (tmp_path / "in" / "notes.jpg").write_text("text")
    r = subprocess.run([sys.executable, "-m", "nuimcli", "predict", str(tmp_path / "in"), "--checkpoint",
                        str(tmp_path / "known.pth"), "--out", str(tmp_path / "out"), "--threads", "1"],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 1, r.stderr  # notes.jpg is not an image
    assert "notes.jpg" in r.stderr and "street.jpg" in r.stdout and "pedestrian×3" in r.stdout
    rec = json.loads((tmp_path / "out" / "street.json").read_text())
    (pred,) = model.predict([cv2.imread(str(good))])
    assert len(rec["detections"]) == 3
    for d, m in zip(rec["detections"], pred.masks):
        np.testing.assert_array_equal(mask_util.decode(d["mask"]).astype(bool), m)
    assert cv2.imread(str(tmp_path / "out" / "street.jpg")).shape == (60, 80, 3)


def test_many_inputs_summarised_per_class(tmp_path, capsys, fake_load):
    images(tmp_path / "many", [f"f{i:02d}.jpg" for i in range(21)])
    code, out, err = call(capsys, "predict", str(tmp_path / "many"), "-c", "m.pth", "--out", str(tmp_path / "o"))
    assert code == 0, err
    flat = " ".join(out.split())
    assert "21 image(s) written, 0 failed, 21 detections" in flat and "bus" in flat and "f07.jpg" not in flat
    assert len(list((tmp_path / "o").glob("*.json"))) == 21


def test_preset_without_released_file_says_so(tmp_path, capsys):
    img = images(tmp_path, ("a.jpg",))[0]
    code, _, err = call(capsys, "predict", str(img), "--preset", "mask-rcnn-r18-tiny", "--out", str(tmp_path / "o"))
    assert code == 2 and "has no released checkpoint" in err and "--checkpoint" in err
    code, _, err = call(capsys, "predict", str(img), "--preset", "mask-rcnn-r18-tin", "--out", str(tmp_path / "o"))
    assert code == 2 and "did you mean 'mask-rcnn-r18-tiny'" in err
