"""A crafted checkpoint that runs code when unpickled (creates a marker file): for the tests that
show such files are refused unless the user vouches for them (``--trust-checkpoint``)."""

from __future__ import annotations

from pathlib import Path

import torch


class _CreatesFile:
    """Unpickling this calls ``open(marker, "w")``: any callable could be named the same way."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def write_evil_checkpoint(path: Path, marker: Path, state_dict: dict | None = None) -> Path:
    """Write an mmdet-looking checkpoint whose ``meta`` runs code; returns ``path``."""
    sd = state_dict if state_dict is not None else {"backbone.conv1.weight": torch.zeros(1)}
    torch.save({"meta": {"epoch": 1, "payload": _CreatesFile(marker)}, "state_dict": sd,
                "optimizer": {"state": {}, "param_groups": []}, "nuim_train_state": {"epoch": 0}}, path)
    return path
