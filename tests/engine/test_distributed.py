"""Two-process DDP (gloo, CPU) on the real tiny detector: disjoint shards, identical gradients.

The gradient of one DDP step (two ranks, one image each) must equal the mean of the
per-image gradients computed one image at a time in a single process with the same per-image
seeds (RoI sampling and augmentation are seeded per image).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nuimcli.engine.distributed import World, spawn, world_from_env

OVERRIDES = ["model.backbone.depth=18", "model.fpn_channels=32", "model.rpn.feat_channels=32",
             "model.roi.fc_out_channels=64", "model.rpn.train_nms_pre=300", "model.rpn.train_max_per_img=200",
             "data.samples_per_gpu=1", "data.train_scales=[[192, 108], [192, 108]]"]


def _setup(root: Path):
    from nuimcli.data.convert import convert
    from nuimcli.synthetic import generate_nuimages

    generate_nuimages(root, version="v1.0-train", num_samples=4, width=192, height=108, seed=3,
                      sweeps_per_sample=0, objects_per_image=(2, 4), null_mask_fraction=0.0)
    convert(root, ["v1.0-train"], nproc=0)


def _dataset(root: Path):
    from nuimcli.data.dataset import build_train_dataset
    from nuimcli.presets import load_preset

    preset = load_preset("mask-rcnn-r18-tiny", OVERRIDES)
    ds = build_train_dataset(root / "annotations" / "nuimages_v1.0-train.json", root, preset,
                             semantic_root=root / "annotations" / "semantic_masks")
    return preset, ds


def _grads(model) -> dict:
    return {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in model.named_parameters() if p.requires_grad}


def _rank_step(world: World, root: str) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from nuimcli.data.augment import collate
    from nuimcli.data.sampler import GroupedBatchSampler
    from nuimcli.engine.distributed import cleanup, init
    from nuimcli.engine.trainer import LossModule, parse_losses
    from nuimcli.models.build import build_model

    torch.set_num_threads(1)
    init(world, "cpu")
    try:
        root_p = Path(root)
        preset, ds = _dataset(root_p)
        model = build_model(preset)
        model.load_state_dict(torch.load(root_p / "init.pt"))
        model.train()
        ddp = DDP(LossModule(model))
        sampler = GroupedBatchSampler(ds.aspect_flags, 1, world.size, world.rank, seed=11)
        batch_items = sampler.batches(0)[0]
        batch = collate([ds[item] for item in batch_items])
        total, _ = parse_losses(ddp(batch))
        total.backward()
        torch.save({"grads": _grads(model), "items": batch_items}, root_p / f"rank{world.rank}.pt")
    finally:
        cleanup()


def test_world_from_env():
    assert world_from_env({}) is None
    w = world_from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (w.rank, w.size, w.local_rank, w.distributed, w.is_main) == (3, 8, 1, True, False)


def test_ddp_gradient_equals_mean_of_per_image_gradients(tmp_path):
    from nuimcli.data.augment import collate
    from nuimcli.engine.trainer import parse_losses
    from nuimcli.models.build import build_model

    _setup(tmp_path)
    preset, ds = _dataset(tmp_path)
    torch.manual_seed(0)
    model = build_model(preset)
    torch.save(model.state_dict(), tmp_path / "init.pt")

    spawn(_rank_step, 2, args=(str(tmp_path),))
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    (i0, _), (i1, _) = r0["items"][0], r1["items"][0]
    assert i0 != i1  # disjoint shards

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same kernels as the ranks, so proposals match bit for bit
    try:
        per_image = []
        for item in (r0["items"][0], r1["items"][0]):
            model.load_state_dict(torch.load(tmp_path / "init.pt"))
            model.train()
            model.zero_grad(set_to_none=True)
            total, _ = parse_losses(model.loss(collate([ds[item]])))
            total.backward()
            per_image.append(_grads(model))
    finally:
        torch.set_num_threads(threads)
    worst = 0.0
    for name, g0 in per_image[0].items():
        expected = (g0 + per_image[1][name]) / 2
        for r in (r0, r1):
            diff = (r["grads"][name] - expected).abs().max().item()
            worst = max(worst, diff)
            assert torch.allclose(r["grads"][name], expected, atol=1e-5, rtol=1e-4), (name, diff)
    assert any(g.abs().sum() > 0 for g in per_image[0].values())
    assert worst <= 1e-5
