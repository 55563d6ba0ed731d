"""torch.distributed plumbing: torchrun environments, local spawning, small collectives.

Two ways to get a data-parallel world (:func:`nuimcli.engine.launch.launch` picks one):

* ``torchrun`` (single or multi node) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`world_from_env` reads them.
* ``--gpus N`` on one machine: :func:`spawn` starts N processes on 127.0.0.1 with a free port;
  an exception in one of them is raised again in the parent as that exception (pickled
  through a queue, its traceback text attached as the cause), and rank 0's return value comes
  back the same way.

The backend is NCCL on CUDA and gloo on CPU (tests run two CPU processes with gloo).
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

import torch
import torch.distributed as dist

from nuimcli.errors import RunFailed, UserError

T = TypeVar("T")


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
    """NCCL for CUDA devices (when built in), gloo otherwise."""
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
    """Wait for every rank (no-op outside a process group)."""
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


def portable_exception(e: BaseException) -> BaseException:
    """``e`` if it survives pickling (to cross a process boundary as itself), else a
    :class:`RuntimeError` carrying its type name and message."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 — any unpicklable exception is replaced, never lost
        return RuntimeError(f"{type(e).__name__}: {e}")


def once_per_node(fn: Callable[[bool], T]) -> T:
    """``fn(True)`` on local rank 0 of each node, one node after the other, then ``fn(False)``
    on every other rank; outside a process group simply ``fn(True)``.

    For downloads into a per-node cache: each node fetches once (no shared file system is
    needed, and where the cache is shared the later nodes find the file already there instead of
    writing the same ``.part`` at once). An exception on a leader is raised on every rank, so
    no rank waits for one that failed. Every rank must call it (it is a collective).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return fn(True)
    rank = dist.get_rank()
    leader = int(os.environ.get("LOCAL_RANK", rank)) == 0
    leaders: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(leaders, leader)
    result: Any = None
    for src, is_leader in enumerate(leaders):
        if not is_leader:
            continue
        box: list[Any] = [None]
        if rank == src:
            try:
                result = fn(True)
            except Exception as e:  # noqa: BLE001 — shared below, then raised on every rank
                box[0] = portable_exception(e)
        dist.broadcast_object_list(box, src=src)
        if box[0] is not None:
            raise box[0]
    return result if leader else fn(False)


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in another process (attached as ``__cause__``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _spawn_entry(local_rank: int, fn: Callable, nprocs: int, port: int, args: tuple, replies: Any) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(local_rank),
                       "WORLD_SIZE": str(nprocs), "LOCAL_RANK": str(local_rank)})
    try:
        value = fn(World(rank=local_rank, size=nprocs, local_rank=local_rank), *args)
    except BaseException as e:
        replies.put((local_rank, portable_exception(e), traceback.format_exc()))
        # The error is on its way to the parent; leave at once with a non-zero status (the parent
        # stops the other processes). A normal interpreter exit would run the C++ destructors of a
        # still-joined gloo group, whose worker threads can abort with "terminate called without
        # an active exception" on stderr, a second line after the one-line error.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    if local_rank == 0:
        replies.put((0, None, value))


def spawn(fn: Callable[..., Any], nprocs: int, args: tuple = ()) -> Any:
    """Run ``fn(world, *args)`` in ``nprocs`` fresh processes on this machine (one per GPU) and
    return rank 0's return value.

    ``fn``, ``args`` and the return value must be picklable (``fn`` a module-level function).
    An exception in any process stops the others and is raised here as the same exception type
    with the same message (the worker's traceback text as its ``__cause__``); a process killed
    without one (e.g. by the OOM killer) is a :class:`RunFailed`.
    """
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    replies = mp.get_context("spawn").SimpleQueue()
    port = free_port()
    ctx = mp.start_processes(_spawn_entry, args=(fn, nprocs, port, args, replies), nprocs=nprocs, join=False,
                             start_method="spawn")
    value: Any = None
    errors: list[tuple[BaseException, str]] = []  # in the order they were raised
    failure: Optional[ProcessException] = None

    def drain() -> None:
        # Read while the workers run: a large result would otherwise fill the pipe and block its writer.
        nonlocal value
        while not replies.empty():
            _, error, payload = replies.get()
            if error is None:
                value = payload
            else:
                errors.append((error, payload))

    # join() stops the other processes when one fails and logs a warning per process; the error
    # raised below says what failed, in one line.
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")
    level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)
    try:
        while True:
            drain()
            try:
                if ctx.join(timeout=0.2):
                    break
            except ProcessException as e:
                failure = e
                break
    finally:
        spawn_log.setLevel(level)
    drain()
    if failure is None:
        return value
    if errors:
        # The first one raised is the cause; the others are ranks losing their peer because of it.
        error, tb = errors[0]
        raise error from RemoteTraceback(tb)
    raise RunFailed(f"process {failure.error_index} of {nprocs} stopped without an error message ({failure})")
