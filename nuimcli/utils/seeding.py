"""Per-process set-up shared by train, eval and predict: torch CPU threads and the seeds."""

from __future__ import annotations

import random
from typing import Optional


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global RNG and torch (CPU and every CUDA device)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_process(threads: Optional[int], seed: int) -> None:
    """``torch.set_num_threads(threads)`` when given, then :func:`seed_everything` — what each
    process of a job does before it builds or loads a model."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    seed_everything(seed)
