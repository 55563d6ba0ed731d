"""Box maths with mmdet 2.x numerics: anchors, the delta box coder, IoU, NMS helpers.

Conventions (mmdet v2): boxes are ``(x1, y1, x2, y2)`` float tensors, width = ``x2 - x1``
(no +1), RoIs are ``(batch_index, x1, y1, x2, y2)``. Clipping is to ``[0, W] x [0, H]`` of the
resized, unpadded image (``img_shape``), not ``W - 1``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor
from torchvision.ops import nms as _tv_nms

#: mmdet's default ``wh_ratio_clip``; decoded log-ratios dw, dh are clamped to ±|log(16/1000)|.
WH_RATIO_CLIP = 16 / 1000
MAX_LOG_RATIO = abs(math.log(WH_RATIO_CLIP))


class AnchorGenerator:
    """mmdet's ``AnchorGenerator`` (scale-major, anchors centred on the grid points).

    For a level with stride ``s`` the base anchors are centred on ``(c, c)`` with
    ``c = center_offset * s`` and have ``h = s * scale * sqrt(r)``, ``w = s * scale / sqrt(r)``
    for every ratio ``r`` (= h / w) and scale, ordered ratio-major (ratio outer, scale inner).
    The grid anchors of a level ``[H, W]`` are ordered ``(y, x, anchor)``, matching a head
    output permuted to ``[H, W, A]`` and flattened.

    Args:
        strides: one stride per level, e.g. ``[4, 8, 16, 32, 64]`` (base size = stride).
        ratios: anchor aspect ratios h/w, e.g. ``[0.5, 1.0, 2.0]``.
        scales: anchor scales relative to the stride, e.g. ``[8]``.
        center_offset: 0 in every nuImages config (anchor centre on the top-left grid corner).
    """

    def __init__(self, strides: Sequence[int], ratios: Sequence[float], scales: Sequence[float],
                 center_offset: float = 0.0) -> None:
        self.strides = [int(s) for s in strides]
        self.ratios = torch.tensor([float(r) for r in ratios], dtype=torch.float32)
        self.scales = torch.tensor([float(s) for s in scales], dtype=torch.float32)
        self.center_offset = float(center_offset)
        self.base_anchors = [self._base_anchors(s) for s in self.strides]

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_anchors(self) -> int:
        """Anchors per location (the same at every level)."""
        return int(self.ratios.numel() * self.scales.numel())

    def _base_anchors(self, base_size: int) -> Tensor:
        # Same float32 operation order as mmdet so the anchors match bit for bit.
        w = h = base_size
        x_c = self.center_offset * w
        y_c = self.center_offset * h
        h_ratios = torch.sqrt(self.ratios)
        w_ratios = 1 / h_ratios
        ws = (w * w_ratios[:, None] * self.scales[None, :]).view(-1)
        hs = (h * h_ratios[:, None] * self.scales[None, :]).view(-1)
        return torch.stack([x_c - 0.5 * ws, y_c - 0.5 * hs, x_c + 0.5 * ws, y_c + 0.5 * hs], dim=-1)

    def single_level_grid_anchors(self, level: int, featmap_size: Sequence[int],
                                  device: torch.device | str = "cpu") -> Tensor:
        """Anchors of one level: ``[H * W * A, 4]`` for ``featmap_size = (H, W)``."""
        # no int(): while an export is traced the sizes are tensors, and the anchors must follow
        # the input size of the exported graph (--dynamic) rather than be frozen at the traced one
        feat_h, feat_w = featmap_size[0], featmap_size[1]
        stride = self.strides[level]
        base = self.base_anchors[level].to(device)
        shift_x = torch.arange(0, feat_w, device=device).to(torch.float32) * stride
        shift_y = torch.arange(0, feat_h, device=device).to(torch.float32) * stride
        # row-major (y, x) grid: the order of mmdet's repeat / view(-1, 1).repeat
        shift_yy, shift_xx = (g.reshape(-1) for g in torch.meshgrid(shift_y, shift_x, indexing="ij"))
        shifts = torch.stack([shift_xx, shift_yy, shift_xx, shift_yy], dim=-1)
        return (base[None, :, :] + shifts[:, None, :]).view(-1, 4)

    def grid_anchors(self, featmap_sizes: Sequence[Sequence[int]],
                     device: torch.device | str = "cpu") -> list[Tensor]:
        """Anchors of every level: a list of ``[H_l * W_l * A, 4]`` tensors."""
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f"{len(featmap_sizes)} feature maps for {self.num_levels} anchor levels")
        return [self.single_level_grid_anchors(i, s, device) for i, s in enumerate(featmap_sizes)]

    def valid_flags(self, featmap_sizes: Sequence[Sequence[int]], pad_shape: Sequence[int],
                    device: torch.device | str = "cpu") -> list[Tensor]:
        """Which anchors lie on an image's own padded area inside a batch (mmdet ``valid_flags``).

        Args:
            featmap_sizes: ``(H_l, W_l)`` of the batch feature maps per level.
            pad_shape: ``(h, w)`` of this image padded to the size divisor (not the batch).

        Returns:
            per level a bool tensor ``[H_l * W_l * A]``.
        """
        out = []
        h, w = int(pad_shape[0]), int(pad_shape[1])
        for level, (feat_h, feat_w) in enumerate(featmap_sizes):
            stride = self.strides[level]
            valid_h = min(int(math.ceil(h / stride)), int(feat_h))
            valid_w = min(int(math.ceil(w / stride)), int(feat_w))
            vx = torch.zeros(int(feat_w), dtype=torch.bool, device=device)
            vy = torch.zeros(int(feat_h), dtype=torch.bool, device=device)
            vx[:valid_w] = True
            vy[:valid_h] = True
            vxx = vx.repeat(int(feat_h))
            vyy = vy.view(-1, 1).repeat(1, int(feat_w)).view(-1)
            valid = (vxx & vyy)[:, None].expand(-1, self.num_base_anchors).contiguous().view(-1)
            out.append(valid)
        return out


class DeltaXYWHBBoxCoder:
    """mmdet's ``DeltaXYWHBBoxCoder``: deltas ``(dx, dy, dw, dh)`` normalised by means/stds.

    ``encode(p, g)`` gives ``((gx - px) / pw, (gy - py) / ph, log(gw / pw), log(gh / ph))``
    minus ``means``, divided by ``stds``; ``decode`` inverts it, clamping dw, dh to
    ``±|log(wh_ratio_clip)|`` and clipping the boxes to ``[0, W] x [0, H]`` of ``max_shape``.

    Args:
        means, stds: 4 numbers each (RPN: 0 / 1; R-CNN stage 1: 0 / (0.1, 0.1, 0.2, 0.2)).
        wh_ratio_clip: 16 / 1000 in mmdet.
    """

    def __init__(self, means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
                 stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 wh_ratio_clip: float = WH_RATIO_CLIP) -> None:
        if len(means) != 4 or len(stds) != 4:
            raise ValueError("box coder means and stds need 4 numbers each")
        self.means = tuple(float(m) for m in means)
        self.stds = tuple(float(s) for s in stds)
        self.wh_ratio_clip = float(wh_ratio_clip)

    def encode(self, proposals: Tensor, gt: Tensor) -> Tensor:
        """Deltas ``[N, 4]`` that move ``proposals [N, 4]`` onto ``gt [N, 4]``."""
        proposals = proposals.float()
        gt = gt.float()
        px = (proposals[..., 0] + proposals[..., 2]) * 0.5
        py = (proposals[..., 1] + proposals[..., 3]) * 0.5
        pw = proposals[..., 2] - proposals[..., 0]
        ph = proposals[..., 3] - proposals[..., 1]
        gx = (gt[..., 0] + gt[..., 2]) * 0.5
        gy = (gt[..., 1] + gt[..., 3]) * 0.5
        gw = gt[..., 2] - gt[..., 0]
        gh = gt[..., 3] - gt[..., 1]
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph,
                              torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
        means = deltas.new_tensor(self.means).unsqueeze(0)
        stds = deltas.new_tensor(self.stds).unsqueeze(0)
        return deltas.sub_(means).div_(stds)

    def decode(self, rois: Tensor, deltas: Tensor,
               max_shape: Optional[Sequence[int]] = None) -> Tensor:
        """Apply deltas to boxes.

        Args:
            rois: ``[N, 4]`` boxes.
            deltas: ``[N, 4 * K]`` (K = 1, or one box per class).
            max_shape: ``(h, w)``; when given, boxes are clipped to ``[0, w] x [0, h]``.

        Returns:
            ``[N, 4 * K]`` boxes.
        """
        num_boxes, k = deltas.size(0), deltas.size(1) // 4
        if num_boxes == 0:
            return deltas
        deltas = deltas.reshape(-1, 4)
        means = deltas.new_tensor(self.means).view(1, -1)
        stds = deltas.new_tensor(self.stds).view(1, -1)
        denorm = deltas * stds + means
        dxy = denorm[:, :2]
        dwh = denorm[:, 2:]
        rois_ = rois.repeat(1, k).reshape(-1, 4)
        pxy = (rois_[:, :2] + rois_[:, 2:]) * 0.5
        pwh = rois_[:, 2:] - rois_[:, :2]
        dxy_wh = pwh * dxy
        max_ratio = abs(math.log(self.wh_ratio_clip))
        dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
        gxy = pxy + dxy_wh
        gwh = pwh * dwh.exp()
        x1y1 = gxy - (gwh * 0.5)
        x2y2 = gxy + (gwh * 0.5)
        boxes = torch.cat([x1y1, x2y2], dim=-1)
        if max_shape is not None:
            boxes = clip_boxes(boxes, max_shape)
        return boxes.reshape(num_boxes, -1)


def clip_boxes(boxes: Tensor, max_shape: Sequence[Union[int, Tensor]]) -> Tensor:
    """Clip ``[N, 4]`` boxes to ``[0, w] x [0, h]`` of ``max_shape = (h, w)``.

    ``h`` and ``w`` are ints, or 0-dim tensors while an export is traced: then the clip window
    is read from the graph's input size, so a ``--dynamic`` graph clips each image to its own
    size (``float(h)`` would freeze the traced one). Both give the same bits.
    """
    h, w = max_shape[0], max_shape[1]
    if isinstance(h, Tensor) and isinstance(w, Tensor):
        upper = torch.stack([w, h, w, h]).to(boxes)
        return torch.min(boxes.clamp(min=0), upper)
    boxes[..., 0::2].clamp_(min=0, max=float(w))
    boxes[..., 1::2].clamp_(min=0, max=float(h))
    return boxes


def bbox_overlaps(boxes1: Tensor, boxes2: Tensor, mode: str = "iou", is_aligned: bool = False,
                  eps: float = 1e-6) -> Tensor:
    """IoU (or IoF = intersection over the area of ``boxes1``) as mmdet 2.x computes it.

    Args:
        boxes1: ``[N, 4]``; boxes2: ``[M, 4]`` (``[N, 4]`` if ``is_aligned``).
        mode: ``"iou"`` or ``"iof"``.

    Returns:
        ``[N, M]`` (or ``[N]`` if aligned). Areas without +1; union floored at ``eps``.
    """
    if mode not in ("iou", "iof"):
        raise ValueError(f"unknown overlap mode {mode!r}")
    rows, cols = boxes1.size(0), boxes2.size(0)
    if is_aligned and rows != cols:
        raise ValueError("aligned overlaps need the same number of boxes")
    if rows * cols == 0:
        return boxes1.new_zeros((rows,) if is_aligned else (rows, cols))
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    if is_aligned:
        lt = torch.max(boxes1[:, :2], boxes2[:, :2])
        rb = torch.min(boxes1[:, 2:], boxes2[:, 2:])
        wh = (rb - lt).clamp(min=0)
        overlap = wh[:, 0] * wh[:, 1]
        union = area1 + area2 - overlap if mode == "iou" else area1
    else:
        lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
        rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
        wh = (rb - lt).clamp(min=0)
        overlap = wh[..., 0] * wh[..., 1]
        union = area1[:, None] + area2[None, :] - overlap if mode == "iou" else area1[:, None]
    union = torch.max(union, union.new_tensor([eps]))
    return overlap / union


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float,
                split_thr: int = 10000) -> Tensor:
    """Per-group NMS exactly as mmcv's ``batched_nms`` (which mmdet 2.x calls).

    Every box is offset by ``idx * (max coordinate + 1)`` (float32, so the IoUs are rounded
    exactly as mmcv's); below ``split_thr`` boxes one NMS separates the groups, from
    ``split_thr`` on (e.g. 1000 RoIs x 10 classes) one NMS runs per group.

    Args:
        boxes: ``[N, 4]``; scores: ``[N]``; idxs: ``[N]`` group (class or level) ids.

    Returns:
        indices of the kept boxes ``[K]`` (int64), sorted by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    # float32 always (a no-op for float32 inputs): a float16 model's offset boxes reach ~16,000,
    # where float16 steps by 16 px, and torchvision's nms wants boxes and scores of one dtype
    boxes, scores = boxes.float(), scores.float()
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    boxes_for_nms = boxes + offsets[:, None]
    if boxes.size(0) < split_thr:
        return _tv_nms(boxes_for_nms, scores, iou_threshold)
    # mmcv keeps the offset boxes in the per-group path too (same rounding of the IoUs).
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for group in torch.unique(idxs):
        mask = (idxs == group).nonzero(as_tuple=False).view(-1)
        keep_mask[mask[_tv_nms(boxes_for_nms[mask], scores[mask], iou_threshold)]] = True
    keep = keep_mask.nonzero(as_tuple=False).view(-1)
    return keep[scores[keep].argsort(descending=True)]


def multiclass_nms(multi_boxes: Tensor, multi_scores: Tensor, score_thr: float, iou_threshold: float,
                   max_num: int = -1) -> tuple[Tensor, Tensor, Tensor]:
    """mmdet 2.x ``multiclass_nms``: per-class NMS over (box, class) candidates.

    Args:
        multi_boxes: ``[N, 4 * C]`` class-specific boxes or ``[N, 4]`` (shared by all classes).
        multi_scores: ``[N, C + 1]`` softmax scores, background last (dropped here).
        score_thr: candidates need ``score > score_thr``.
        iou_threshold: NMS IoU per class.
        max_num: keep at most this many (by score over all classes); ``<= 0`` keeps all.

    Returns:
        ``(dets [K, 5], labels [K], inds [K])``: boxes + score, class 0..C-1, and the index of
        each detection in the flattened ``[N * C]`` candidate list (``row = inds // C``).
    """
    num_classes = multi_scores.size(1) - 1
    n = multi_scores.size(0)
    if multi_boxes.shape[1] > 4:
        boxes = multi_boxes.view(n, -1, 4)
    else:
        boxes = multi_boxes[:, None].expand(n, num_classes, 4)
    scores = multi_scores[:, :-1]
    labels = torch.arange(num_classes, dtype=torch.long, device=scores.device).view(1, -1).expand_as(scores)
    boxes = boxes.reshape(-1, 4)
    scores = scores.reshape(-1)
    labels = labels.reshape(-1)
    inds = (scores > score_thr).nonzero(as_tuple=False).squeeze(1)
    boxes, scores, labels = boxes[inds], scores[inds], labels[inds]
    if boxes.numel() == 0:
        return boxes.new_zeros((0, 5)), labels.new_zeros((0,)), inds.new_zeros((0,))
    keep = batched_nms(boxes, scores, labels, iou_threshold)
    if max_num > 0:
        keep = keep[:max_num]
    dets = torch.cat([boxes[keep], scores[keep, None]], dim=-1)
    return dets, labels[keep], inds[keep]


def bbox2roi(box_list: Sequence[Tensor]) -> Tensor:
    """Per-image boxes ``[N_i, >=4]`` → RoIs ``[sum N_i, 5]`` = ``(image index, x1, y1, x2, y2)``."""
    rois = []
    for img_id, boxes in enumerate(box_list):
        boxes = boxes[:, :4]
        rois.append(torch.cat([boxes.new_full((boxes.size(0), 1), img_id), boxes], dim=-1))
    if not rois:
        return torch.zeros((0, 5))
    return torch.cat(rois, 0)
