"""prepare_for_inference: BatchNorm folding, channels-last, the inference-only guard, --half."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nuimcli.checkpoints import save_checkpoint
from nuimcli.errors import UserError
from nuimcli.models.backbones import DeformConv2d
from nuimcli.models.build import build_model
from nuimcli.models.inference_mode import fold_batchnorm, fold_conv_bn, prepare_for_inference
from nuimcli.models.roi_heads.mask_heads import FCNMaskHead, HTCMaskHead
from nuimcli.presets import load_preset
from nuimcli.testing.prediction_diff import prediction_diff
from nuimcli.testing.random_weights import calibrated_model, randomize, synthetic_image


def _random_bn(bn: nn.BatchNorm2d, g: torch.Generator) -> None:
    n = bn.num_features
    bn.weight.data = torch.rand(n, generator=g) + 0.5
    bn.bias.data = torch.randn(n, generator=g)
    bn.running_mean.copy_(torch.randn(n, generator=g))
    bn.running_var.copy_(torch.rand(n, generator=g) + 0.1)


@pytest.mark.parametrize("make_conv", [lambda: nn.Conv2d(4, 6, 3, padding=1, bias=False),
                                       lambda: nn.Conv2d(4, 6, 1, stride=2, bias=True),
                                       lambda: DeformConv2d(4, 6, 3, padding=1)])
def test_fold_conv_bn_equals_conv_then_bn(make_conv):
    g = torch.Generator().manual_seed(0)
    conv, bn = make_conv(), nn.BatchNorm2d(6).eval()
    _random_bn(bn, g)
    if isinstance(conv, DeformConv2d):  # non-zero offsets, so the deformable path is exercised
        nn.init.normal_(conv.conv_offset.weight, std=0.1)
    x = torch.randn(2, 4, 9, 11, generator=g)
    with torch.no_grad():
        want = bn(conv(x))
        fold_conv_bn(conv, bn)
        got = conv(x)
    assert conv.bias is not None
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model(load_preset("mask-rcnn-r18-tiny")).eval()
    randomize(model, 0)
    return model


def test_fold_batchnorm_removes_every_backbone_bn_and_keeps_outputs(tiny):
    import copy

    backbone = copy.deepcopy(tiny.backbone)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        want = backbone(x)
        assert fold_batchnorm(backbone) == n_bn > 0
        got = backbone(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def calibrated_tiny():
    """The tiny preset with calibrated random weights: detections that look like a trained model's.
    (The uncalibrated ``tiny`` model's boxes are degenerate and chaotic: fast vs exact moved one by
    0.056 px on an AMD EPYC and by up to 2.2 px for other seeds, so it cannot test parity.)"""
    return calibrated_model(load_preset("mask-rcnn-r18-tiny"), 160, 96, seed=0)


def test_prepare_folds_a_copy_and_leaves_the_model_and_its_state_dict_alone(calibrated_tiny):
    model = calibrated_tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = prepare_for_inference(model)
    assert fast is not model and fast.inference_only and fast.backbone.channels_last is True
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not getattr(model, "inference_only", False)
    img = synthetic_image(160, 96, 1)
    exact, quick = model.predict([img])[0], fast.predict([img])[0]
    # Measured (6 weight seeds x 2 images x 160x96 and 256x144): 100/100 matched, boxes within
    # 2.0e-3 px, scores within 8e-5 -- 25x and 12x inside the export check's own tolerances.
    diff = prediction_diff(exact, quick, min_iou=0.9)
    assert diff["detections_ref"] == diff["detections_other"] == diff["matched"] > 0, diff
    assert diff["box_max_abs_px"] < 0.05 and diff["score_max_abs"] < 1e-3, diff


@pytest.mark.parametrize("head_cls", [FCNMaskHead, HTCMaskHead])
def test_fast_mask_head_gives_each_rois_class_logits_as_the_deconvolution_does(head_cls):
    """The fast path (deconvolution as one matrix product, 1x1 logits of the RoI's class only,
    channels-last convs) computes what mmdet's layers compute, up to float summation order."""
    torch.manual_seed(0)
    head = head_cls(num_classes=7).eval()
    nn.init.normal_(head.upsample.bias)
    nn.init.normal_(head.conv_logits.bias)
    x, labels = torch.randn(23, 256, 14, 14), torch.randint(0, 7, (23,))
    with torch.no_grad():
        want = head(x)[torch.arange(23), labels]
        assert torch.equal(head(x, labels=labels), want)  # exact mode: mmdet's layers, then the class
        head.fast_inference = True
        got = head(x, labels=labels)
    assert got.shape == (23, 28, 28)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


def test_prepare_switches_the_fast_mask_head_on_only_in_fast_mode(tiny):
    assert prepare_for_inference(tiny).roi_head.mask_head.fast_inference is True
    assert prepare_for_inference(tiny, exact=True).roi_head.mask_head.fast_inference is False
    assert tiny.roi_head.mask_head.fast_inference is False


def test_exact_mode_is_bit_identical(tiny):
    img = synthetic_image(160, 96, 2)
    a, b = tiny.predict([img])[0], prepare_for_inference(tiny, exact=True).predict([img])[0]
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.masks, b.masks)


def test_folded_model_refuses_training_and_saving(tiny, tmp_path):
    fast = prepare_for_inference(tiny)
    with pytest.raises(UserError, match="prepared for inference"):
        fast.train()
    with pytest.raises(UserError, match="prepared for inference"):
        save_checkpoint(tmp_path / "x.pth", fast, tiny.preset)
    assert not (tmp_path / "x.pth").exists()
    with pytest.raises(UserError, match="unprepared"):
        prepare_for_inference(fast, exact=True)


def test_half_on_cpu_is_bfloat16_and_can_be_refused(tiny, monkeypatch):
    from nuimcli.models import inference_mode

    bf = prepare_for_inference(tiny, half=True)
    assert bf.autocast_dtype == torch.bfloat16
    img = synthetic_image(160, 96, 3)
    p = bf.predict([img])[0]
    assert p.boxes.dtype == np.float32 and p.scores.dtype == np.float32 and p.masks.dtype == bool
    assert len(p) > 0
    monkeypatch.setattr(inference_mode, "CPU_HALF_OFFERED", False)
    with pytest.raises(UserError, match="--half needs a CUDA device"):
        prepare_for_inference(tiny, half=True)
    assert prepare_for_inference(tiny, half=torch.bfloat16).autocast_dtype == torch.bfloat16  # explicit: allowed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_half_on_cuda_is_float16(tiny):
    import copy

    fast = prepare_for_inference(copy.deepcopy(tiny).cuda(), half=True, copy_model=False)
    assert fast.autocast_dtype == torch.float16
    assert len(fast.predict([synthetic_image(160, 96, 3)])[0]) >= 0
