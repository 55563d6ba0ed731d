"""The one launcher: runs a job's processes for train and eval alike.

:func:`launch` runs ``fn(world, device, *args)``

* in this process (the default);
* in ``--gpus N`` fresh processes on this machine (one per GPU, or N CPU processes with gloo
  when the device is the CPU), through :func:`nuimcli.engine.distributed.spawn`: an exception
  in a worker is raised here as itself, and rank 0's return value comes back;
* as one rank of a ``torchrun`` job (``RANK``/``WORLD_SIZE`` in the environment).

In every process of a multi-process run the device becomes ``cuda:<local rank>`` (or stays
``cpu``) and the process group is joined before ``fn`` and left after it, here and only here.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from nuimcli.engine.distributed import World, cleanup, init, spawn, world_from_env
from nuimcli.errors import UserError
from nuimcli.utils.device import resolve_device


def launch(fn: Callable[..., Any], args: tuple = (), *, gpus: int = 1, device: str = "cpu") -> Optional[Any]:
    """Run ``fn(world, device, *args)`` as this job's processes; returns rank 0's value.

    ``device`` is a ``--device`` value (``auto``, ``cpu``, ``cuda``, ``cuda:N``), resolved per
    process. Under torchrun the other ranks get None (only rank 0 reports). With ``gpus > 1``
    ``fn``, ``args`` and the value must be picklable. Bad combinations (``--gpus`` under
    torchrun, more GPUs than visible) are a :class:`UserError` before anything starts.
    """
    env_world = world_from_env()
    if env_world is not None and env_world.distributed:
        if gpus != 1:
            raise UserError("--gpus is for one machine without torchrun; under torchrun use --nproc-per-node")
        value = _run_rank(env_world, fn, device, args)
        return value if env_world.is_main else None
    if gpus > 1:
        resolved = resolve_device(device)
        if resolved.startswith("cuda"):
            import torch

            if torch.cuda.device_count() < gpus:
                raise UserError(f"--gpus {gpus}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return spawn(_run_rank, gpus, args=(fn, resolved, args))
    return fn(World(), resolve_device(device), *args)


def _run_rank(world: World, fn: Callable[..., Any], device: str, args: tuple) -> Any:
    """One process of a multi-process run: pin its device, join the group, run, leave."""
    dev = resolve_device(device, local_rank=world.local_rank)
    if dev.startswith("cuda"):
        import torch

        torch.cuda.set_device(dev)
    init(world, dev)
    value = fn(world, dev, *args)
    # Only after success: leaving the group on an exception would close the connections before the
    # exception is reported, and a peer's "connection closed" could arrive first and hide the cause.
    # A failed process exits, which ends its membership anyway.
    cleanup()
    return value
