"""Atomic output: nothing under the final name unless the write completed."""

from __future__ import annotations

import json
import os
import stat

import pytest

from nuimcli.utils.io import atomic_path, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_and_keeps_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    atomic_write_text(target, "x")
    assert target.read_text() == "x"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_resolve_device():
    from nuimcli.errors import UserError
    from nuimcli.utils.device import resolve_device
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")


def test_cli_start_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from nuimcli.cli import _register_commands; _register_commands(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
