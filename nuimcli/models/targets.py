"""Training targets: IoU, max-IoU assignment, random sampling, box deltas, mask targets.

Pure functions over tensors, following mmdet 2.x (v2 box convention: width = x2 - x1, no +1):
``MaxIoUAssigner``, ``RandomSampler``, ``mask_target``, the border rule of ``AnchorHead`` and
the losses' element-wise parts. (IoU, anchors and the delta coder live in :mod:`boxes`.) Randomness only comes from an explicit
``torch.Generator`` so that a training step can be replayed exactly (resume, DDP checks), or,
inside :func:`fixed_sampling`, from no randomness at all (the training-parity fixture): see
:func:`seeded_generators`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor
from torchvision.ops import roi_align

from nuimcli.data.structures import ImageMeta


@dataclass
class AssignResult:
    """Result of assigning N boxes to G ground truths.

    ``gt_inds`` [N] int64: 0 = negative, -1 = ignored, k >= 1 = matched to GT k-1.
    ``max_overlaps`` [N]: best IoU of each box. ``labels`` [N] int64: GT label of positives, -1 else.
    """

    num_gts: int
    gt_inds: Tensor
    max_overlaps: Tensor
    labels: Tensor

    def add_gt(self, gt_labels: Tensor) -> "AssignResult":
        """Prepend the GT boxes themselves as perfectly matched positives (``add_gt_as_proposals``)."""
        n = len(gt_labels)
        self_inds = torch.arange(1, n + 1, dtype=torch.long, device=gt_labels.device)
        return AssignResult(
            num_gts=self.num_gts,
            gt_inds=torch.cat([self_inds, self.gt_inds]),
            max_overlaps=torch.cat([self.max_overlaps.new_ones(n), self.max_overlaps]),
            labels=torch.cat([gt_labels.long(), self.labels]),
        )


def max_iou_assign(
    overlaps: Tensor,
    gt_labels: Optional[Tensor],
    pos_iou_thr: float,
    neg_iou_thr: float,
    min_pos_iou: float,
    match_low_quality: bool = True,
    gt_max_assign_all: bool = True,
) -> AssignResult:
    """mmdet's ``MaxIoUAssigner.assign_wrt_overlaps``.

    overlaps [G, N] (IoU of every GT with every box); gt_labels [G] or None.
    Boxes with max IoU in [0, neg_iou_thr) become negatives, >= pos_iou_thr positives of their
    best GT; with ``match_low_quality`` every GT whose best IoU is >= ``min_pos_iou`` also claims
    its best box (all boxes tying that IoU when ``gt_max_assign_all``), later GTs winning ties.
    Boxes in between stay ignored (-1).
    """
    num_gts, num_boxes = overlaps.shape
    device = overlaps.device
    gt_inds = torch.full((num_boxes,), -1, dtype=torch.long, device=device)
    if num_gts == 0 or num_boxes == 0:
        max_overlaps = overlaps.new_zeros((num_boxes,))
        if num_gts == 0:
            gt_inds.zero_()
        labels = torch.full((num_boxes,), -1, dtype=torch.long, device=device)
        return AssignResult(num_gts, gt_inds, max_overlaps, labels)

    max_overlaps, argmax_overlaps = overlaps.max(dim=0)
    gt_max_overlaps, gt_argmax_overlaps = overlaps.max(dim=1)

    gt_inds[(max_overlaps >= 0) & (max_overlaps < neg_iou_thr)] = 0
    pos = max_overlaps >= pos_iou_thr
    gt_inds[pos] = argmax_overlaps[pos] + 1

    if match_low_quality:
        qualifies = gt_max_overlaps >= min_pos_iou  # [G]
        if gt_max_assign_all:
            claim = (overlaps == gt_max_overlaps[:, None]) & qualifies[:, None]  # [G, N]
        else:
            claim = torch.zeros_like(overlaps, dtype=torch.bool)
            rows = torch.nonzero(qualifies).squeeze(1)
            claim[rows, gt_argmax_overlaps[rows]] = True
        # mmdet loops over GTs in order, so the last claiming GT wins: take the largest index.
        order = torch.arange(1, num_gts + 1, device=device)[:, None]
        winner = (claim.long() * order).max(dim=0).values
        claimed = winner > 0
        gt_inds[claimed] = winner[claimed]

    labels = torch.full((num_boxes,), -1, dtype=torch.long, device=device)
    if gt_labels is not None:
        p = gt_inds > 0
        labels[p] = gt_labels[gt_inds[p] - 1].long()
    return AssignResult(num_gts, gt_inds, max_overlaps, labels)


@dataclass
class SamplingResult:
    """Sampled positives and negatives of one image (mmdet's ``SamplingResult``).

    ``bboxes`` [P+Q, 4] = positives then negatives (the RoIs fed to the head, in that order);
    ``pos_is_gt`` [P] uint8: 1 where the positive is a GT box added as a proposal;
    ``pos_assigned_gt_inds`` [P] 0-based GT index; ``pos_gt_bboxes`` [P, 4]; ``pos_gt_labels`` [P].
    """

    pos_inds: Tensor
    neg_inds: Tensor
    pos_bboxes: Tensor
    neg_bboxes: Tensor
    pos_is_gt: Tensor
    pos_assigned_gt_inds: Tensor
    pos_gt_bboxes: Tensor
    pos_gt_labels: Tensor

    @property
    def bboxes(self) -> Tensor:
        return torch.cat([self.pos_bboxes, self.neg_bboxes])


#: ``choose(gallery [K] int64, num) -> [num] int64``: the subset a sampler keeps when it has more
#: candidates than it needs. None = uniformly at random (the training behaviour).
Chooser = Callable[[Tensor, int], Tensor]
_fixed_choice: Optional[Chooser] = None


@contextlib.contextmanager
def fixed_sampling(choose: Chooser) -> Iterator[None]:
    """Within the block, :func:`random_sample` keeps ``choose(gallery, num)`` instead of a random subset.

    For comparing losses with mmdet, whose ``RandomSampler.random_choice`` draws from the global
    RNG in its own order: both sides are given the same deterministic rule instead, so they
    sample the same anchors and RoIs. Every sampler of a training step (RPN and each R-CNN
    stage) goes through it. Not thread-safe; restores the previous rule on exit.
    """
    global _fixed_choice
    previous, _fixed_choice = _fixed_choice, choose
    try:
        yield
    finally:
        _fixed_choice = previous


def _random_choice(gallery: Tensor, num: int, generator: Optional[torch.Generator]) -> Tensor:
    if _fixed_choice is not None:
        return _fixed_choice(gallery, num)
    perm = torch.randperm(gallery.numel(), generator=generator)[:num].to(gallery.device)
    return gallery[perm]


def random_sample(
    assign: AssignResult,
    bboxes: Tensor,
    gt_bboxes: Tensor,
    gt_labels: Optional[Tensor],
    num: int,
    pos_fraction: float,
    add_gt_as_proposals: bool,
    generator: Optional[torch.Generator] = None,
) -> SamplingResult:
    """mmdet's ``RandomSampler.sample`` (``neg_pos_ub=-1``).

    bboxes [N, >=4] (extra columns such as scores are dropped), gt_bboxes [G, 4].
    Takes at most ``int(num * pos_fraction)`` positives, fills up to ``num`` with negatives,
    both chosen uniformly at random (``generator``) and returned sorted by index.
    """
    bboxes = bboxes[:, :4]
    gt_flags = bboxes.new_zeros((bboxes.shape[0],), dtype=torch.uint8)
    if add_gt_as_proposals and len(gt_bboxes) > 0:
        if gt_labels is None:
            raise ValueError("gt_labels are needed to add GT boxes as proposals")
        bboxes = torch.cat([gt_bboxes.to(bboxes.dtype), bboxes], dim=0)
        assign = assign.add_gt(gt_labels)
        gt_flags = torch.cat([bboxes.new_ones((len(gt_bboxes),), dtype=torch.uint8), gt_flags])

    num_expected_pos = int(num * pos_fraction)
    pos_inds = torch.nonzero(assign.gt_inds > 0, as_tuple=False).squeeze(1)
    if pos_inds.numel() > num_expected_pos:
        pos_inds = _random_choice(pos_inds, num_expected_pos, generator)
    pos_inds = pos_inds.unique()
    num_expected_neg = num - pos_inds.numel()
    neg_inds = torch.nonzero(assign.gt_inds == 0, as_tuple=False).squeeze(1)
    if neg_inds.numel() > num_expected_neg:
        neg_inds = _random_choice(neg_inds, num_expected_neg, generator)
    neg_inds = neg_inds.unique()

    pos_assigned = assign.gt_inds[pos_inds] - 1
    if len(gt_bboxes) > 0:
        pos_gt_bboxes = gt_bboxes[pos_assigned].to(bboxes.dtype).reshape(-1, 4)
    else:
        pos_gt_bboxes = bboxes.new_zeros((0, 4))
    pos_labels = assign.labels[pos_inds] if gt_labels is not None else torch.zeros_like(pos_inds)
    return SamplingResult(
        pos_inds=pos_inds,
        neg_inds=neg_inds,
        pos_bboxes=bboxes[pos_inds],
        neg_bboxes=bboxes[neg_inds],
        pos_is_gt=gt_flags[pos_inds],
        pos_assigned_gt_inds=pos_assigned,
        pos_gt_bboxes=pos_gt_bboxes,
        pos_gt_labels=pos_labels,
    )


def mask_targets(pos_proposals: Tensor, pos_assigned_gt_inds: Tensor, gt_masks: Tensor, mask_size: int) -> Tensor:
    """mmdet's ``mask_target_single``: GT bitmaps cropped to the proposals and resized, binarised.

    pos_proposals [P, 4] (resized-image frame), pos_assigned_gt_inds [P] (0-based), gt_masks
    [G, H, W] (uint8/bool, at the padded resized image size) -> [P, mask_size, mask_size] float
    of 0/1. Proposals are clipped to the mask bitmap first; RoIAlign(aligned=True, sampling 0,
    scale 1) then ``>= 0.5``.

    mmdet converts every assigned GT bitmap to float at full size; here each GT is cut to the
    union of its proposals plus a 2-pixel margin first (RoIAlign's bilinear samples of a box
    never reach further), so memory stays bounded at full nuImages resolution.
    """
    num_pos = pos_proposals.shape[0]
    if num_pos == 0:
        return pos_proposals.new_zeros((0, mask_size, mask_size))
    h, w = gt_masks.shape[-2:]
    boxes = pos_proposals.detach().float().clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    inds = pos_assigned_gt_inds.to(boxes.device)
    out = boxes.new_zeros((num_pos, mask_size, mask_size))
    for g in torch.unique(inds).tolist():
        sel = torch.nonzero(inds == g, as_tuple=False).squeeze(1)
        b = boxes[sel]
        x0 = max(int(b[:, 0].min().floor()) - 2, 0)
        y0 = max(int(b[:, 1].min().floor()) - 2, 0)
        x1 = min(int(b[:, 2].max().ceil()) + 2, w)
        y1 = min(int(b[:, 3].max().ceil()) + 2, h)
        crop = gt_masks[g, y0:y1, x0:x1].to(device=boxes.device, dtype=torch.float32)[None, None]
        shifted = b - b.new_tensor([x0, y0, x0, y0])
        rois = torch.cat([b.new_zeros((b.shape[0], 1)), shifted], dim=1)
        out[sel] = roi_align(crop, rois, (mask_size, mask_size), spatial_scale=1.0, sampling_ratio=0,
                             aligned=True).squeeze(1)
    return (out >= 0.5).float()


def anchor_inside_flags(anchors: Tensor, valid: Tensor, img_shape: tuple[int, int], allowed_border: int) -> Tensor:
    """mmdet's ``anchor_inside_flags``: with ``allowed_border >= 0`` also drop anchors crossing the border.

    anchors [N, 4], valid [N] bool, img_shape (h, w) of the resized unpadded image.
    """
    if allowed_border < 0:
        return valid
    h, w = img_shape
    return (
        valid
        & (anchors[:, 0] >= -allowed_border)
        & (anchors[:, 1] >= -allowed_border)
        & (anchors[:, 2] < w + allowed_border)
        & (anchors[:, 3] < h + allowed_border)
    )


def seeded_generators(img_metas: Sequence[ImageMeta]) -> list[Optional[torch.Generator]]:
    """One ``torch.Generator`` per image seeded with its ``img_meta.seed`` (None without a seed).

    Every sampler of a training step (RPN, then each R-CNN stage) draws from its image's
    generator, so the same image and parameters give the same losses anywhere.
    """
    out: list[Optional[torch.Generator]] = []
    for m in img_metas:
        if m.seed is None:
            out.append(None)
        else:
            g = torch.Generator()
            g.manual_seed(int(m.seed))
            out.append(g)
    return out


def box_loss(pred: Tensor, target: Tensor, kind: str, beta: float) -> Tensor:
    """Element-wise box regression loss: ``kind`` ``"l1"`` or ``"smooth_l1"`` (with ``beta``)."""
    if kind == "smooth_l1":
        return smooth_l1(pred, target, beta)
    return (pred - target).abs()


def smooth_l1(pred: Tensor, target: Tensor, beta: float) -> Tensor:
    """Element-wise smooth L1 (mmdet: 0.5 d^2 / beta below beta, d - beta/2 above)."""
    diff = (pred - target).abs()
    if beta <= 0:
        return diff
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
