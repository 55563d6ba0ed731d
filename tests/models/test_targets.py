"""Assigner, sampler, mask targets and border rule against hand-worked cases and brute force."""

from __future__ import annotations

import torch

from nuimcli.models.targets import (
    anchor_inside_flags,
    mask_targets,
    max_iou_assign,
    random_sample,
    smooth_l1,
)


def _loop_assign(overlaps, pos, neg, min_pos, low_quality, assign_all):
    """mmdet's MaxIoUAssigner written as its per-GT loop, for comparison."""
    g, n = overlaps.shape
    gt_inds = torch.full((n,), -1, dtype=torch.long)
    mx, arg = overlaps.max(0)
    gmx, garg = overlaps.max(1)
    gt_inds[(mx >= 0) & (mx < neg)] = 0
    p = mx >= pos
    gt_inds[p] = arg[p] + 1
    if low_quality:
        for i in range(g):
            if gmx[i] >= min_pos:
                if assign_all:
                    gt_inds[overlaps[i] == gmx[i]] = i + 1
                else:
                    gt_inds[garg[i]] = i + 1
    return gt_inds


def test_assign_thresholds_by_hand():
    # 2 GTs x 5 boxes
    ov = torch.tensor([[0.80, 0.50, 0.10, 0.35, 0.00],
                       [0.20, 0.65, 0.25, 0.35, 0.29]])
    r = max_iou_assign(ov, torch.tensor([3, 7]), 0.7, 0.3, 0.3, match_low_quality=False)
    assert r.gt_inds.tolist() == [1, -1, 0, -1, 0]
    assert r.labels.tolist() == [3, -1, -1, -1, -1]
    r = max_iou_assign(ov, torch.tensor([3, 7]), 0.7, 0.3, 0.3, match_low_quality=True)
    # GT 1's best IoU 0.65 >= 0.3 claims box 1 even though 0.65 < 0.7.
    assert r.gt_inds.tolist() == [1, 2, 0, -1, 0]
    assert r.labels.tolist() == [3, 7, -1, -1, -1]
    assert torch.allclose(r.max_overlaps, torch.tensor([0.8, 0.65, 0.25, 0.35, 0.29]))


def test_assign_gt_max_assign_all_ties_and_last_gt_wins():
    ov = torch.tensor([[0.40, 0.40, 0.10],
                       [0.40, 0.10, 0.20]])
    r = max_iou_assign(ov, None, 0.7, 0.3, 0.3, True, gt_max_assign_all=True)
    # GT0 claims boxes 0 and 1 (tie), then GT1 claims box 0 (its best): later GT wins.
    assert r.gt_inds.tolist() == [2, 1, 0]
    r = max_iou_assign(ov, None, 0.7, 0.3, 0.3, True, gt_max_assign_all=False)
    assert r.gt_inds.tolist() == [2, -1, 0]


def test_assign_matches_loop_on_random_overlaps():
    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        ov = (torch.rand(4, 50, generator=g) * 4).round() / 4  # many ties
        for lq in (True, False):
            for aa in (True, False):
                r = max_iou_assign(ov, None, 0.7, 0.3, 0.3, lq, aa)
                assert torch.equal(r.gt_inds, _loop_assign(ov, 0.7, 0.3, 0.3, lq, aa)), (trial, lq, aa)


def test_assign_no_gt_or_no_boxes():
    r = max_iou_assign(torch.zeros(0, 6), None, 0.7, 0.3, 0.3)
    assert r.gt_inds.tolist() == [0] * 6
    r = max_iou_assign(torch.zeros(3, 0), torch.tensor([1, 2, 3]), 0.7, 0.3, 0.3)
    assert r.gt_inds.numel() == 0


