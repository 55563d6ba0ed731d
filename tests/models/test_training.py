"""Training losses of every detector type: names, finiteness, gradients, seeding, target pieces."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nuimcli.data.augment import collate, train_transform
from nuimcli.data.structures import Batch, ImageMeta
from nuimcli.models.build import build_model
from nuimcli.models.roi_heads import FCNMaskHead, Shared2FCBBoxHead, StandardRoIHead
from nuimcli.models.roi_heads.base import _drop_gt_proposals
from nuimcli.models.settings import RoITestSettings
from nuimcli.models.targets import SamplingResult
from nuimcli.presets import load_preset

SMALL = [
    "model.backbone.depth=18", "model.fpn_channels=32", "model.rpn.feat_channels=32",
    "model.roi.fc_out_channels=64", "model.rpn.train_nms_pre=300", "model.rpn.train_max_per_img=200",
    "data.train_scales=[[192, 108], [224, 126]]",
]


def _batch(preset, n=2, seed=0) -> Batch:
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        img = rng.integers(0, 255, (108, 192, 3), dtype=np.uint8)
        boxes = np.array([[20, 10, 80, 60], [100, 40, 180, 100], [5, 70, 40, 105]], np.float32)
        masks = np.zeros((3, 108, 192), np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
            masks[k, y1:y2, x1:(x1 + x2) // 2 + 5] = 1
            img[y1:y2, x1:x2] = (40 * k, 200, 255 - 60 * k)
        sem = np.zeros((108, 192), np.uint8)
        sem[60:] = 24
        sem[10:60, 20:80] = 17
        s = {"img": img, "bboxes": boxes, "labels": np.array([0, 3, 7]), "masks": masks, "semantic": sem,
             "file_name": f"{i}.jpg", "image_id": i}
        out = train_transform(s, preset.data, np.random.default_rng(seed * 10 + i))
        out.img_meta = out.img_meta.with_seed(seed * 10 + i)
        samples.append(out)
    batch = collate(samples)
    if not preset.model.semantic.enabled:
        batch.gt_semantic_seg = None
    return batch


STAGE_TERMS = ["loss_cls", "loss_bbox", "acc", "loss_mask"]
EXPECTED = {
    "mask-rcnn-r50-1x": {"loss_rpn_cls", "loss_rpn_bbox", *STAGE_TERMS},
    "cascade-mask-rcnn-r50-1x": {"loss_rpn_cls", "loss_rpn_bbox", *(f"s{i}.{t}" for i in range(3) for t in STAGE_TERMS)},
    "htc-r50-1x": {"loss_rpn_cls", "loss_rpn_bbox", "loss_semantic_seg",
                   *(f"s{i}.{t}" for i in range(3) for t in STAGE_TERMS)},
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_detector_trains(name):
    torch.manual_seed(0)
    preset = load_preset(name, SMALL)
    model = build_model(preset)
    model.train()
    batch = _batch(preset)
    losses = model.loss(batch)
    assert set(losses) == EXPECTED[name]
    for k, v in losses.items():
        assert v.dim() == 0 and math.isfinite(float(v.detach())), (k, v)
    total = sum(v for k, v in losses.items() if "loss" in k)
    total.backward()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    # frozen_stages=1: the stem and layer1 are frozen, nothing else.
    assert frozen and all(n.startswith(("backbone.conv1", "backbone.bn1", "backbone.layer1.")) for n in frozen)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
        else:
            assert p.grad is None, n
    # Every head actually learns from this batch (a non-zero gradient somewhere in it).
    for prefix in ("backbone.layer4", "neck.", "rpn_head.rpn_cls", "roi_head.bbox_head", "roi_head.mask_head"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
                   if n.startswith(prefix)), prefix
    if name.startswith("htc"):
        assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith("roi_head.semantic_head"))
        assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "conv_res" in n)
    if name.startswith("cascade") or name.startswith("htc"):
        # Stage weights: s1/s2 losses are scaled by 0.5 / 0.25 (compare with the stage head's raw loss below).
        assert losses["s2.loss_cls"] < losses["s0.loss_cls"]


def test_losses_replay_with_the_same_seeds():
    torch.manual_seed(0)
    preset = load_preset("mask-rcnn-r50-1x", SMALL)
    model = build_model(preset)
    model.train()
    a = model.loss(_batch(preset))
    b = model.loss(_batch(preset))
    assert all(torch.equal(a[k], b[k]) for k in a)
    batch = _batch(preset)
    batch.img_metas = [m.with_seed(m.seed + 1000) for m in batch.img_metas]
    c = model.loss(batch)
    # Other anchors sampled (fewer than 512 RoIs exist here, so the R-CNN takes them all).
    assert not torch.equal(a["loss_rpn_cls"], c["loss_rpn_cls"])


def test_rpn_loss_with_zero_logits_is_ln2():
    torch.manual_seed(0)
    preset = load_preset("mask-rcnn-r50-1x", SMALL)
    model = build_model(preset)
    model.train()
    with torch.no_grad():
        model.rpn_head.rpn_cls.weight.zero_()
        model.rpn_head.rpn_cls.bias.zero_()
        model.rpn_head.rpn_reg.weight.zero_()
        model.rpn_head.rpn_reg.bias.zero_()
    losses = model.loss(_batch(preset))
    # Every sampled anchor (positive or negative) contributes log(2); the mean is log(2).
    assert float(losses["loss_rpn_cls"].detach()) == pytest.approx(math.log(2), abs=1e-6)
    # Zero deltas: the L1 loss is the mean |target| over the samples, positive but small.
    assert 0 < float(losses["loss_rpn_bbox"].detach()) < 1


def test_semantic_loss_ignores_label_zero():
    torch.manual_seed(0)
    preset = load_preset("htc-r50-1x", SMALL)
    model = build_model(preset)
    model.train()
    batch = _batch(preset)
    batch.gt_semantic_seg.zero_()
    losses = model.loss(batch)
    assert float(losses["loss_semantic_seg"].detach()) == 0.0
    batch = _batch(preset)
    losses = model.loss(batch)
    assert float(losses["loss_semantic_seg"].detach()) > 0.0


def _sampling(pos_boxes, neg_boxes, pos_is_gt, gt_inds, labels):
    pos = torch.tensor(pos_boxes, dtype=torch.float32).reshape(-1, 4)
    neg = torch.tensor(neg_boxes, dtype=torch.float32).reshape(-1, 4)
    return SamplingResult(
        pos_inds=torch.arange(len(pos)), neg_inds=torch.arange(len(neg)), pos_bboxes=pos, neg_bboxes=neg,
        pos_is_gt=torch.tensor(pos_is_gt, dtype=torch.uint8), pos_assigned_gt_inds=torch.tensor(gt_inds),
        pos_gt_bboxes=pos.clone(), pos_gt_labels=torch.tensor(labels))


def test_refine_drops_gt_proposals_and_regresses():
    head = Shared2FCBBoxHead(in_channels=4, roi_feat_size=1, fc_out_channels=8, reg_class_agnostic=True)
    roi_head = StandardRoIHead(head, None, test_cfg=RoITestSettings(score_thr=0.05, nms_iou=0.5, max_per_img=100,
                                                                    mask_thr_binary=0.5))
    s = _sampling([[0, 0, 10, 10], [2, 2, 12, 12]], [[50, 50, 60, 60]], [1, 0], [0, 0], [3, 3])
    rois = torch.cat([torch.zeros(3, 1), s.bboxes], 1)
    labels = torch.tensor([3, 3, 10])
    deltas = torch.zeros(3, 4)
    deltas[:, 0] = 1.0  # shift right by 0.1 * width
    meta = ImageMeta(ori_shape=(100, 100), img_shape=(100, 100), pad_shape=(128, 128), scale_factor=(1.0,) * 4)
    out = _drop_gt_proposals(roi_head._regress(0, rois, labels, deltas, [meta], [3]), [s])
    assert len(out) == 1 and out[0].shape == (2, 4)  # the GT proposal is gone
    assert torch.allclose(out[0], torch.tensor([[3.0, 2, 13, 12], [51, 50, 61, 60]]))


def test_mask_loss_small_for_perfect_logits():
    gt = torch.zeros(1, 64, 64, dtype=torch.uint8)
    gt[0, 16:48, 16:32] = 1  # left half of the box (16..48)
    s = _sampling([[16, 16, 48, 48]], [], [0], [0], [2])
    logits = torch.full((1, 10, 28, 28), -20.0)
    logits[0, 2, :, :14] = 20.0
    assert float(FCNMaskHead.loss(logits, [s], [gt], 28)) < 1e-6
    logits[0, 2] *= -1
    assert float(FCNMaskHead.loss(logits, [s], [gt], 28)) > 10


def test_forward_follows_the_training_flag():
    torch.manual_seed(0)
    preset = load_preset("mask-rcnn-r50-1x", SMALL)
    model = build_model(preset).train()
    batch = _batch(preset)
    assert set(model(batch)) == EXPECTED["mask-rcnn-r50-1x"]
    model.eval()
    dets = model(batch.images, batch.img_metas)
    assert len(dets) == 2 and dets[0].boxes.shape[1] == 4
    with pytest.raises(ValueError, match="images, img_metas"):
        model(batch)


def test_heads_without_train_settings_refuse_to_train():
    torch.manual_seed(0)
    preset = load_preset("mask-rcnn-r50-1x", SMALL)
    model = build_model(preset).train()
    model.roi_head.train_cfg = None
    with pytest.raises(ValueError, match="without train settings"):
        model.loss(_batch(preset))
