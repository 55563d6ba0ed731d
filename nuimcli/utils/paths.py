"""Output folders given by the user: checked before any work starts.

Every command that writes into a folder (``convert --out-dir``, ``predict --out``, ``train
--work-dir``, ``eval --out``, ``demo --out``, the zoo cache under ``$NUIM_HOME``) calls
:func:`check_out_dir` first, so a path that names a file, or lies under one, or cannot be
written is a one-line :class:`~nuimcli.errors.UserError` (exit 2) — not an ``OSError``
traceback after the model has loaded or the data has been read.
"""

from __future__ import annotations

import os
from pathlib import Path

from nuimcli.errors import UserError


def check_out_dir(path: str | os.PathLike, what: str) -> Path:
    """Make sure ``path`` is, or can become, a folder we write into; returns it as a Path.

    ``what`` says where the path came from (``--out-dir``, ``$NUIM_HOME``) and starts the
    message. Nothing is created: a missing folder is fine when its nearest existing ancestor is
    a writable folder.
    """
    p = Path(path).expanduser()
    label = f"{what} {path}"
    if p.exists() and not p.is_dir():
        raise UserError(f"{label}: is a file, not a folder (name a folder; it is created if missing)")
    # The nearest existing ancestor decides whether the folder can be made (and written into).
    probe = p
    while not probe.exists():
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"{label}: {probe} is a file, so no folder can be made under it")
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{label}: no permission to write in {probe}")
    return p


def make_out_dir(path: str | os.PathLike, what: str) -> Path:
    """:func:`check_out_dir`, then create the folder (with its parents); returns it."""
    p = check_out_dir(path, what)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a race with another process, a read-only file system, ...
        raise UserError(f"{what} {path}: cannot create the folder ({e.strerror or e})") from None
    return p
