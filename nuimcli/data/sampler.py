"""Aspect-ratio grouped, sharded, seeded and resumable batch sampler.

mmdet 2.x's ``DistributedGroupSampler`` (``GroupSampler`` is the one-replica case): images are
split by orientation (w > h or not), each group is shuffled with a generator seeded by
``seed + epoch`` and padded by repetition to a multiple of ``samples_per_gpu * num_replicas``;
the groups are concatenated, cut into chunks of ``samples_per_gpu`` (so a batch never mixes
orientations) and the chunks shuffled; rank ``r`` takes the r-th contiguous share. The ranks'
shares are disjoint slices of one permutation.

Each yielded batch is a list of ``(index, sample_seed)``: the seed of a sample is a function of
(seed, epoch, its position in the epoch), so augmentation and RoI sampling do not depend on
worker processes or on where a run was interrupted. ``state_dict`` records (epoch, batches
done) so a resumed run continues with the next batch.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 31-bit seed for the sample at ``position`` of epoch ``epoch``'s global order."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, position]).generate_state(1)[0] & 0x7FFFFFFF)


class GroupedBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(index, seed)`` for one rank (see the module docstring).

    Args:
        flags: group id per dataset index (1 = landscape, 0 = portrait/square).
        samples_per_gpu: images per batch on this rank.
        num_replicas, rank: the data-parallel world and this process's place in it.
        seed: base seed shared by every rank.
    """

    def __init__(self, flags: Sequence[int], samples_per_gpu: int, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0) -> None:
        if samples_per_gpu < 1:
            raise ValueError("samples_per_gpu must be >= 1")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside world of {num_replicas}")
        self.flags = np.asarray(flags, dtype=np.int64)
        self.samples_per_gpu = samples_per_gpu
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0
        self.group_sizes = np.bincount(self.flags) if len(self.flags) else np.zeros(0, dtype=np.int64)
        per = samples_per_gpu * num_replicas
        total = sum(int(math.ceil(s / per)) * per for s in self.group_sizes if s > 0)
        self.num_samples = total // num_replicas  #: samples per rank per epoch

    def __len__(self) -> int:
        """Batches per rank per epoch (the full epoch, whatever ``start_batch`` is)."""
        return self.num_samples // self.samples_per_gpu

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (0-based) and the first batch to yield (for a mid-epoch resume)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def global_order(self, epoch: int) -> list[int]:
        """The epoch's permutation over all ranks (length ``num_samples * num_replicas``)."""
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        per = self.samples_per_gpu * self.num_replicas
        indices: list[int] = []
        for gid, size in enumerate(self.group_sizes):
            size = int(size)
            if size == 0:
                continue
            members = np.where(self.flags == gid)[0]
            members = members[torch.randperm(size, generator=g).numpy()].tolist()
            extra = int(math.ceil(size / per)) * per - size
            padded = list(members)
            for _ in range(extra // size):
                padded.extend(members)
            padded.extend(members[: extra % size])
            indices.extend(padded)
        spg = self.samples_per_gpu
        chunks = torch.randperm(len(indices) // spg, generator=g).tolist()
        return [indices[j] for c in chunks for j in range(c * spg, (c + 1) * spg)]

    def batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """This rank's batches of epoch ``epoch``, each a list of ``(index, sample_seed)``."""
        order = self.global_order(epoch)
        offset = self.num_samples * self.rank
        mine = order[offset: offset + self.num_samples]
        seeded = [(idx, sample_seed(self.seed, epoch, offset + k)) for k, idx in enumerate(mine)]
        spg = self.samples_per_gpu
        return [seeded[i: i + spg] for i in range(0, len(seeded), spg)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        yield from self.batches(self.epoch)[self.start_batch:]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start_batch": self.start_batch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.seed = int(state.get("seed", self.seed))
        self.set_epoch(int(state["epoch"]), int(state.get("start_batch", 0)))
