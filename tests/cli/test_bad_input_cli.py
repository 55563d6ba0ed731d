"""Bad input a new user would try, across commands: one line on stderr, the right exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from nuimcli.cli import main


def nuim(capsys, *args: str) -> tuple[int, str, str]:
    """Run `nuim ARGS` in process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


@pytest.mark.parametrize("args, flag", [
    (["convert", "--data-root", "data", "--out-dir", "{F}"], "--out-dir"),
    (["predict", "img.jpg", "--checkpoint", "x.pth", "--out", "{F}"], "--out"),
    (["train", "mask-rcnn-r18-tiny", "--work-dir", "{F}"], "--work-dir"),
    (["eval", "--results", "r.json", "--ann-file", "a.json", "--out", "{F}"], "--out"),
    (["demo", "--out", "{F}"], "--out"),
    (["demo", "--out", "{F}/inside"], "--out"),
    (["zoo", "download", "mask-rcnn-r50-1x"], "$NUIM_HOME"),
])
def test_an_output_location_that_is_a_file(args, flag, tmp_path, monkeypatch, capsys):
    f = tmp_path / "F"
    f.write_text("not a folder")
    monkeypatch.setenv("NUIM_HOME", str(f))
    monkeypatch.chdir(tmp_path)
    code, out, err = nuim(capsys, *[a.replace("{F}", str(f)) for a in args])
    assert code == 2, err
    assert err.startswith(f"error: {flag} {f}") and "is a file" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f.read_text() == "not a folder"


def test_root_version_option(capsys):
    import nuimcli

    code, out, err = nuim(capsys, "--version")
    assert code == 0 and out.strip() == f"nuim {nuimcli.__version__}"


@pytest.mark.parametrize("args", [
    ["eval", "--checkpoint", "{evil}", "--ann-file", "{ann}"],
    ["predict", "{img}", "--checkpoint", "{evil}", "--out", "{out}"],
])
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(args, tmp_path, monkeypatch, capsys):
    import cv2
    import numpy as np

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))  # tests/evil_checkpoint.py
    from evil_checkpoint import write_evil_checkpoint

    marker = tmp_path / "pwned"
    evil = write_evil_checkpoint(tmp_path / "evil.pth", marker)
    ann = tmp_path / "val.json"
    ann.write_text('{"images": [], "annotations": [], "categories": []}')
    img = tmp_path / "a.jpg"
    cv2.imwrite(str(img), np.zeros((20, 30, 3), np.uint8))
    subst = {"{evil}": str(evil), "{ann}": str(ann), "{img}": str(img), "{out}": str(tmp_path / "out")}
    code, _, err = nuim(capsys, *[subst.get(a, a) for a in args])
    assert code == 2, err
    assert err.startswith(f"error: {evil}: refused: ") and "--trust-checkpoint" in err
    assert len(err.strip().splitlines()) == 1 and not marker.exists()
