"""The built wheel holds every package of the source tree, and the installed wheel runs.

``pyproject.toml`` lists packages by hand; a subpackage missing from that list still works from
a source checkout (and an editable install) but is absent from a real install. So the wheel is
built here and compared with the tree: a forgotten package fails this test.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _source_packages() -> dict[str, set[str]]:
    """Package folder in the wheel (``nuimcli/data``) -> the module files it must hold."""
    out = {}
    for init in (REPO / "nuimcli").rglob("__init__.py"):
        folder = init.parent
        out[folder.relative_to(REPO).as_posix()] = {p.name for p in folder.glob("*.py")}
    out["nuimcli/_presets"] = {p.name for p in (REPO / "presets").iterdir() if p.suffix in (".py", ".yaml")}
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the tree (the build writes ``build/`` and ``*.egg-info``)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("nuimcli", "presets"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)]
    if importlib.util.find_spec("setuptools") is not None:
        cmd.insert(5, "--no-build-isolation")  # offline: build with the setuptools already here
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = (tmp / "dist").glob("nuimcli-*.whl")
    return whl


def test_wheel_holds_every_package_of_the_source_tree(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    in_wheel: dict[str, set[str]] = {}
    for n in names:
        folder, _, file = n.rpartition("/")
        if folder.startswith("nuimcli"):
            in_wheel.setdefault(folder, set()).add(file)
    for folder, files in _source_packages().items():
        assert folder in in_wheel, f"{folder} is not in the wheel: add it to [tool.setuptools] packages in pyproject.toml"
        assert files <= in_wheel[folder], f"{folder}: missing from the wheel: {sorted(files - in_wheel[folder])}"


def test_installed_wheel_imports_every_module_and_generates_data(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)  # a pure-Python wheel installs by unpacking
    code = (
        "import pkgutil, nuimcli, nuimcli.presets as p\n"
        "assert nuimcli.__file__.startswith(%r), nuimcli.__file__\n"
        "for m in pkgutil.walk_packages(nuimcli.__path__, 'nuimcli.'):\n"
        "    __import__(m.name)\n"
        "from nuimcli.synthetic import generate_nuimages\n"
        "s = generate_nuimages(%r, num_samples=2, width=64, height=48, sweeps_per_sample=0)\n"
        "print(len(p.list_presets()), s.num_images_written)\n"
    ) % (str(site), str(tmp_path / "data"))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(site), "PATH": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["18", "2"]
