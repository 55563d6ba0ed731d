"""RPN head: state-dict layout and mmdet 2.28 test-time proposal generation."""

from __future__ import annotations

import math

import torch
from torchvision.ops import nms

from nuimcli.models.rpn import RPNHead
from nuimcli.models.settings import RPNTrainSettings


def test_state_dict_names_and_order():
    head = RPNHead(in_channels=256, feat_channels=256)
    assert [(k, tuple(v.shape)) for k, v in head.state_dict().items()] == [
        ("rpn_conv.weight", (256, 256, 3, 3)), ("rpn_conv.bias", (256,)),
        ("rpn_cls.weight", (3, 256, 1, 1)), ("rpn_cls.bias", (3,)),
        ("rpn_reg.weight", (12, 256, 1, 1)), ("rpn_reg.bias", (12,)),
    ]


def test_forward_shapes():
    head = RPNHead(in_channels=8, feat_channels=8)
    feats = [torch.randn(2, 8, 16 // 2 ** i, 24 // 2 ** i) for i in range(5)]
    cls, reg = head(feats)
    assert [tuple(c.shape) for c in cls] == [(2, 3, 16 // 2 ** i, 24 // 2 ** i) for i in range(5)]
    assert [tuple(r.shape) for r in reg] == [(2, 12, 16 // 2 ** i, 24 // 2 ** i) for i in range(5)]
    anchors = head.anchors(cls)
    assert [a.shape[0] for a in anchors] == [c.shape[2] * c.shape[3] * 3 for c in cls]


def _logit(p):
    return math.log(p / (1 - p))


def test_nms_is_per_level_and_zero_size_boxes_are_dropped():
    head = RPNHead(in_channels=4, feat_channels=4, anchor_strides=[4, 8], anchor_scales=[8], anchor_ratios=[1.0])
    # level 0: one location at (0, 0): anchor [-16, -16, 16, 16]
    # level 1: one location: anchor [-32, -32, 32, 32]; dw = dh = log(0.5) makes it the level-0 box
    cls = [torch.tensor([[[[_logit(0.9)]]]]), torch.tensor([[[[_logit(0.8)]]]])]
    half = math.log(0.5)
    reg = [torch.zeros(1, 4, 1, 1), torch.tensor([0.0, 0.0, half, half]).view(1, 4, 1, 1)]
    (props,) = head.get_proposals(cls, reg, [(64, 64)])
    # identical boxes on two levels both survive: mmdet's NMS runs per level
    assert props.shape == (2, 5)
    assert torch.allclose(props[:, :4], torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 2), atol=1e-5)
    assert torch.allclose(props[:, 4], torch.tensor([0.9, 0.8]))
    # a box pushed out of the image is clipped to zero width and dropped (mmdet 2.28 filter)
    reg_out = [torch.tensor([100.0, 0.0, 0.0, 0.0]).view(1, 4, 1, 1), reg[1]]
    (props2,) = head.get_proposals(cls, reg_out, [(64, 64)])
    assert props2.shape == (1, 5) and props2[0, 4].item() == torch.tensor(0.8).item()


def test_nms_pre_per_level_and_max_per_img():
    # far-apart small anchors (16 px at a 64 px grid) so NMS removes nothing
    head = RPNHead(in_channels=4, feat_channels=4, anchor_strides=[64, 128], anchor_scales=[0.25],
                   anchor_ratios=[1.0], nms_pre=2, max_per_img=3)
    cls = [torch.tensor([_logit(p) for p in (0.6, 0.9, 0.7, 0.8)]).view(1, 1, 1, 4),
           torch.tensor([_logit(p) for p in (0.65, 0.95)]).view(1, 1, 1, 2)]
    reg = [torch.zeros(1, 4, 1, 4), torch.zeros(1, 4, 1, 2)]
    (props,) = head.get_proposals(cls, reg, [(1000, 1000)])
    # top-2 of level 0 (0.9, 0.8) and top-2 of level 1 (0.95, 0.65); then the best 3 overall
    assert torch.allclose(props[:, 4], torch.tensor([0.95, 0.9, 0.8]))
    # level 1 (stride 128): 32-px anchor at x = 128; level 0: 16-px anchors at x = 64, 192; y clipped at 0
    assert torch.allclose(props[:, :4], torch.tensor([[112.0, 0, 144, 16], [56, 0, 72, 8], [184, 0, 200, 8]]))
    # training mode uses the training limits
    head.train_cfg = RPNTrainSettings(allowed_border=-1, pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                                      match_low_quality=True, num_samples=256, pos_fraction=0.5, loss_bbox="l1",
                                      smooth_l1_beta=1.0, nms_pre=1, max_per_img=10)
    head.train()
    (train_props,) = head.get_proposals(cls, reg, [(1000, 1000)])
    assert torch.allclose(train_props[:, 4], torch.tensor([0.95, 0.9]))


def _reference_proposals(head, cls_scores, bbox_preds, img_shape, nms_pre, max_per_img, iou):
    """Plain transcription of mmdet 2.28 ``RPNHead._get_bboxes_single`` for image 0."""
    anchors = head.anchors(cls_scores)
    boxes_all, scores_all, lvl_all = [], [], []
    for lvl, (c, r, a) in enumerate(zip(cls_scores, bbox_preds, anchors)):
        s = c[0].permute(1, 2, 0).reshape(-1).sigmoid()
        d = r[0].permute(1, 2, 0).reshape(-1, 4)
        if s.numel() > nms_pre:
            s, order = s.sort(descending=True)
            s, d, a = s[:nms_pre], d[order[:nms_pre]], a[order[:nms_pre]]
        # decode by hand (means 0, stds 1)
        pw, ph = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        px, py = a[:, 0] + 0.5 * pw, a[:, 1] + 0.5 * ph
        dw = d[:, 2].clamp(-abs(math.log(0.016)), abs(math.log(0.016)))
        dh = d[:, 3].clamp(-abs(math.log(0.016)), abs(math.log(0.016)))
        gx, gy, gw, gh = px + pw * d[:, 0], py + ph * d[:, 1], pw * dw.exp(), ph * dh.exp()
        b = torch.stack([gx - gw / 2, gy - gh / 2, gx + gw / 2, gy + gh / 2], 1)
        b[:, 0::2] = b[:, 0::2].clamp(0, img_shape[1])
        b[:, 1::2] = b[:, 1::2].clamp(0, img_shape[0])
        ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        boxes_all.append(b[ok])
        scores_all.append(s[ok])
        lvl_all.append(torch.full((int(ok.sum()),), lvl))
    out = []
    for b, s in zip(boxes_all, scores_all):
        keep = nms(b, s, iou)
        out.append(torch.cat([b[keep], s[keep, None]], 1))
    out = torch.cat(out)
    return out[out[:, 4].argsort(descending=True)][:max_per_img]


def test_proposals_match_reference_transcription():
    torch.manual_seed(0)
    head = RPNHead(in_channels=8, feat_channels=8, nms_pre=60, max_per_img=80).eval()
    for conv in (head.rpn_cls, head.rpn_reg):
        torch.nn.init.normal_(conv.weight, std=0.5)
    feats = [torch.randn(1, 8, 24 // 2 ** i, 40 // 2 ** i) for i in range(5)]
    cls, reg = head(feats)
    (props,) = head.get_proposals(cls, reg, [(90, 150)])
    ref = _reference_proposals(head, cls, reg, (90, 150), 60, 80, 0.7)
    assert props.shape == ref.shape and props.shape[0] == 80
    assert torch.allclose(props[:, 4], ref[:, 4])
    assert torch.allclose(props[:, :4], ref[:, :4], atol=1e-4)
    assert props[:, 2].max() <= 150 and props[:, 3].max() <= 90