def test_random_sample_counts_gt_as_proposals_and_seeding():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])
    labels = torch.tensor([4, 9])
    boxes = torch.cat([gt + 0.5] * 10 + [torch.tensor([[100.0, 100.0, 110.0, 110.0]]).repeat(300, 1)])
    from nuimcli.models.boxes import bbox_overlaps

    assign = max_iou_assign(bbox_overlaps(gt, boxes), labels, 0.5, 0.5, 0.5)
    s = random_sample(assign, boxes, gt, labels, num=64, pos_fraction=0.25, add_gt_as_proposals=True,
                      generator=torch.Generator().manual_seed(3))
    assert len(s.pos_inds) == 16 and len(s.neg_inds) == 48
    assert torch.equal(s.pos_inds, s.pos_inds.sort().values)
    assert set(s.pos_gt_labels.tolist()) <= {4, 9}
    # GT boxes are at combined indices 0, 1; pos_is_gt flags them.
    assert torch.equal(s.pos_is_gt.bool(), s.pos_inds < 2)
    assert torch.equal(s.pos_gt_bboxes, gt[s.pos_assigned_gt_inds])
    assert s.bboxes.shape == (64, 4)
    s2 = random_sample(assign, boxes, gt, labels, 64, 0.25, True, torch.Generator().manual_seed(3))
    assert torch.equal(s.pos_inds, s2.pos_inds) and torch.equal(s.neg_inds, s2.neg_inds)
    s3 = random_sample(assign, boxes, gt, labels, 64, 0.25, True, torch.Generator().manual_seed(4))
    assert not torch.equal(s.neg_inds, s3.neg_inds)


def test_random_sample_fills_with_negatives_when_few_positives():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 9.0]] + [[50.0, 50.0, 60.0, 60.0]] * 20)
    from nuimcli.models.boxes import bbox_overlaps

    assign = max_iou_assign(bbox_overlaps(gt, boxes), None, 0.7, 0.3, 0.3)
    s = random_sample(assign, boxes, gt, None, 16, 0.5, False, torch.Generator().manual_seed(0))
    assert s.pos_inds.tolist() == [0] and len(s.neg_inds) == 15


def test_mask_targets_crop_and_binarise():
    m = torch.zeros(2, 40, 60, dtype=torch.uint8)
    m[0, 10:30, 10:20] = 1  # left half of the box (10..30, 10..30) is on
    m[1, :, :] = 1
    props = torch.tensor([[10.0, 10.0, 30.0, 30.0], [-5.0, -5.0, 70.0, 50.0]])
    t = mask_targets(props, torch.tensor([0, 1]), m, 28)
    assert t.shape == (2, 28, 28)
    assert t[0, :, :13].min() == 1 and t[0, :, 15:].max() == 0
    # Proposal clipped to the bitmap first, so the full-on mask stays all ones.
    assert t[1].min() == 1
    assert mask_targets(props[:0], torch.tensor([], dtype=torch.long), m, 28).shape == (0, 28, 28)


def test_anchor_inside_flags_border_rule():
    anchors = torch.tensor([[-1.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 20, 10], [0, 0, 19.9, 14.9]])
    valid = torch.tensor([True, True, True, False])
    assert anchor_inside_flags(anchors, valid, (15, 20), -1).tolist() == [True, True, True, False]
    assert anchor_inside_flags(anchors, valid, (15, 20), 0).tolist() == [False, True, False, False]


def test_smooth_l1():
    d = torch.tensor([0.0, 0.05, 0.5, 2.0])
    out = smooth_l1(d, torch.zeros(4), beta=0.1)
    assert torch.allclose(out, torch.tensor([0.0, 0.5 * 0.05 ** 2 / 0.1, 0.45, 1.95]))


def test_mask_targets_equal_full_image_roialign():
    """The per-GT crops give mmdet's full-bitmap RoIAlign result."""
    from torchvision.ops import roi_align

    g = torch.Generator().manual_seed(0)
    h, w = 96, 160
    masks = (torch.rand(4, h, w, generator=g) > 0.5).to(torch.uint8)
    masks[1, :40] = 0
    x1 = torch.rand(40, generator=g) * (w - 10) - 5
    y1 = torch.rand(40, generator=g) * (h - 10) - 5
    props = torch.stack([x1, y1, x1 + 3 + torch.rand(40, generator=g) * 80,
                         y1 + 3 + torch.rand(40, generator=g) * 60], 1)
    inds = torch.randint(0, 4, (40,), generator=g)
    got = mask_targets(props, inds, masks, 28)
    clipped = props.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, w)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, h)
    full = masks[inds][:, None].float()
    rois = torch.cat([torch.arange(40, dtype=torch.float32)[:, None], clipped], 1)
    want = (roi_align(full, rois, (28, 28), 1.0, 0, True).squeeze(1) >= 0.5).float()
    assert (got != want).float().mean() < 1e-3
