"""`nuim train` end to end: a short run, bare --resume, and clear errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SMALL = ["--set", "model.backbone.depth=18", "--set", "model.fpn_channels=32", "--set", "model.rpn.feat_channels=32",
         "--set", "model.roi.fc_out_channels=64", "--set", "data.train_scales=[[192, 108], [192, 108]]",
         "--set", "model.rpn.train_nms_pre=300", "--set", "model.rpn.train_max_per_img=200"]


def run_nuim(*args: str, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NUIM_HOME=str(kw.pop("home", "/nonexistent-nuim-home")))
    return subprocess.run([sys.executable, "-m", "nuimcli", *args], capture_output=True, text=True, env=env,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from nuimcli.data.convert import convert
    from nuimcli.synthetic import generate_nuimages

    root = tmp_path_factory.mktemp("nuim")
    generate_nuimages(root, version="v1.0-train", num_samples=2, width=192, height=108, seed=5,
                      sweeps_per_sample=0, objects_per_image=(2, 4), null_mask_fraction=0.0)
    convert(root, ["v1.0-train"], nproc=0)
    return root


def test_short_run_then_bare_resume(data_root, tmp_path):
    work = tmp_path / "work"
    base = ["train", "mask-rcnn-r18-tiny", "--data-root", str(data_root), "--work-dir", str(work),
            "--device", "cpu", "--threads", "1", "--log-interval", "1", *SMALL]
    r = run_nuim(*base, "--max-iters", "1")
    assert r.returncode == 0, r.stderr
    assert "scaled linearly" in r.stderr
    # 2 images, batch 2: one iteration is one epoch.
    assert (work / "epoch_1.pth").exists() and (work / "latest.pth").exists() and (work / "preset.yaml").exists()
    r = run_nuim(*base, "--max-iters", "2", "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr
    logs = [json.loads(x) for x in (work / "log.jsonl").read_text().splitlines()]
    steps = [x for x in logs if x["mode"] == "train"]
    assert [x["global_iter"] for x in steps] == [1, 2]
    for k in ("epoch", "iter", "lr", "loss", "loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox",
              "loss_mask", "time"):
        assert k in steps[-1], k


def nuim_inproc(capsys, *args: str) -> subprocess.CompletedProcess:
    """Run ``nuim`` in this process (bad-input paths stop before any heavy work)."""
    from nuimcli.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, e.value.code, out.out, out.err)


def test_unknown_preset_suggests_closest(data_root, capsys):
    r = nuim_inproc(capsys, "train", "mask-rcnn-r50-1y", "--data-root", str(data_root))
    assert r.returncode == 2
    assert "unknown preset" in r.stderr and "mask-rcnn-r50-1x" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_override_key(data_root, capsys):
    r = nuim_inproc(capsys, "train", "mask-rcnn-r18-tiny", "--data-root", str(data_root), "--set", "schedule.lrr=0.1")
    assert r.returncode == 2
    assert "schedule.lrr" in r.stderr and "schedule.lr" in r.stderr and "Traceback" not in r.stderr


def test_missing_image_is_named(data_root, tmp_path, capsys):
    ann = json.loads((data_root / "annotations" / "nuimages_v1.0-train.json").read_text())
    ann["images"][0]["file_name"] = "samples/CAM_FRONT/not-there.jpg"
    p = tmp_path / "train.json"
    p.write_text(json.dumps(ann))
    r = nuim_inproc(capsys, "train", "mask-rcnn-r18-tiny", "--data-root", str(data_root), "--train-ann", str(p),
                    "--work-dir", str(tmp_path / "w"))
    assert r.returncode == 2
    assert "not-there.jpg" in r.stderr and "not found" in r.stderr and "Traceback" not in r.stderr


def test_not_a_coco_file(data_root, tmp_path, capsys):
    p = tmp_path / "bad.json"
    p.write_text('{"hello": 1}')
    r = nuim_inproc(capsys, "train", "mask-rcnn-r18-tiny", "--data-root", str(data_root), "--train-ann", str(p))
    assert r.returncode == 2
    assert "bad.json" in r.stderr and "not a COCO" in r.stderr


def test_resume_without_checkpoint(data_root, tmp_path, capsys):
    r = nuim_inproc(capsys, "train", "mask-rcnn-r18-tiny", "--data-root", str(data_root), "--work-dir", str(tmp_path / "w"),
                 "--resume")
    assert r.returncode == 2 and "latest.pth" in r.stderr


def test_an_error_in_gpus_workers_is_the_same_one_line(data_root, tmp_path, capsys):
    """--gpus 2 (two CPU processes with gloo): the workers' UserError reaches the parent as a
    UserError (exit 2, one line), not as a traceback to search."""
    r = nuim_inproc(capsys, "train", "mask-rcnn-r18-tiny", "--data-root", str(data_root), "--work-dir",
                    str(tmp_path / "w"), "--device", "cpu", "--gpus", "2", "--threads", "1", "--no-tensorboard",
                    "--resume", *SMALL)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {tmp_path / 'w'}: no latest.pth to resume from (train without "
                                             "--resume first)"]


def test_resume_command_repeats_the_invocation():
    import nuimcli.cli.train_cmd as train_cmd

    argv = ["train", "mask-rcnn-r18-tiny", "--data-root", "my data", "--work-dir", "wd", "--resume", "wd/iter_4.pth",
            "--set", "data.samples_per_gpu=1"]
    assert train_cmd.resume_command(argv, "mask-rcnn-r18-tiny", None) == (
        "nuim train mask-rcnn-r18-tiny --data-root 'my data' --work-dir wd --set data.samples_per_gpu=1 "
        "--resume latest")


@pytest.mark.parametrize("flag", ["--resume", "--load-from"])
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(flag, data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))  # tests/evil_checkpoint.py
    from evil_checkpoint import write_evil_checkpoint

    marker = tmp_path / "pwned"
    evil = write_evil_checkpoint(tmp_path / "evil.pth", marker)
    r = nuim_inproc(capsys, "train", "mask-rcnn-r18-tiny", "--data-root", str(data_root), "--work-dir",
                    str(tmp_path / "w"), "--device", "cpu", "--no-tensorboard", flag, str(evil), *SMALL)
    assert r.returncode == 2, r.stderr
    assert f"{evil}: refused: " in r.stderr and "--trust-checkpoint" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()


def test_a_diverging_run_is_one_line_and_keeps_the_last_good_checkpoint(data_root, tmp_path, monkeypatch, capsys):
    import sys

    from nuimcli.engine import trainer
    from nuimcli.presets import load_preset

    real = trainer.parse_losses
    calls = []

    def nan_at_third_step(losses):
        calls.append(1)
        if len(calls) == 3:
            losses = {**losses, "loss_cls": losses["loss_cls"] * float("nan")}
        return real(losses)

    monkeypatch.setattr(trainer, "parse_losses", nan_at_third_step)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    work = tmp_path / "w"
    r = nuim_inproc(capsys, "train", "mask-rcnn-r18-tiny", "--data-root", str(data_root), "--work-dir", str(work),
                    "--device", "cpu", "--threads", "1", "--max-iters", "5", *SMALL)
    assert r.returncode == 1, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    s = load_preset("mask-rcnn-r18-tiny").schedule
    assert line.startswith(f"failed: training diverged at iteration 3 (epoch 3): loss_cls is nan; try a lower lr "
                           f"(--set schedule.lr={s.lr / 2:g})")
    assert f"a longer warm-up (--set schedule.warmup_iters={max(2 * s.warmup_iters, 500)})" in line
    assert line.endswith(f"the last good checkpoint is kept: {work / 'epoch_2.pth'} (continue from it with "
                         f"--resume {work / 'epoch_2.pth'} and the new settings)")
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in work.glob("*.pth")) == ["epoch_1.pth", "epoch_2.pth", "latest.pth"]
    assert (work / "latest.pth").resolve().name == "epoch_2.pth"
    assert r.stderr.count("TensorBoard off: the tensorboard package is not installed") == 1


def test_tensorboard_flag(monkeypatch, tmp_path, capsys):
    from nuimcli.engine import trainer

    seen = []

    def train(preset, opts, world=None):
        seen.append(opts.tensorboard)
        return trainer.TrainResult(1, 1, False, tmp_path / "epoch_1.pth", [], [])

    monkeypatch.setattr(trainer, "train", train)
    for flag, expected in (("--tensorboard", True), ("--no-tensorboard", False)):
        r = nuim_inproc(capsys, "train", "mask-rcnn-r18-tiny", "--work-dir", str(tmp_path), "--device", "cpu", flag)
        assert r.returncode == 0, r.stderr
    assert seen == [True, False]


@pytest.mark.parametrize("text, lr", [("1e-4", 1e-4), ("1e6", 1e6), ("0.01", 0.01)])
def test_set_takes_every_number_form(text, lr, monkeypatch, tmp_path, capsys):
    from nuimcli.engine import trainer

    seen = []

    def train(preset, opts, world=None):
        seen.append(preset.schedule.lr)
        return trainer.TrainResult(1, 1, False, tmp_path / "epoch_1.pth", [], [])

    monkeypatch.setattr(trainer, "train", train)
    r = nuim_inproc(capsys, "train", "mask-rcnn-r18-tiny", "--work-dir", str(tmp_path), "--device", "cpu",
                    "--set", f"schedule.lr={text}")
    assert r.returncode == 0, r.stderr
    assert seen == [lr]
