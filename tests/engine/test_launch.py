"""The one launcher (nuimcli.engine.launch): one process, spawned workers, torchrun; exceptions
cross the process boundary as themselves, rank 0's value comes back."""

from __future__ import annotations

import pytest

from nuimcli.engine.distributed import RemoteTraceback, World, portable_exception
from nuimcli.engine.launch import launch
from nuimcli.errors import UserError


def _fail_on_rank1(world: World, device: str, message: str) -> None:
    from nuimcli.engine.distributed import barrier
    from nuimcli.engine.trainer import TrainingDiverged

    if world.rank == 1:
        raise TrainingDiverged(message)
    barrier()  # rank 0 waits for a rank that never comes: the launcher must stop it


def _who(world: World, device: str, tag: str) -> tuple:
    import torch.distributed as dist

    ranks = [None] * world.size
    dist.all_gather_object(ranks, (world.rank, world.local_rank, device))
    return tag, world.size, ranks


def test_one_process_runs_here():
    seen = []
    assert launch(lambda w, d, x: seen.append((w, d, x)) or "value", ("arg",), device="cpu") == "value"
    assert seen == [(World(), "cpu", "arg")]


def test_worker_exception_arrives_as_that_exception():
    from nuimcli.engine.trainer import TrainingDiverged

    with pytest.raises(TrainingDiverged) as e:
        launch(_fail_on_rank1, ("training diverged at iteration 3",), gpus=2, device="cpu")
    assert str(e.value) == "training diverged at iteration 3" and e.value.exit_code == 1
    cause = e.value.__cause__
    assert isinstance(cause, RemoteTraceback) and "_fail_on_rank1" in str(cause)  # the worker's traceback text


def test_rank0_value_comes_back_from_two_processes():
    tag, size, ranks = launch(_who, ("x",), gpus=2, device="cpu")
    assert (tag, size) == ("x", 2)
    assert ranks == [(0, 0, "cpu"), (1, 1, "cpu")]


def test_unpicklable_exception_keeps_type_name_and_message():
    class Local(Exception):  # a local class cannot be pickled by reference
        pass

    e = portable_exception(Local("no pickle"))
    assert type(e) is RuntimeError and str(e) == "Local: no pickle"
    ok = UserError("fine")
    assert portable_exception(ok) is ok


def test_gpus_under_torchrun_is_a_user_error(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="under torchrun use --nproc-per-node"):
        launch(_who, ("x",), gpus=2, device="cpu")


def test_cuda_gpus_without_cuda_is_a_user_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(UserError, match="CUDA is not available"):
        launch(_who, ("x",), gpus=2, device="cuda")
