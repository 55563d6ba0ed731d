"""Train-time resize / flip / normalise / pad / SegRescale and collate."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nuimcli.data.augment import collate, sample_scale, train_transform
from nuimcli.presets import load_preset


def _data_cfg(**kw):
    cfg = copy.deepcopy(load_preset("mask-rcnn-r50-1x").data)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _sample(w=160, h=90, with_sem=True):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (255, 0, 0)  # left half blue (BGR)
    masks = np.zeros((1, h, w), np.uint8)
    masks[0, 10:40, 20:60] = 1
    s = {"img": img, "bboxes": np.array([[20, 10, 60, 40]], np.float32), "labels": np.array([3]),
         "masks": masks, "file_name": "a.jpg", "image_id": 7}
    if with_sem:
        sem = np.zeros((h, w), np.uint8)
        sem[:, : w // 2] = 24
        s["semantic"] = sem
    return s


def test_range_scale_draws_long_and_short_independently():
    rng = np.random.default_rng(0)
    draws = [sample_scale([[1280, 720], [1920, 1080]], "range", rng) for _ in range(2000)]
    longs = np.array([d[0] for d in draws])
    shorts = np.array([d[1] for d in draws])
    assert longs.min() >= 1280 and longs.max() <= 1920 and shorts.min() >= 720 and shorts.max() <= 1080
    assert len(set(longs.tolist())) > 400 and len(set(shorts.tolist())) > 250
    assert abs(np.corrcoef(longs, shorts)[0, 1]) < 0.1  # not tied to one another
    assert sample_scale([[384, 216]], "range", rng) == (384, 216)
    assert sample_scale([[100, 50], [300, 200]], "value", rng) in [(100, 50), (300, 200)]


def test_resize_follows_mmcv_rescale_and_scales_boxes():
    cfg = _data_cfg(train_scales=[[1500, 800], [1500, 800]], flip_ratio=0.0)
    out = train_transform(_sample(1600, 900), cfg, np.random.default_rng(0))
    s = min(1500 / 1600, 800 / 900)
    new_w, new_h = int(1600 * s + 0.5), int(900 * s + 0.5)
    meta = out.img_meta
    assert meta.img_shape == (new_h, new_w) and out.img.shape == (3, new_h, new_w)
    assert meta.pad_shape == (int(np.ceil(new_h / 32) * 32), int(np.ceil(new_w / 32) * 32))
    sf = meta.scale_factor
    assert sf[0] == pytest.approx(new_w / 1600) and sf[1] == pytest.approx(new_h / 900)
    assert out.gt_bboxes[0].tolist() == pytest.approx([20 * sf[0], 10 * sf[1], 60 * sf[0], 40 * sf[1]])
    assert out.gt_masks.shape == (1,) + meta.pad_shape and out.gt_masks.dtype == torch.uint8
    assert out.gt_labels.tolist() == [3] and meta.flip is False


def test_flip_mirrors_everything_consistently():
    cfg = _data_cfg(train_scales=[[160, 90], [160, 90]], flip_ratio=1.0)
    out = train_transform(_sample(), cfg, np.random.default_rng(0))
    assert out.img_meta.flip is True
    assert out.gt_bboxes[0].tolist() == [160 - 60, 10, 160 - 20, 40]
    m = out.gt_masks[0]
    ys, xs = torch.nonzero(m, as_tuple=True)
    assert (xs.min().item(), xs.max().item() + 1, ys.min().item(), ys.max().item() + 1) == (100, 140, 10, 40)
    # The blue half is now on the right: normalised RGB channel 2 (blue) is high there.
    img = out.img
    assert img[2, 0, -1] > 2 and img[2, 0, 0] < -1
    # Semantic: left half labelled before the flip → right half after; padding (rows 90..95) is 0.
    sem = out.gt_semantic_seg
    assert sem.shape == (96 // 8, 160 // 8) and sem.dtype == torch.int64
    assert sem[0, -1] == 24 and sem[0, 0] == 0


def test_boxes_clipped_to_resized_image():
    s = _sample(with_sem=False)
    s["bboxes"] = np.array([[-5, -5, 170, 95]], np.float32)
    cfg = _data_cfg(train_scales=[[320, 180], [320, 180]], flip_ratio=0.0)
    out = train_transform(s, cfg, np.random.default_rng(0))
    assert out.gt_bboxes[0].tolist() == [0, 0, 320, 180]


def test_same_seed_same_sample_and_flip_rate():
    cfg = _data_cfg(train_scales=[[128, 72], [192, 108]])
    a = train_transform(_sample(), cfg, np.random.default_rng(5))
    b = train_transform(_sample(), cfg, np.random.default_rng(5))
    assert a.img_meta == b.img_meta and torch.equal(a.img, b.img)
    flips = [train_transform(_sample(with_sem=False), cfg, np.random.default_rng(i)).img_meta.flip
             for i in range(200)]
    assert 70 < sum(flips) < 130


def test_collate_pads_to_batch_maximum():
    cfg = _data_cfg(train_scales=[[128, 72], [192, 108]])
    samples = [train_transform(_sample(), cfg, np.random.default_rng(i)) for i in range(3)]
    batch = collate(samples)
    hs = [s.img_meta.pad_shape[0] for s in samples]
    ws = [s.img_meta.pad_shape[1] for s in samples]
    assert batch.images.shape == (3, 3, max(hs), max(ws))
    assert batch.gt_semantic_seg.shape == (3, 1, max(hs) // 8, max(ws) // 8)
    assert len(batch.gt_masks) == 3 and len(batch.img_metas) == 3
    for i, s in enumerate(samples):
        h, w = s.img_meta.img_shape
        assert torch.equal(batch.images[i, :, :h, :w], s.img)
        assert batch.images[i, :, h:, :].abs().sum() == 0


def test_batch_moves_every_tensor_and_keeps_the_metas():
    cfg = _data_cfg(train_scales=[[128, 72], [192, 108]])
    batch = collate([train_transform(_sample(), cfg, np.random.default_rng(i)) for i in range(2)])
    moved = batch.to("meta")
    tensors = [moved.images, moved.gt_semantic_seg, *moved.gt_bboxes, *moved.gt_labels, *moved.gt_masks]
    assert all(t.device.type == "meta" for t in tensors) and moved.img_metas == batch.img_metas
    no_masks = collate([train_transform(_sample(with_sem=False), cfg, np.random.default_rng(0))])
    no_masks.gt_masks = None
    assert no_masks.to("meta").gt_masks is None and no_masks.to("meta").gt_semantic_seg is None
