"""build_model for every architecture: a small forward, output types, determinism; checkpoint round
trips through the public API; preset settings reach the modules."""

from __future__ import annotations

import subprocess
import sys
from functools import lru_cache

import numpy as np
import pytest
import torch

import nuimcli
from nuimcli.errors import UserError
from nuimcli.models.backbones import DeformConv2d
from nuimcli.models.build import build_model
from nuimcli.checkpoints import save_checkpoint
from nuimcli.engine.resolve import load_detector
from nuimcli.models.state_dict import CheckpointMismatch
from nuimcli.models.roi_heads import CascadeRoIHead, HybridTaskCascadeRoIHead, StandardRoIHead
from nuimcli.presets import load_preset, presets_by_manifest

# Small test scale, proposal and detection counts keep the 10 forwards fast (the mask heads
# dominate: 4 convs of 256 channels per RoI and stage); the architecture is unchanged.
SMALL = ["data.test_scale=[96,64]", "model.rpn.test_nms_pre=200", "model.rpn.test_max_per_img=50",
         "model.roi.max_per_img=8"]


@lru_cache(maxsize=None)
def _arch_presets() -> dict[str, str]:
    return {manifest: names[0] for manifest, names in presets_by_manifest().items()}


ARCH_PRESETS = sorted(_arch_presets().values())


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    # different sizes (b is resized by 16/15) that pad to the same network input: one batch
    a = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)
    for img in (a, b):  # some structure so the RPN has something to rank
        img[10:40, 20:60] = (30, 200, 90)
    return [a, b]


def _same(p, q, exact: bool = True) -> None:
    """Equal predictions; ``exact=False`` allows float rounding (CPU convolutions pick
    batch-size-dependent algorithms, so a batch of 2 differs from one image in the last bits)."""
    if exact:
        np.testing.assert_array_equal(p.boxes, q.boxes)
        np.testing.assert_array_equal(p.scores, q.scores)
    else:
        np.testing.assert_allclose(p.boxes, q.boxes, atol=1e-3, rtol=0)
        np.testing.assert_allclose(p.scores, q.scores, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(p.labels, q.labels)
    if p.masks is None:
        assert q.masks is None
    elif exact:
        np.testing.assert_array_equal(p.masks, q.masks)
    else:
        assert (p.masks != q.masks).sum() <= 0.01 * max(1, p.masks.sum())
    if p.semantic is None:
        assert q.semantic is None
    else:
        np.testing.assert_array_equal(p.semantic, q.semantic)


@pytest.mark.parametrize("name", ARCH_PRESETS)
def test_each_architecture_builds_and_predicts(name):
    preset = load_preset(name, SMALL)
    torch.manual_seed(0)
    model = build_model(preset).eval()
    assert model.preset is preset and model.num_classes == 10
    imgs = _images()
    preds = model.predict(imgs, batch_size=2)
    assert len(preds) == 2
    for img, p in zip(imgs, preds):
        h, w = img.shape[:2]
        n = len(p.scores)
        assert 0 < n <= 8
        assert p.boxes.dtype == np.float32 and p.boxes.shape == (n, 4)
        assert p.scores.dtype == np.float32 and np.all(np.diff(p.scores) <= 0)
        assert p.labels.dtype == np.int64 and p.labels.min() >= 0 and p.labels.max() < 10
        assert p.masks.dtype == bool and p.masks.shape == (n, h, w)
        assert np.all(p.boxes[:, 2] <= w + 1e-3) and np.all(p.boxes[:, 3] <= h + 1e-3) and np.all(p.boxes >= 0)
        if preset.model.semantic.enabled:
            assert p.semantic.dtype == np.uint8 and p.semantic.shape == (h, w)
        else:
            assert p.semantic is None
    # a batch gives what a one-image call gives (to float rounding); repeated calls are identical
    single = model.predict(imgs[1])[0]
    _same(preds[1], single, exact=False)
    _same(single, model.predict(imgs[1])[0])


def test_detector_kind_and_dcn_follow_the_preset():
    with torch.device("meta"):
        m = build_model(load_preset("mask-rcnn-r50-1x"))
        c = build_model(load_preset("cascade-mask-rcnn-r50-1x"))
        h = build_model(load_preset("htc-x101-64x4d-dcn-coco20e-20e"))
        n = build_model(load_preset("htc-r50-nosemantic-1x"))
    assert type(m.roi_head) is StandardRoIHead
    assert type(c.roi_head) is CascadeRoIHead and c.roi_head.num_stages == 3
    assert type(h.roi_head) is HybridTaskCascadeRoIHead and h.roi_head.with_semantic
    assert not n.roi_head.with_semantic
    stds = [b.bbox_coder.stds for b in c.roi_head.bbox_head]
    assert stds == [(0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)]
    assert m.roi_head.bbox_head.bbox_coder.stds == (0.1, 0.1, 0.2, 0.2) and not m.roi_head.bbox_head.reg_class_agnostic
    assert isinstance(h.backbone.layer3[5].conv2, DeformConv2d) and not isinstance(m.backbone.layer3[5].conv2, DeformConv2d)
    assert h.roi_head.test_cfg.score_thr == 0.001 and m.roi_head.test_cfg.score_thr == 0.05
    # train settings come from the preset too (typed, one per stage)
    assert c.roi_head.train_cfg.stage_iou_thrs == (0.5, 0.6, 0.7) and h.roi_head.interleaved
    assert m.rpn_head.train_cfg.nms_pre == 2000 and m.rpn_head.nms_pre == 1000


def test_caffe_preset_strides_bgr_and_frozen_bn():
    preset = load_preset("mask-rcnn-r50-caffe-1x")
    model = build_model(preset)
    block = model.backbone.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert not any(p.requires_grad for p in model.backbone.bn1.parameters())
    assert not any(p.requires_grad for p in model.backbone.layer3[0].bn2.parameters())
    # caffe presets feed BGR minus the caffe mean, std 1
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 200  # blue
    x, _ = model.preprocess(img)
    assert torch.allclose(x[0], torch.full_like(x[0], 200 - 103.53))
    assert torch.allclose(x[2], torch.full_like(x[2], -123.675))
    # while pytorch-style presets convert to RGB first
    torch_style = build_model(load_preset("mask-rcnn-r18-tiny"))
    y, _ = torch_style.preprocess(img)
    assert torch.allclose(y[2], torch.full_like(y[2], (200 - 103.53) / 57.375))


def test_training_mode_keeps_frozen_parts_frozen():
    model = build_model(load_preset("mask-rcnn-r50-1x")).train()
    bb = model.backbone
    assert not bb.layer1.training and not bb.bn1.training and bb.layer2.training
    assert not any(p.requires_grad for p in bb.layer1.parameters())
    assert all(not m.training for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d))  # norm_eval
    assert model.rpn_head.training


