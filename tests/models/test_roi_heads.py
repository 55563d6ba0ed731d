"""RoI extraction, heads and the test-time post-processing of the three RoI heads (known answers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from nuimcli.data.structures import ImageMeta
from nuimcli.models.boxes import DeltaXYWHBBoxCoder
from nuimcli.models.roi_heads import (CascadeRoIHead, FCNMaskHead, FusedSemanticHead, HTCMaskHead,
                                      HybridTaskCascadeRoIHead, Shared2FCBBoxHead, SingleRoIExtractor,
                                      StandardRoIHead, paste_masks)
from nuimcli.models.settings import RoITestSettings

C = 8  # channels of the toy feature maps
STDS = [(0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)]


def _feats(seed=0, b=1, h=32, w=48):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, C, h // 2 ** i, w // 2 ** i, generator=g) for i in range(5)]


def _square_roi(scale):
    return torch.tensor([[0.0, 10.0, 10.0, 10.0 + scale, 10.0 + scale]])


# ----------------------------------------------------------------------------- RoI extraction
@pytest.mark.parametrize("scale,level", [(111.9, 0), (112.0, 1), (223.9, 1), (224.0, 2), (447.9, 2),
                                         (448.0, 3), (5000.0, 3), (1.0, 0)])
def test_roi_level_rule(scale, level):
    ext = SingleRoIExtractor(7, [4, 8, 16, 32], finest_scale=56)
    assert ext.map_roi_levels(_square_roi(scale), 4).item() == level


def test_extractor_uses_aligned_roi_align_on_the_chosen_level():
    feats = _feats()
    ext = SingleRoIExtractor(7, [4, 8, 16, 32])
    rois = torch.tensor([[0.0, 3.3, 4.1, 40.0, 60.7], [0.0, 0.0, 0.0, 150.0, 120.0]])  # levels 0 and 1
    out = ext(feats, rois)
    assert out.shape == (2, C, 7, 7)
    ref0 = roi_align(feats[0], rois[:1], (7, 7), spatial_scale=1 / 4, sampling_ratio=0, aligned=True)
    ref1 = roi_align(feats[1], rois[1:], (7, 7), spatial_scale=1 / 8, sampling_ratio=0, aligned=True)
    assert torch.equal(out[0], ref0[0]) and torch.equal(out[1], ref1[0])
    not_aligned = roi_align(feats[0], rois[:1], (7, 7), spatial_scale=1 / 4, sampling_ratio=0, aligned=False)
    assert not torch.allclose(out[0], not_aligned[0])


# ----------------------------------------------------------------------------- heads
def test_bbox_head_layout_and_shapes():
    head = Shared2FCBBoxHead(in_channels=256, roi_feat_size=7, fc_out_channels=1024, num_classes=10)
    assert [(k, tuple(v.shape)) for k, v in head.state_dict().items()] == [
        ("fc_cls.weight", (11, 1024)), ("fc_cls.bias", (11,)), ("fc_reg.weight", (40, 1024)),
        ("fc_reg.bias", (40,)), ("shared_fcs.0.weight", (1024, 12544)), ("shared_fcs.0.bias", (1024,)),
        ("shared_fcs.1.weight", (1024, 1024)), ("shared_fcs.1.bias", (1024,))]
    agn = Shared2FCBBoxHead(in_channels=C, fc_out_channels=16, num_classes=10, reg_class_agnostic=True)
    cls, reg = agn(torch.randn(5, C, 7, 7))
    assert cls.shape == (5, 11) and reg.shape == (5, 4)


def test_mask_heads_layout():
    keys = list(FCNMaskHead(num_classes=10).state_dict())
    assert keys == [f"convs.{i}.conv.{p}" for i in range(4) for p in ("weight", "bias")] + [
        "upsample.weight", "upsample.bias", "conv_logits.weight", "conv_logits.bias"]
    htc = HTCMaskHead(with_conv_res=True, num_classes=10)
    assert list(htc.state_dict())[-2:] == ["conv_res.conv.weight", "conv_res.conv.bias"]
    assert "conv_res.conv.weight" not in HTCMaskHead(with_conv_res=False).state_dict()
    sem = list(FusedSemanticHead().state_dict())
    assert sem[:2] == ["lateral_convs.0.conv.weight", "lateral_convs.0.conv.bias"]
    assert sem[-4:] == ["conv_embedding.conv.weight", "conv_embedding.conv.bias", "conv_logits.weight",
                        "conv_logits.bias"]
    logits = FCNMaskHead(4, C, C, 10, 14)(torch.randn(3, C, 14, 14))
    assert logits.shape == (3, 10, 28, 28)


def _zero_(module):
    for p in module.parameters():
        torch.nn.init.zeros_(p)
    return module


def _const_bbox_head(cls_bias, reg_bias, num_classes=3, agnostic=False, stds=STDS[0]):
    head = _zero_(Shared2FCBBoxHead(C, 7, 16, num_classes, reg_class_agnostic=agnostic, target_stds=stds))
    with torch.no_grad():
        head.fc_cls.bias.copy_(torch.tensor(cls_bias))
        head.fc_reg.bias.copy_(torch.tensor(reg_bias))
    return head


def _const_mask_head(bias, cls=FCNMaskHead, **kw):
    head = _zero_(cls(num_convs=2, in_channels=C, conv_out_channels=C, num_classes=len(bias), roi_feat_size=14, **kw))
    with torch.no_grad():
        head.conv_logits.bias.copy_(torch.tensor(bias))
    return head


META = ImageMeta(ori_shape=(200, 400), img_shape=(100, 200), pad_shape=(128, 224),
                 scale_factor=(0.5, 0.5, 0.5, 0.5))


def _test_cfg(score_thr=0.05, nms_iou=0.5, max_per_img=100):
    return RoITestSettings(score_thr=score_thr, nms_iou=nms_iou, max_per_img=max_per_img, mask_thr_binary=0.5)
PROPOSAL = torch.tensor([[10.0, 20.0, 50.0, 60.0, 0.9]])


def test_known_box_and_score_through_standard_post_processing():
    # 3 classes + background LAST: logits [2.5, 0, 4, 5]
    reg = [0.0] * 4 + [0.0] * 4 + [1.0, -0.5, math.log(2) / 0.2, 0.0]  # class 2 deltas (before stds)
    reg[0:4] = [-1.0, 0.0, 0.0, 0.0]
    head = StandardRoIHead(_const_bbox_head([2.5, 0.0, 4.0, 5.0], reg),
                           _const_mask_head([-1.0, 2.0, 0.5]), featmap_strides=[4, 8, 16, 32],
                           test_cfg=_test_cfg(score_thr=0.05, nms_iou=0.5, max_per_img=100))
    (det,) = head.simple_test(_feats(), [PROPOSAL], [META])
    probs = torch.softmax(torch.tensor([2.5, 0.0, 4.0, 5.0]), 0)
    # class 1 (p = 0.0046) is under the threshold; background (index 3) is never a label
    assert det.labels.tolist() == [2, 0]
    assert torch.allclose(det.scores, probs[[2, 0]])
    coder = DeltaXYWHBBoxCoder(stds=STDS[0])
    box2 = coder.decode(PROPOSAL[:, :4], torch.tensor([[1.0, -0.5, math.log(2) / 0.2, 0.0]]), max_shape=(100, 200))
    box0 = coder.decode(PROPOSAL[:, :4], torch.tensor([[-1.0, 0.0, 0.0, 0.0]]), max_shape=(100, 200))
    # x: centre 30 + 0.1 * 40 = 34, w = 40 * 2 = 80; y: 40 - 0.05 * 40 = 38, h = 40 → /0.5
    assert torch.allclose(box2, torch.tensor([[-6.0, 18.0, 74.0, 58.0]]).clamp(min=0), atol=1e-4)
    assert torch.allclose(det.boxes, torch.cat([box2, box0]) / 0.5, atol=1e-4)
    # masks: the label's channel, sigmoid; pasted into the boxes mapped back as mmdet does
    assert det.mask_probs.shape == (2, 28, 28)
    assert torch.allclose(det.mask_probs[0], torch.full((28, 28), torch.sigmoid(torch.tensor(0.5)).item()))
    assert torch.allclose(det.mask_probs[1], torch.full((28, 28), torch.sigmoid(torch.tensor(-1.0)).item()))
    assert torch.allclose(det.mask_boxes, det.boxes)


def test_background_last_means_no_detection():
    head = StandardRoIHead(_const_bbox_head([0.0, 0.0, 0.0, 6.0], [0.0] * 12), None, test_cfg=_test_cfg())
    (det,) = head.simple_test(_feats(), [PROPOSAL], [META])
    assert det.boxes.shape == (0, 4) and det.mask_probs is None
    empty = head.simple_test(_feats(b=2), [PROPOSAL[:0], PROPOSAL[:0]], [META, META])
    assert [d.boxes.shape[0] for d in empty] == [0, 0]


def test_cascade_score_is_softmax_of_mean_logits_and_box_from_last_stage():
    logits = [[3.0, 0.0, 0.0, 1.0], [0.0, 2.5, 0.0, 1.0], [0.0, 0.0, 0.0, 4.0]]
    deltas = [[1.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 1.0], [0.5, 0.5, -1.0, -1.0]]
    heads = [_const_bbox_head(lg, d, agnostic=True, stds=s) for lg, d, s in zip(logits, deltas, STDS)]
    masks = [_const_mask_head(b) for b in ([1.0, 3.0, -2.0], [0.0, -3.0, 2.0], [2.0, 0.0, 0.0])]
    head = CascadeRoIHead(heads, masks, test_cfg=_test_cfg(score_thr=0.01))
    (det,) = head.simple_test(_feats(), [PROPOSAL], [META])
    mean = torch.tensor(logits).mean(0)
    expected = torch.softmax(mean, 0)[:3]
    mean_of_softmax = torch.softmax(torch.tensor(logits), 1).mean(0)[:3]
    assert not torch.allclose(expected, mean_of_softmax, atol=1e-3)
    order = expected.argsort(descending=True)
    assert det.labels.tolist() == order.tolist()
    assert torch.allclose(det.scores, expected[order], atol=1e-6)
    rois = PROPOSAL[:, :4]
    for d, s in zip(deltas, STDS):  # stage 1 → 2 → 3, clipped every time
        rois = DeltaXYWHBBoxCoder(stds=s).decode(rois, torch.tensor([d]), max_shape=(100, 200))
    assert torch.allclose(det.boxes, (rois / 0.5).expand(3, 4), atol=1e-4)
    # masks: mean of the three heads' sigmoids on the label's channel
    for lab, probs in zip(det.labels.tolist(), det.mask_probs):
        want = sum(torch.sigmoid(torch.tensor(m.conv_logits.bias[lab].item())) for m in masks) / 3
        assert torch.allclose(probs, torch.full((28, 28), want.item()), atol=1e-6)


def test_htc_mask_information_flow_and_semantic_fusion():
    torch.manual_seed(0)
    bbox_heads = [Shared2FCBBoxHead(C, 7, 16, 3, reg_class_agnostic=True, target_stds=s) for s in STDS]
    mask_heads = [HTCMaskHead(with_conv_res=i > 0, num_convs=2, in_channels=C, conv_out_channels=C,
                              num_classes=3, roi_feat_size=14) for i in range(3)]
    sem = FusedSemanticHead(num_ins=5, fusion_level=1, num_convs=1, in_channels=C, conv_out_channels=C, num_classes=5)
    head = HybridTaskCascadeRoIHead(bbox_heads, mask_heads, semantic_head=sem, test_cfg=_test_cfg(score_thr=0.0)).eval()
    feats = _feats(h=64, w=96)
    rois = torch.tensor([[0.0, 4.0, 6.0, 60.0, 50.0], [0.0, 100.0, 80.0, 300.0, 250.0]])
    with torch.no_grad():
        seg, sem_feat = head.semantic_forward(feats)
        # semantic head by hand: every level resized to P3 with align_corners=True
        x = sem.lateral_convs[1](feats[1])
        for i in (0, 2, 3, 4):
            x = x + sem.lateral_convs[i](F.interpolate(feats[i], size=x.shape[-2:], mode="bilinear",
                                                       align_corners=True))
        x = sem.convs[0](x)
        assert torch.allclose(seg, sem.conv_logits(x), atol=1e-5) and seg.shape == (1, 5, 32, 48)
        assert torch.allclose(sem_feat, sem.conv_embedding(x), atol=1e-5)
        # box features + the 14x14 semantic RoI feature pooled to 7x7
        cls, reg = head.bbox_forward(1, feats, rois, sem_feat)
        sem_roi = roi_align(sem_feat, rois, (14, 14), spatial_scale=1 / 8, sampling_ratio=0, aligned=True)
        manual = bbox_heads[1](SingleRoIExtractor(7, [4, 8, 16, 32])(feats, rois) + F.adaptive_avg_pool2d(sem_roi, 7))
        assert torch.allclose(cls, manual[0], atol=1e-5) and torch.allclose(reg, manual[1], atol=1e-5)
        # stage-2 mask logits (training path): heads 0 and 1 give features through conv_res
        mfeat = SingleRoIExtractor(14, [4, 8, 16, 32])(feats, rois) + sem_roi
        f0 = mask_heads[0].forward_feat(mfeat)
        f1 = mask_heads[1].forward_feat(mfeat, f0)
        want2 = mask_heads[2](mfeat, f1)
        (got2,) = head.mask_logits(feats, rois, sem_feat, [2])
        assert torch.allclose(got2, want2, atol=1e-5)
        # test path: chain all three, mean of the sigmoids of the label's channel
        labels = torch.tensor([2, 0])
        l0, l1, l2 = (m.logits_from_feat(f) for m, f in zip(mask_heads, (f0, f1, mask_heads[2].forward_feat(mfeat, f1))))
        idx = torch.arange(2)
        want = (l0.sigmoid()[idx, labels] + l1.sigmoid()[idx, labels] + l2.sigmoid()[idx, labels]) / 3
        assert torch.allclose(head.mask_probs(feats, rois, labels, sem_feat), want, atol=1e-6)
        dets = head.simple_test(feats, [torch.cat([rois[:, 1:], torch.ones(2, 1)], 1)], [META])
    assert dets[0].semantic_logits.shape == (5, 32, 48)
    assert dets[0].mask_probs.shape[1:] == (28, 28)


# ----------------------------------------------------------------------------- mask pasting
def _numpy_paste(mask, box, h, w):
    """Direct NumPy transcription of mmdet's paste: grid_sample(bilinear, zeros, align_corners=False)
    at pixel centres + 0.5 with the box edges at -1 / +1, over the whole image (float64)."""
    m = mask.shape[0]
    x0, y0, x1, y1 = [float(v) for v in box]
    gx = (np.arange(w) + 0.5 - x0) / (x1 - x0) * 2 - 1
    gy = (np.arange(h) + 0.5 - y0) / (y1 - y0) * 2 - 1
    ix = ((gx + 1) * m - 1) / 2  # unnormalise, align_corners=False
    iy = ((gy + 1) * m - 1) / 2
    out = np.zeros((h, w))
    xl, yl = np.floor(ix).astype(int), np.floor(iy).astype(int)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = xl + dx, yl + dy
            wx = 1 - np.abs(ix - xi)
            wy = 1 - np.abs(iy - yi)
            okx, oky = (xi >= 0) & (xi < m), (yi >= 0) & (yi < m)
            vals = mask[np.clip(yi, 0, m - 1)][:, np.clip(xi, 0, m - 1)]
            out += (wy * oky)[:, None] * (wx * okx)[None, :] * vals
    return out


def test_paste_masks_matches_numpy_transcription():
    rng = np.random.RandomState(0)
    h, w = 60, 90
    probs = rng.rand(4, 28, 28).astype(np.float32)
    boxes = np.array([[10.3, 5.7, 40.2, 33.9], [0.0, 0.0, 90.0, 60.0], [70.5, 40.5, 89.9, 59.2],
                      [30.0, 20.0, 31.5, 22.0]], np.float32)
    pasted = paste_masks(torch.from_numpy(probs), torch.from_numpy(boxes), h, w, threshold=0.5).numpy()
    assert pasted.shape == (4, h, w) and pasted.dtype == bool
    for i in range(4):
        ref = _numpy_paste(probs[i].astype(np.float64), boxes[i], h, w)
        differ = pasted[i] != (ref >= 0.5)
        # only pixels whose value is 0.5 up to float32 rounding may differ
        assert np.all(np.abs(ref[differ] - 0.5) < 1e-5), i
        assert (ref >= 0.5).sum() > 0
    # an all-ones mask covers the pixels whose centres are inside the box (± half a mask cell)
    ones = paste_masks(torch.ones(1, 28, 28), torch.tensor([[10.0, 10.0, 38.0, 24.0]]), 40, 50).numpy()[0]
    ys, xs = np.nonzero(ones)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 37, 10, 23)
