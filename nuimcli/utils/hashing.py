"""The one file hash nuimcli uses: SHA-256, streamed.

Released files are named and recognised by the first hex digits of this digest (mmdet's
``publish_model`` and torch.hub suffix), so downloads, ``nuim zoo check``, the trust rule for
pickled checkpoints and "which preset is this released file" all call :func:`sha256_file`.
"""

from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    """Full hex SHA-256 of a file's bytes (streamed: constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
