"""`nuim convert` and `nuim demo` end to end (subprocess), incl. the reference's CLI spelling and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "converter_golden"


def run_nuim(*args: str, **kw) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess (slow start: used where the process matters)."""
    return subprocess.run([sys.executable, "-m", "nuimcli", *map(str, args)], capture_output=True, text=True, **kw)


@pytest.fixture()
def nuim(capsys, monkeypatch):
    """``nuimcli.cli.main(argv)`` in this process -> CompletedProcess-like (returncode, stdout, stderr)."""
    from nuimcli.cli import main

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)
    return run


@pytest.fixture()
def root(tmp_path) -> Path:
    r = tmp_path / "data" / "nuimages"
    shutil.copytree(FIX / "input", r)
    return r


def _same_as_golden(out: Path, versions) -> None:
    exp = set()
    for v in versions:
        assert (out / f"nuimages_{v}.json").read_bytes() == (FIX / "expected" / f"nuimages_{v}.json").read_bytes()
        exp |= {im["file_name"].replace(".jpg", ".png")
                for im in json.loads((FIX / "expected" / f"nuimages_{v}.json").read_text())["images"]}
    got = {str(p.relative_to(out / "semantic_masks")) for p in (out / "semantic_masks").rglob("*.png")}
    assert got == exp
    for name in exp:
        assert (out / "semantic_masks" / name).read_bytes() == (FIX / "expected" / "semantic_masks" / name).read_bytes()


@pytest.mark.parametrize("version_args,in_process", [
    (["--version", "v1.0-mini", "v1.0-val"], False),               # nargs='+' as typed for the reference
    (["--version", "v1.0-mini", "--version", "v1.0-val"], True),   # repeated flag
])
def test_several_versions_json_summary(root, tmp_path, nuim, version_args, in_process):
    out = tmp_path / "out"
    r = (nuim if in_process else run_nuim)("convert", "--data-root", root, *version_args, "--out-dir", out,
                                           "--nproc", "2", "--json")
    assert r.returncode == 0, r.stderr
    summaries = json.loads(r.stdout)
    assert [s["version"] for s in summaries] == ["v1.0-mini", "v1.0-val"]
    assert [s["annotations"] for s in summaries] == [192, 48]
    assert summaries[0]["null_object_masks"] == 2 and summaries[0]["annotations_per_class"]["car"] == 73
    _same_as_golden(out, ["v1.0-mini", "v1.0-val"])


def test_defaults_and_table(root, nuim):
    # --version defaults to v1.0-mini, --out-dir to <data-root>/annotations, --extra-tag to nuimages.
    r = nuim("convert", "--data-root", root, "--nproc", "1", env={"COLUMNS": "160"})
    assert r.returncode == 0, r.stderr
    _same_as_golden(root / "annotations", ["v1.0-mini"])
    assert not (root / "annotations" / "nuimages_v1.0-val.json").exists()
    for needle in ("images (key frames)", "192", "null object masks dropped", "PNGs written", "nuimages_v1.0-mini.json"):
        assert needle in r.stdout
    assert not (root.parent / "calibrated").exists() and not (root / "calibrated").exists()

    r = nuim("convert", "--data-root", root, "--extra-tag", "mine", "--nproc", "0", "--json")
    assert r.returncode == 0, r.stderr
    [s] = json.loads(r.stdout)
    assert s["pngs_reused"] == 12 and s["pngs_written"] == 0
    assert (root / "annotations" / "mine_v1.0-mini.json").read_bytes() == \
        (root / "annotations" / "nuimages_v1.0-mini.json").read_bytes()


def _one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_bad_input_exit_2_one_line(root, tmp_path, nuim):
    out = tmp_path / "out"
    _one_line_error(nuim("convert", "--data-root", tmp_path / "nope", "--out-dir", out), "nope", "does not exist")
    # brackets in user input are text, not rich markup ("[/2024]" once crashed the error printer)
    _one_line_error(nuim("convert", "--data-root", tmp_path / "runs[/2024]" / "x[old]", "--out-dir", out),
                    "runs[/2024]/x[old]", "does not exist")
    _one_line_error(nuim("convert", "--data-root", root, "--version", "v1.0-trainval", "--out-dir", out),
                    "v1.0-trainval", "does not exist")

    (root / "v1.0-val" / "surface_ann.json").unlink()
    _one_line_error(nuim("convert", "--data-root", root, "--version", "v1.0-val", "--out-dir", out),
                    "surface_ann.json", "missing")

    (root / "v1.0-mini" / "object_ann.json").write_text('[{"token": "x", ')
    _one_line_error(nuim("convert", "--data-root", root, "--out-dir", out), "object_ann.json", "not valid JSON")

    rows = json.loads((FIX / "input" / "v1.0-mini" / "object_ann.json").read_text())
    rows[7]["category_token"] = "0" * 32
    (root / "v1.0-mini" / "object_ann.json").write_text(json.dumps(rows))
    _one_line_error(nuim("convert", "--data-root", root, "--out-dir", out, "--nproc", "2"),
                    "object_ann.json", rows[7]["token"], "0" * 32)
    assert not list(out.glob("*.json"))


def test_corrupt_mask_with_workers_exit_2(root, tmp_path, nuim):
    rows = json.loads((FIX / "input" / "v1.0-mini" / "object_ann.json").read_text())
    i = next(i for i, o in enumerate(rows) if o["mask"] is not None)
    rows[i]["mask"]["counts"] = rows[i]["mask"]["counts"][:-8]
    (root / "v1.0-mini" / "object_ann.json").write_text(json.dumps(rows))
    out = tmp_path / "out"
    _one_line_error(nuim("convert", "--data-root", root, "--out-dir", out, "--nproc", "2"),
                    "object_ann.json", rows[i]["token"], "corrupt mask")
    assert not (out / "nuimages_v1.0-mini.json").exists()


def test_demo_generates_and_converts(tmp_path, nuim, monkeypatch):
    from nuimcli.engine import demo

    # Only the data and convert steps: later steps (training, ...) are tested by their owners.
    monkeypatch.setattr(demo, "DEMO_STEPS", [s for s in demo.DEMO_STEPS if s[0] in ("data", "convert")])
    out = tmp_path / "demo"
    r = nuim("demo", "--out", out, env={"COLUMNS": "300"})
    assert r.returncode == 0, r.stderr
    ann = out / "data" / "nuimages" / "annotations"
    for v in ("v1.0-train", "v1.0-val"):
        d = json.loads((ann / f"nuimages_{v}.json").read_text())
        assert d["images"] and d["annotations"]
        assert str(ann / f"nuimages_{v}.json") in r.stdout
        for im in d["images"]:
            assert (ann / "semantic_masks" / im["file_name"]).with_suffix(".png").is_file()
    assert (out / "data" / "nuimages" / "samples").is_dir()
