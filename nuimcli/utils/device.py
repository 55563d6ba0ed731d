"""The ``--device`` option shared by train, eval and predict."""

from __future__ import annotations

from nuimcli.errors import UserError

#: Default of every ``--device`` option: CUDA when available, else the CPU. A string rather
#: than a probe at import time, so that `nuim --help` does not load torch.
AUTO = "auto"


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` if available else ``cpu``; ``cpu``, ``cuda`` or ``cuda:N`` checked to exist here.

    Anything else is a :class:`UserError`.
    """
    import torch

    if device == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available here; use --device cpu")
        if ":" in device:
            idx = device.split(":", 1)[1]
            if not idx.isdigit() or int(idx) >= torch.cuda.device_count():
                raise UserError(f"--device {device}: no such CUDA device ({torch.cuda.device_count()} visible)")
        return device
    raise UserError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
