"""Ctrl-C in every command: one line ``interrupted: kept …; continue with `…` ``, exit code 130,
and no half-written file under a final name.

The interruption is a ``KeyboardInterrupt`` raised from inside each job (monkeypatched), in
process; one test sends a real SIGINT to a ``nuim convert`` process group, as a terminal does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nuimcli.cli import main


def nuim(capsys, *args: str) -> tuple[int, str, str]:
    """Run `nuim ARGS` in process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")


def one_interrupted_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("interrupted: kept "), err
    return lines[-1]


def no_temp_files(folder: Path) -> None:
    hidden = [p for p in folder.rglob(".*") if p.is_file() and not p.name.startswith(".nuim-convert")]
    assert hidden == [], hidden


@pytest.fixture(scope="module")
def nuimages(tmp_path_factory) -> Path:
    from nuimcli.synthetic import generate_nuimages

    root = tmp_path_factory.mktemp("nuim")
    generate_nuimages(root, version="v1.0-mini", num_samples=6, width=160, height=90, seed=3,
                      sweeps_per_sample=0, objects_per_image=(1, 3), null_mask_fraction=0.0)
    return root


def test_convert(nuimages, tmp_path, monkeypatch, capsys):
    from nuimcli.data import convert_worker

    out = tmp_path / "ann"
    real = convert_worker.WorkerState.process
    calls = []

    def process(self, item):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, item)

    monkeypatch.setattr(convert_worker.WorkerState, "process", process)
    args = ["convert", "--data-root", nuimages, "--out-dir", out, "--nproc", "0"]
    code, _, err = nuim(capsys, *args)
    line = one_interrupted_line(err)
    assert code == 130
    assert f"the finished semantic PNGs in {out / 'semantic_masks'}" in line
    assert f"continue with `nuim convert --data-root {nuimages}" in line and "only the missing PNGs" in line
    assert not (out / "nuimages_v1.0-mini.json").exists() and len(list(out.rglob("*.png"))) == 2
    no_temp_files(out)
    monkeypatch.setattr(convert_worker.WorkerState, "process", real)
    code, _, err = nuim(capsys, *args)  # the command it names finishes the job
    assert code == 0, err
    assert (out / "nuimages_v1.0-mini.json").is_file() and len(list(out.rglob("*.png"))) == 6


def test_predict(tmp_path, monkeypatch, capsys):
    import cv2
    import numpy as np

    import nuimcli
    from nuimcli.engine import predict
    from nuimcli.models.detector import Prediction
    from nuimcli.presets import load_preset

    class Empty:
        preset = load_preset("mask-rcnn-r18-tiny")
        has_semantic_head = False

        def predict(self, images, batch_size=2):
            return [Prediction(boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                               labels=np.zeros(0, np.int64), masks=np.zeros((0, *im.shape[:2]), bool)) for im in images]

    monkeypatch.setattr(nuimcli, "load", lambda *a, **k: Empty())
    real = predict._write_one
    written = []

    def write_one(*args, **kwargs):
        if written:
            raise KeyboardInterrupt
        written.append(real(*args, **kwargs))

    monkeypatch.setattr(predict, "_write_one", write_one)
    (tmp_path / "in").mkdir()
    for n in "abc":
        cv2.imwrite(str(tmp_path / "in" / f"{n}.jpg"), np.full((40, 60, 3), 99, np.uint8))
    out = tmp_path / "out"
    code, _, err = nuim(capsys, "predict", tmp_path / "in", "-c", "m.pth", "--out", out, "--batch-size", "1")
    line = one_interrupted_line(err)
    assert code == 130
    assert f"kept the pictures and JSON files already written to {out}; start again with `nuim predict" in line
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.json"]
    no_temp_files(out)


def test_eval(tmp_path, monkeypatch, capsys):
    import nuimcli

    def load(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nuimcli, "load", load)
    ann = tmp_path / "val.json"
    ann.write_text('{"images": [], "annotations": [], "categories": []}')
    code, _, err = nuim(capsys, "eval", "-c", "m.pth", "--ann-file", ann, "--out", tmp_path / "o")
    line = one_interrupted_line(err)
    assert code == 130 and "kept nothing (metrics.json and results.json are written at the end)" in line
    assert "start again with `nuim eval -c m.pth" in line


