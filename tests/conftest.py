"""Suite-wide fixtures: every test starts from the same global state and leaves it as it found it.

Results of the learning tests depend on float reduction order (torch's thread count) and on the
global RNGs; a CLI test that runs ``--threads 1`` in-process, or seeds torch, used to change what
a later test computed, so the suite's outcome depended on file order. The autouse fixture below
seeds the RNGs at the start of every test and restores, after it, the torch thread count, the
RNG states, the default dtype, the process environment and the working directory.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch


@pytest.fixture
def nuimages_devkit():
    """The nuScenes devkit's ``nuimages`` module, or skip the test when it is not installed.

    With ``NUIM_REQUIRE_DEVKIT=1`` (the devkit environment of ``.ci/run``) a missing devkit is a
    failure, not a skip, so the cross-checks cannot silently stop running.
    """
    if os.environ.get("NUIM_REQUIRE_DEVKIT") == "1":
        import nuimages  # an ImportError fails the test

        return nuimages
    return pytest.importorskip("nuimages", reason="nuscenes-devkit not installed (pip install '.[test,devkit]')")


def learning_seeds() -> list[int]:
    """Seeds the learning tests run with: ``0`` in CI; ``NUIM_LEARNING_SEEDS=0-4`` (or ``1,5,9``) by hand
    runs every learning test once per seed, to measure its margin (each prints its figures)."""
    spec = os.environ.get("NUIM_LEARNING_SEEDS", "0").strip()
    if "-" in spec:
        lo, hi = spec.split("-", 1)
        return list(range(int(lo), int(hi) + 1))
    return [int(v) for v in spec.split(",") if v.strip()]


def pytest_generate_tests(metafunc):
    if "learning_seed" in metafunc.fixturenames:
        metafunc.parametrize("learning_seed", learning_seeds())


def pytest_collection_modifyitems(config, items):
    # every test that uses the devkit is selectable with `pytest -m devkit`
    for item in items:
        if "nuimages_devkit" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.devkit)


@pytest.fixture(autouse=True)
def _isolated_global_state(monkeypatch):
    threads = torch.get_num_threads()
    dtype = torch.get_default_dtype()
    torch_rng = torch.get_rng_state()
    np_rng = np.random.get_state()
    py_rng = random.getstate()
    env = dict(os.environ)
    cwd = os.getcwd()
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.set_rng_state(torch_rng)
    np.random.set_state(np_rng)
    random.setstate(py_rng)
    for key in set(os.environ) - set(env):
        del os.environ[key]
    os.environ.update(env)
    os.chdir(cwd)
