"""Your own classes end to end: a synthetic nuImages set merged into vehicle / person / cone / barrier,
`nuim train --load-from <10-class checkpoint> --classes vehicle,person,cone`, then eval and predict.

The fine-tuning learning test runs in a fresh interpreter (as tests/engine/test_trainer.py's overfit
test does, for the same reason: a chaotic short training must not depend on what earlier tests left
in the process) and reports its margin; eval and predict of its checkpoint run here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nuimcli.cli import main

MAPS = ["vehicle=car,truck,trailer,bus,construction_vehicle,bicycle,motorcycle", "person=pedestrian",
        "cone=traffic_cone", "barrier=barrier"]
NEW = ["vehicle", "person", "cone"]  # --classes: barrier is in the file but not trained
FINETUNE_ITERS = 30
#: half the tiny preset's image size: 4x fewer pixels keeps the test near half a minute on 2 busy cores
SMALL = ["--set", "data.train_scales=[[192, 108], [192, 108]]", "--set", "data.test_scale=[192, 108]"]


def nuim(*args: str) -> int:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code or 0


def make_merged_set(work: Path, seed: int, num_samples: int = 4) -> tuple[Path, Path]:
    """A synthetic nuImages train split, converted, merged into :data:`MAPS`; and a 10-class
    tiny-preset checkpoint (random weights, seeded) to fine-tune from. Returns (data root, donor)."""
    from nuimcli.checkpoints import save_checkpoint
    from nuimcli.data.convert import convert
    from nuimcli.data.merge_classes import main as merge_main
    from nuimcli.models.build import build_model
    from nuimcli.presets import load_preset
    from nuimcli.synthetic import generate_nuimages

    root = work / "nuim"
    generate_nuimages(root, version="v1.0-train", num_samples=num_samples, width=384, height=216, seed=1 + seed,
                      sweeps_per_sample=0, objects_per_image=(2, 5), null_mask_fraction=0.0)
    convert(root, ["v1.0-train"], nproc=0)
    src = root / "annotations" / "nuimages_v1.0-train.json"
    args = [str(src), str(root / "merged.json")]
    for m in MAPS:
        args += ["--map", m]
    assert merge_main(args) == 0
    preset = load_preset("mask-rcnn-r18-tiny")
    torch.manual_seed(100 + seed)
    donor = save_checkpoint(work / "donor10.pth", build_model(preset), preset)
    return root, donor


def finetune_merged(work: str, seed: int) -> dict:
    """Fine-tune the tiny preset from a 10-class checkpoint on the merged set (3 of its 4 classes)
    through `nuim train`; returns the loss at the start and at the end (mean of the last 5)."""
    work_p = Path(work)
    root, donor = make_merged_set(work_p, seed)
    code = nuim("train", "mask-rcnn-r18-tiny", "--data-root", root, "--train-ann", root / "merged.json",
                "--load-from", donor, "--classes", ",".join(NEW), "--work-dir", work_p / "run",
                "--max-iters", FINETUNE_ITERS, "--seed", seed, "--no-eval", "--no-tensorboard", "--log-interval", 1,
                "--device", "cpu", "--set", "schedule.epochs=1000", "--set", "schedule.lr_steps=[999]", *SMALL)
    assert code == 0
    lines = [json.loads(x) for x in (work_p / "run" / "log.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if x["mode"] == "train"]
    return dict(iters=len(losses), start=losses[0], end=float(np.mean(losses[-5:])), info=lines[0])


@pytest.mark.slow
def test_finetune_on_merged_classes_learns_and_eval_predict_use_the_new_names(tmp_path, learning_seed, monkeypatch):
    """Loss falls to <= 0.6 x its start in 30 iterations; the checkpoint's classes drive eval and predict.

    Margins, by hand: ``NUIM_LEARNING_SEEDS=0-2 pytest -s -m slow tests/engine/test_own_classes.py``.
    """
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_own_classes as t; "
            "print(json.dumps(t.finetune_merged(sys.argv[2], int(sys.argv[3]))))")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path), str(learning_seed)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nLEARNING finetune seed={learning_seed}: loss end/start {r['end'] / r['start']:.3f} (threshold 0.6)")
    assert r["iters"] == FINETUNE_ITERS
    assert r["end"] <= 0.6 * r["start"], r
    info = r["info"]
    assert info["classes"] == NEW
    assert info["load_from"]["source_classes"][:2] == ["car", "truck"]
    assert "roi_head.bbox_head.fc_cls.weight" in info["load_from"]["reinitialised"]
    assert "proposals" not in info["load_from"]["reinitialised"]

    ckpt = tmp_path / "run" / "latest.pth"
    meta = torch.load(ckpt, weights_only=True)["meta"]
    assert list(meta["CLASSES"]) == NEW and list(meta["dataset_meta"]["classes"]) == NEW

    root = tmp_path / "nuim"
    out = tmp_path / "eval"
    assert nuim("eval", "--checkpoint", ckpt, "--data-root", root, "--ann-file", root / "merged.json",
                "--out", out, "--device", "cpu") == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert set(doc["bbox"]["per_class"]) <= set(NEW) and doc["bbox"]["per_class"]  # barrier is not evaluated

    import nuimcli.engine.predict as predict_mod

    drawn: list = []
    real_draw = predict_mod.draw_predictions
    monkeypatch.setattr(predict_mod, "draw_predictions",
                        lambda *a, **k: drawn.append(tuple(k["classes"])) or real_draw(*a, **k))
    images = sorted((root / "samples").rglob("*.jpg"))[:2]
    assert nuim("predict", *images, "--checkpoint", ckpt, "--out", tmp_path / "pred", "--score-thr", "0.05",
                "--device", "cpu") == 0
    assert drawn and all(c == tuple(NEW) for c in drawn)  # the pictures' tags are named from the checkpoint
    dets = [d for p in (tmp_path / "pred").glob("*.json") for d in json.loads(p.read_text())["detections"]]
    assert dets, "the fine-tuned model should find something at score >= 0.05"
    assert {d["category"] for d in dets} <= set(NEW)
