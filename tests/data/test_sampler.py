"""Grouped batch sampler: orientation groups, disjoint rank shards, seeding, resume."""

from __future__ import annotations

from collections import Counter

from nuimcli.data.sampler import GroupedBatchSampler


FLAGS = [1] * 12 + [0] * 8  # 12 landscape, 8 portrait


def test_batches_never_mix_orientations_and_cover_everything():
    s = GroupedBatchSampler(FLAGS, samples_per_gpu=2, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 10
    for b in batches:
        assert len({FLAGS[i] for i, _ in b}) == 1
    assert sorted(i for b in batches for i, _ in b) == list(range(20))


def test_padding_by_repetition_within_group():
    flags = [1] * 5 + [0] * 3
    s = GroupedBatchSampler(flags, samples_per_gpu=2)
    idx = [i for b in s for i, _ in b]
    assert len(idx) == 10  # 5 → 6, 3 → 4
    c = Counter(idx)
    assert set(c) == set(range(8)) and sum(v - 1 for v in c.values()) == 2


def test_ranks_get_disjoint_shards_of_one_permutation():
    shards = []
    for rank in range(2):
        s = GroupedBatchSampler(FLAGS, samples_per_gpu=2, num_replicas=2, rank=rank, seed=3)
        s.set_epoch(4)
        shards.append([i for b in s for i, _ in b])
    assert len(shards[0]) == len(shards[1]) == 10
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(20))
    # Same sample → same seed on whichever rank (seeds come from the global position).
    seeds = [seed for rank in range(2) for b in GroupedBatchSampler(FLAGS, 2, 2, rank, 3).batches(4) for _, seed in b]
    assert len(set(seeds)) == 20


def test_epochs_reshuffle_deterministically():
    a = GroupedBatchSampler(FLAGS, 2, seed=0)
    b = GroupedBatchSampler(FLAGS, 2, seed=0)
    assert a.batches(0) == b.batches(0)
    assert a.batches(0) != a.batches(1)
    assert a.batches(0) != GroupedBatchSampler(FLAGS, 2, seed=1).batches(0)


def test_resume_mid_epoch_continues_with_next_batch():
    s = GroupedBatchSampler(FLAGS, 2, seed=7)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start_batch=4)
    state = s.state_dict()
    t = GroupedBatchSampler(FLAGS, 2, seed=0)
    t.load_state_dict(state)
    assert list(t) == full[4:]
    assert len(t) == len(full)
