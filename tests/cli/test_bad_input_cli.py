"""Bad input a new user would try, across commands: one line on stderr, the right exit code."""

from __future__ import annotations

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