# --------------------------------------------------------------------------- checkpoints end to end


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    preset = load_preset("mask-rcnn-r18-tiny", ["data.test_scale=[128,80]"])
    torch.manual_seed(0)
    model = build_model(preset).eval()
    for m in model.modules():  # break the symmetric init so outputs are informative
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.05)
    path = tmp_path_factory.mktemp("ck") / "tiny.pth"
    save_checkpoint(path, model, preset)
    return path, model


def test_checkpoint_round_trip_identical_outputs(tiny_ckpt):
    path, model = tiny_ckpt
    loaded = nuimcli.load(path, exact=True)  # exact: the saved model, bit for bit
    assert not loaded.training and loaded.preset.name == "mask-rcnn-r18-tiny"
    assert loaded.preset.data.test_scale == [128, 80]  # the saved (overridden) preset, not the file's defaults
    imgs = _images()
    for p, q in zip(model.predict(imgs), loaded.predict(imgs)):
        _same(p, q)
    assert len(p.scores) > 0


def test_mismatched_checkpoint_readable_error(tiny_ckpt):
    path, _ = tiny_ckpt
    with pytest.raises(CheckpointMismatch) as e:
        load_detector(path, preset="mask-rcnn-r50-1x")
    msg = str(e.value)
    assert str(path) in msg and "mask-rcnn-r50-1x" in msg and "mask-rcnn_r50_fpn_1x_nuim" in msg
    assert "shape mismatch" in msg and "missing in file" in msg
    assert len(msg.splitlines()) <= 6


def test_corrupt_and_foreign_checkpoints(tmp_path, tiny_ckpt):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(tiny_ckpt[0].read_bytes()[:1000])
    with pytest.raises(UserError, match="bad.pth"):
        nuimcli.load(bad)
    foreign = tmp_path / "foreign.pth"
    sd = torch.load(tiny_ckpt[0], weights_only=True)["state_dict"]
    torch.save({"meta": {}, "state_dict": sd}, foreign)
    with pytest.raises(UserError, match="--preset"):
        nuimcli.load(foreign)
    with pytest.raises(UserError, match="no such checkpoint"):
        nuimcli.load(tmp_path / "missing.pth")
    # with the preset named, the foreign file loads
    assert nuimcli.load(foreign, preset="mask-rcnn-r18-tiny").preset.name == "mask-rcnn-r18-tiny"


def test_import_nuimcli_does_not_import_torch():
    code = "import sys, nuimcli; assert callable(nuimcli.load); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_bad_device_is_a_user_error(tiny_ckpt):
    with pytest.raises(UserError, match="device"):
        nuimcli.load(tiny_ckpt[0], device="nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            nuimcli.load(tiny_ckpt[0], device="cuda")


def test_zoo_name_resolves_through_the_zoo_and_names_the_preset(tiny_ckpt, monkeypatch):
    import nuimcli.zoo
    from nuimcli import checkpoints as ck

    calls = []

    def fake_locate(name, *a, **k):
        calls.append(name)
        return nuimcli.zoo.Resolved(tiny_ckpt[0], "mask-rcnn-r18-tiny")  # as for a zoo name: file and preset

    def no_hash(path):
        raise AssertionError("a zoo file's preset is known; no hashing needed")

    monkeypatch.setattr(nuimcli.zoo, "locate", fake_locate)
    monkeypatch.setattr(ck, "sha256_file", no_hash)
    model = nuimcli.load("mask-rcnn-r18-tiny")
    assert calls == ["mask-rcnn-r18-tiny"] and model.preset.name == "mask-rcnn-r18-tiny"


@pytest.mark.parametrize("name, expected", [("htc-r50-1x", True), ("htc-r50-nosemantic-1x", False),
                                            ("mask-rcnn-r18-tiny", False)])
def test_has_semantic_head_follows_the_preset(name, expected):
    assert build_model(load_preset(name)).has_semantic_head is expected
