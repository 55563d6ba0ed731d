"""Known answers for anchors, the delta coder, IoU and NMS (mmdet 2.x numerics)."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import nms

from nuimcli.models.boxes import (MAX_LOG_RATIO, AnchorGenerator, DeltaXYWHBBoxCoder, batched_nms,
                                  bbox2roi, bbox_overlaps, multiclass_nms)

R2 = math.sqrt(2.0)


def test_base_anchors_hand_computed():
    gen = AnchorGenerator(strides=[4], ratios=[0.5, 1.0, 2.0], scales=[8])
    # ratio = h / w; h = 4 * 8 * sqrt(r), w = 4 * 8 / sqrt(r); centred on (0, 0), no rounding
    # (torchvision's generator rounds these to integers, which would fail here).
    expected = torch.tensor([
        [-16 * R2, -8 * R2, 16 * R2, 8 * R2],   # r = 0.5: w = 45.25, h = 22.63
        [-16.0, -16.0, 16.0, 16.0],             # r = 1
        [-8 * R2, -16 * R2, 8 * R2, 16 * R2],   # r = 2
    ])
    assert torch.allclose(gen.base_anchors[0], expected, atol=1e-4)
    assert gen.num_base_anchors == 3


def test_grid_anchor_order_y_x_anchor():
    gen = AnchorGenerator(strides=[8, 16], ratios=[0.5, 1.0, 2.0], scales=[8])
    level0, level1 = gen.grid_anchors([(2, 3), (1, 2)])
    assert level0.shape == (2 * 3 * 3, 4) and level1.shape == (1 * 2 * 3, 4)
    # index = (y * W + x) * A + a; y=1, x=2, a=1 (ratio 1, 64x64 box) centred at (16, 8)
    assert level0[(1 * 3 + 2) * 3 + 1].tolist() == [16 - 32, 8 - 32, 16 + 32, 8 + 32]
    # level 1 (stride 16, size 128): x=1, a=2 (ratio 2: w = 128/sqrt2, h = 128*sqrt2)
    a = level1[1 * 3 + 2]
    assert torch.allclose(a, torch.tensor([16 - 64 / R2, -64 * R2, 16 + 64 / R2, 64 * R2]), atol=1e-4)


def test_valid_flags_padded_area():
    gen = AnchorGenerator(strides=[4], ratios=[1.0], scales=[8])
    (flags,) = gen.valid_flags([(4, 4)], pad_shape=(8, 12))
    grid = flags.view(4, 4)
    assert grid[:2, :3].all() and not grid[2:].any() and not grid[:, 3].any()


def test_encode_decode_identity():
    coder = DeltaXYWHBBoxCoder(stds=(0.1, 0.1, 0.2, 0.2))
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 100
    props = torch.cat([xy, xy + 5 + torch.rand(50, 2, generator=g) * 80], 1)
    xy2 = torch.rand(50, 2, generator=g) * 100
    gts = torch.cat([xy2, xy2 + 5 + torch.rand(50, 2, generator=g) * 80], 1)
    deltas = coder.encode(props, gts)
    assert torch.allclose(coder.decode(props, deltas), gts, atol=1e-3)
    # stds divide: the first delta of a 10-px shift of a 20-px box is 0.5 / 0.1 = 5
    d = coder.encode(torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([[10.0, 0.0, 30.0, 20.0]]))
    assert torch.allclose(d, torch.tensor([[5.0, 0.0, 0.0, 0.0]]))


def test_decode_clamps_log_ratio_and_clips_to_w_h():
    coder = DeltaXYWHBBoxCoder()
    assert MAX_LOG_RATIO == pytest.approx(abs(math.log(16 / 1000)))
    roi = torch.tensor([[100.0, 100.0, 110.0, 110.0]])
    big = coder.decode(roi, torch.tensor([[0.0, 0.0, 10.0, -10.0]]))
    # dw clamped to +4.135 → w = 10 * 1000 / 16 = 625; dh clamped to -4.135 → h = 10 * 16 / 1000
    assert big[0, 2] - big[0, 0] == pytest.approx(625.0, rel=1e-5)
    assert big[0, 3] - big[0, 1] == pytest.approx(0.16, rel=1e-4)
    # clipping to [0, W] x [0, H] (not W - 1)
    clipped = coder.decode(roi, torch.tensor([[0.0, 0.0, 10.0, 10.0]]), max_shape=(300, 200))
    assert clipped.tolist() == [[0.0, 0.0, 200.0, 300.0]]


def test_decode_class_specific_deltas():
    coder = DeltaXYWHBBoxCoder(stds=(0.1, 0.1, 0.2, 0.2))
    roi = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])  # class 1 moves x by 0.1*10
    out = coder.decode(roi, deltas)
    assert out.shape == (1, 8)
    assert out[0, :4].tolist() == [0, 0, 10, 10] and out[0, 4:].tolist() == pytest.approx([1, 0, 11, 10])


def test_bbox_overlaps_no_plus_one():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 30.0, 30.0]])
    iou = bbox_overlaps(a, b)
    assert iou[0].tolist() == pytest.approx([25 / 175, 0.0])
    assert bbox_overlaps(a, b, mode="iof")[0].tolist() == pytest.approx([0.25, 0.0])
    assert bbox_overlaps(b, b, is_aligned=True).tolist() == pytest.approx([1.0, 1.0])


def _random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 300
    return torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 60], 1), torch.rand(n, generator=g)


def test_batched_nms_groups_and_split_path_agree():
    boxes, scores = _random_boxes(400, 1)
    idxs = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(2))
    keep = batched_nms(boxes, scores, idxs, 0.5)
    keep_split = batched_nms(boxes, scores, idxs, 0.5, split_thr=10)
    assert sorted(keep.tolist()) == sorted(keep_split.tolist())
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])
    # per group it is plain NMS
    for grp in range(4):
        sel = (idxs == grp).nonzero().view(-1)
        ref = set(sel[nms(boxes[sel], scores[sel], 0.5)].tolist())
        assert ref == set(k for k in keep.tolist() if idxs[k] == grp)


def test_multiclass_nms_background_last_and_threshold():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    # 2 classes + background (last column)
    scores = torch.tensor([[0.6, 0.1, 0.3], [0.5, 0.45, 0.05], [0.05, 0.9, 0.05]])
    dets, labels, inds = multiclass_nms(boxes, scores, score_thr=0.05, iou_threshold=0.5)
    # score 0.05 is not > 0.05; box 1 class 0 suppressed by box 0 class 0; class 1 keeps box 1
    assert labels.tolist() == [1, 0, 1]
    assert dets[:, 4].tolist() == pytest.approx([0.9, 0.6, 0.45])
    assert (inds // 2).tolist() == [2, 0, 1]
    dets2, labels2, _ = multiclass_nms(boxes, scores, 0.05, 0.5, max_num=2)
    assert labels2.tolist() == [1, 0] and dets2.shape == (2, 5)
    empty, lab, _ = multiclass_nms(boxes, scores, 0.99, 0.5)
    assert empty.shape == (0, 5) and lab.shape == (0,)


def test_bbox2roi():
    rois = bbox2roi([torch.ones(2, 5), torch.zeros(0, 4), torch.full((1, 4), 3.0)])
    assert rois.shape == (3, 5)
    assert rois[:, 0].tolist() == [0, 0, 2]
    assert rois[2, 1:].tolist() == [3, 3, 3, 3]
