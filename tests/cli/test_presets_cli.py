"""`nuim presets` end to end, and the CLI's exit codes for bad usage."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_nuim(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nuimcli", *args], capture_output=True, text=True, **kw)


def test_presets_json_lists_every_row():
    r = run_nuim("presets", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["row"] for x in rows[:17]] == list(range(1, 18))
    first = rows[0]
    assert first["name"] == "mask-rcnn-r50-1x" and first["box_ap"] == 47.8 and first["released"] is True
    assert {x["name"] for x in rows if not x["released"]} >= {"mask-rcnn-r50-caffe-1x", "htc-r50-1x", "htc-r50-nosemantic-1x"}


def test_presets_table_is_readable():
    r = run_nuim("presets", env={"COLUMNS": "200", "PATH": ""})
    assert r.returncode == 0, r.stderr
    assert "mask-rcnn-r50-1x" in r.stdout and "57.3" in r.stdout


def test_piped_table_keeps_every_name_whole():
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    r = run_nuim("presets", env=env)  # stdout is a pipe: no terminal width to follow
    assert r.returncode == 0, r.stderr
    names = [x["name"] for x in json.loads(run_nuim("presets", "--json").stdout)]
    assert all(name in r.stdout for name in names), r.stdout


def test_unknown_command_is_bad_usage():
    r = run_nuim("no-such-command")
    assert r.returncode == 2


def test_multi_value_options_are_expanded():
    from nuimcli.cli import expand_multi_value_options

    assert expand_multi_value_options(["convert", "--version", "a", "b", "--nproc", "2"]) == [
        "convert", "--version", "a", "--version", "b", "--nproc", "2"]
    assert expand_multi_value_options(["--version", "a", "--version", "b"]) == ["--version", "a", "--version", "b"]
    assert expand_multi_value_options(["--version"]) == ["--version"]
