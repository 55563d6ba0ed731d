"""The one device resolver: ``--device`` of train, eval and predict, ``nuimcli.load(device=...)``
and each process of a multi-process run."""

from __future__ import annotations

from typing import Optional

from nuimcli.errors import UserError

#: Default of every ``--device`` option: CUDA when available, else the CPU. A string rather
#: than a probe at import time, so that `nuim --help` does not load torch.
AUTO = "auto"


def resolve_device(device: str, local_rank: Optional[int] = None, what: str = "--device") -> str:
    """``auto`` → ``cuda`` if available else ``cpu``; ``cpu``, ``cuda`` or ``cuda:N`` checked to exist here.

    ``local_rank`` (a process of a multi-process run) turns any CUDA device into
    ``cuda:<local_rank>``, one GPU per process. ``what`` starts the error messages (the CLI
    option, or ``device`` for the library). Anything else is a :class:`UserError`.
    """
    import torch

    text = str(device)
    if text == AUTO:
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return text
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"{what} {device}: CUDA is not available here; use {what} cpu")
        if ":" in text:
            idx = text.split(":", 1)[1]
            if not idx.isdigit() or int(idx) >= torch.cuda.device_count():
                raise UserError(f"{what} {device}: no such CUDA device ({torch.cuda.device_count()} visible)")
        return text if local_rank is None else f"cuda:{local_rank}"
    raise UserError(f"{what} {device!r}: expected auto, cpu, cuda or cuda:N")