def test_zoo_download(tmp_path, monkeypatch, capsys):
    from nuimcli import zoo

    monkeypatch.setenv("NUIM_HOME", str(tmp_path / "home"))

    def download_entry(entry, **kwargs):
        entry.path.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{entry.path}.part").write_bytes(b"first bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo, "download_entry", download_entry)
    code, _, err = nuim(capsys, "zoo", "download", "mask-rcnn-r50-1x")
    line = one_interrupted_line(err)
    part = f"{zoo.get_entry('mask-rcnn-r50-1x').path}.part"
    assert code == 130 and f"kept 0 finished file(s) and the partial download {part}" in line
    assert "continue with `nuim zoo download mask-rcnn-r50-1x` (each download resumes where it stopped)" in line


def test_demo(tmp_path, monkeypatch, capsys):
    import nuimcli.synthetic as synthetic

    def write(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_default_demo_set", write)
    code, _, err = nuim(capsys, "demo", "--out", tmp_path / "d")
    line = one_interrupted_line(err)
    assert code == 130 and f"kept what the finished steps wrote under {tmp_path / 'd'}" in line
    assert "start again with `nuim demo --out" in line


def test_train_stopped_cleanly_names_its_checkpoint(tmp_path, monkeypatch, capsys):
    from nuimcli.engine import trainer

    work = tmp_path / "w"

    def train(preset, opts, world=None):
        return trainer.TrainResult(global_iter=7, epoch=0, interrupted=True, checkpoint=work / "iter_7.pth",
                                   history=[], evaluations=[])

    monkeypatch.setattr(trainer, "train", train)
    code, _, err = nuim(capsys, "train", "mask-rcnn-r18-tiny", "--work-dir", work, "--device", "cpu")
    line = one_interrupted_line(err)
    assert code == 130
    assert line == (f"interrupted: kept {work / 'iter_7.pth'} (saved at iteration 7); continue with "
                    f"`nuim train mask-rcnn-r18-tiny --work-dir {work} --device cpu --resume latest`")


def test_train_stopped_hard(tmp_path, monkeypatch, capsys):
    from nuimcli.engine import trainer

    work = tmp_path / "w"

    def train(preset, opts, world=None):
        raise KeyboardInterrupt  # e.g. a second Ctrl-C

    monkeypatch.setattr(trainer, "train", train)
    args = ["train", "mask-rcnn-r18-tiny", "--work-dir", work, "--device", "cpu"]
    code, _, err = nuim(capsys, *args)
    assert code == 130
    assert "kept nothing yet in" in one_interrupted_line(err) and "start again with `nuim train" in err
    work.mkdir()
    (work / "epoch_2.pth").write_bytes(b"x")
    (work / "latest.pth").symlink_to("epoch_2.pth")
    code, _, err = nuim(capsys, *args)
    line = one_interrupted_line(err)
    assert code == 130 and f"kept the checkpoints in {work} (latest.pth -> epoch_2.pth)" in line
    assert line.endswith("--resume latest`")


def test_a_real_ctrl_c_to_the_process_group(nuimages, tmp_path):
    """SIGINT to the whole group, workers included, as a terminal sends it: one line, exit 130."""
    ready = tmp_path / "ready"
    # One image is slow to paint, so the signal comes while the pool works.
    code = (
        "import sys, time, pathlib\n"
        "from nuimcli.data import convert_worker\n"
        "real = convert_worker.WorkerState.process\n"
        "def slow(self, item):\n"
        f"    pathlib.Path({str(ready)!r}).touch()\n"
        "    time.sleep(60)\n"
        "    return real(self, item)\n"
        "convert_worker.WorkerState.process = slow\n"
        "from nuimcli.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    out = tmp_path / "ann"
    env = dict(os.environ, COLUMNS="300")
    proc = subprocess.Popen([sys.executable, "-c", code, "convert", "--data-root", str(nuimages), "--out-dir", str(out),
                             "--nproc", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert ready.exists(), proc.communicate()[1]
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    line = one_interrupted_line(err)
    assert "continue with `nuim convert" in line
    assert not (out / "nuimages_v1.0-mini.json").exists()
    no_temp_files(out)
