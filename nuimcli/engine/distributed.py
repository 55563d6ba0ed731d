"""torch.distributed plumbing for training: torchrun environments, local spawning, small collectives.

Two ways to get a data-parallel world:

* ``torchrun`` (single or multi node) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`world_from_env` reads them.
* ``nuim train --gpus N`` on one machine: :func:`spawn` starts N processes on 127.0.0.1 with a
  free port (``torch.multiprocessing.spawn``).

The backend is NCCL on CUDA and gloo on CPU (tests run two CPU processes with gloo).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

from nuimcli.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place in the data-parallel world (``size == 1``: not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env(environ: Optional[dict] = None) -> Optional[World]:
    """The world torchrun (or ``torch.distributed.launch``) describes in the environment, if any."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        size = int(env["WORLD_SIZE"])
        rank = int(env["RANK"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise UserError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)") from None
    if size < 1 or not 0 <= rank < size:
        raise UserError(f"RANK={rank} is outside WORLD_SIZE={size}")
    return World(rank=rank, size=size, local_rank=local)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backend_for(device: str) -> str:
    return "nccl" if str(device).startswith("cuda") and dist.is_nccl_available() else "gloo"


def init(world: World, device: str, init_method: Optional[str] = None, timeout_s: float = 1800.0) -> None:
    """Join the process group (no-op for a one-process world).

    ``init_method`` defaults to ``env://`` (torchrun's MASTER_ADDR/MASTER_PORT).
    """
    if not world.distributed or dist.is_initialized():
        return
    import datetime

    dist.init_process_group(
        backend=backend_for(device),
        init_method=init_method or "env://",
        rank=world.rank,
        world_size=world.size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def cleanup() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def reduce_mean(values: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean of each scalar over the ranks (every rank must call it with the same keys)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _spawn_entry(local_rank: int, fn: Callable, nprocs: int, port: int, args: tuple) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(local_rank),
                       "WORLD_SIZE": str(nprocs), "LOCAL_RANK": str(local_rank)})
    fn(World(rank=local_rank, size=nprocs, local_rank=local_rank), *args)


def spawn(fn: Callable[..., Any], nprocs: int, args: tuple = ()) -> None:
    """Run ``fn(world, *args)`` in ``nprocs`` fresh processes on this machine (one per GPU).

    ``fn`` must be picklable (a module-level function). An exception in any process is raised here.
    """
    import torch.multiprocessing as mp

    port = free_port()
    mp.spawn(_spawn_entry, args=(fn, nprocs, port, args), nprocs=nprocs, join=True)
