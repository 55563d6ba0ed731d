"""RoI feature extraction, box / mask / semantic heads and the three RoI heads.

* :class:`SingleRoIExtractor` — multi-level RoIAlign with mmdet's level rule.
* :class:`Shared2FCBBoxHead` — two shared FCs, ``fc_cls`` (background = last logit) and
  ``fc_reg`` (class-specific or class-agnostic).
* :class:`FCNMaskHead`, :class:`HTCMaskHead` — 4 convs, deconv x2, per-class logits
  (+ ``conv_res`` for HTC's mask information flow).
* :class:`FusedSemanticHead` — HTC's semantic branch.
* :class:`StandardRoIHead` (Mask R-CNN), :class:`CascadeRoIHead` (Cascade Mask R-CNN),
  :class:`HybridTaskCascadeRoIHead` (HTC) — forward pieces for training and the mmdet 2.x
  test-time path (``simple_test``).
* :func:`paste_masks` — mmdet's ``_do_paste_mask`` (grid_sample) + threshold.

Module names and registration order follow mmdet so the state dicts match its checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nuimcli.models.boxes import DeltaXYWHBBoxCoder, bbox2roi, multiclass_nms
from nuimcli.models.roi_align import roi_align


# --------------------------------------------------------------------------- building blocks
class ConvModule(nn.Module):
    """Conv2d + ReLU, stored as ``.conv`` (mmcv ``ConvModule`` without norm → ``<name>.conv.*`` keys)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 activation: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)
        self.activation = activation
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return F.relu(x) if self.activation else x


class SingleRoIExtractor(nn.Module):
    """RoIAlign from the FPN level chosen by the RoI's scale (mmdet ``SingleRoIExtractor``).

    Level = ``floor(log2(sqrt(w * h) / finest_scale + 1e-6))`` clamped to
    ``0 .. len(featmap_strides) - 1`` (w, h without +1): scale < 112 → P2, < 224 → P3,
    < 448 → P4, else P5 for ``finest_scale = 56``. RoIAlign is
    ``torchvision.ops.roi_align(aligned=True, sampling_ratio=0)`` = mmcv's RoIAlign
    (aligned, adaptive sampling, average), with a faster CPU backward (:mod:`roi_align`).

    Args:
        output_size: 7 for boxes, 14 for masks.
        featmap_strides: strides of the levels used, e.g. ``[4, 8, 16, 32]``.
        finest_scale: 56.
    """

    def __init__(self, output_size: int, featmap_strides: Sequence[int], finest_scale: int = 56) -> None:
        super().__init__()
        self.output_size = int(output_size)
        self.featmap_strides = [int(s) for s in featmap_strides]
        self.finest_scale = finest_scale

    @property
    def num_inputs(self) -> int:
        return len(self.featmap_strides)

    def map_roi_levels(self, rois: Tensor, num_levels: int) -> Tensor:
        """Level index ``[N]`` (int64) of each RoI ``[N, 5]``."""
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        levels = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        return levels.clamp(min=0, max=num_levels - 1).long()

    def forward(self, feats: Sequence[Tensor], rois: Tensor) -> Tensor:
        """Features ``[N, C, S, S]`` of RoIs ``[N, 5]`` (batch index, x1, y1, x2, y2) from the
        first ``len(featmap_strides)`` maps of ``feats`` (each ``[B, C, H_l, W_l]``)."""
        feats = list(feats)[: self.num_inputs]
        s = self.output_size
        rois = rois.to(feats[0].dtype)
        if len(feats) == 1:
            return roi_align(feats[0], rois, (s, s), spatial_scale=1.0 / self.featmap_strides[0],
                             sampling_ratio=0, aligned=True)
        out = feats[0].new_zeros((rois.size(0), feats[0].size(1), s, s))
        if rois.size(0) == 0:
            return out
        levels = self.map_roi_levels(rois, len(feats))
        for i, feat in enumerate(feats):
            inds = (levels == i).nonzero(as_tuple=False).squeeze(1)
            if inds.numel() > 0:
                out[inds] = roi_align(feat, rois[inds], (s, s), spatial_scale=1.0 / self.featmap_strides[i],
                                      sampling_ratio=0, aligned=True)
        return out


# --------------------------------------------------------------------------- box head
class Shared2FCBBoxHead(nn.Module):
    """mmdet ``Shared2FCBBoxHead``: flatten → FC + ReLU → FC + ReLU → ``fc_cls`` / ``fc_reg``.

    Args:
        in_channels: RoI feature channels (256).
        roi_feat_size: 7.
        fc_out_channels: 1024.
        num_classes: foreground classes (10); ``fc_cls`` has ``num_classes + 1`` outputs with
            the background **last**.
        reg_class_agnostic: ``fc_reg`` outputs 4 (True) or ``4 * num_classes`` (False, class c
            at columns ``4c .. 4c+3``).
        target_means, target_stds: the stage's box coder normalisation.
    """

    def __init__(self, in_channels: int = 256, roi_feat_size: int = 7, fc_out_channels: int = 1024,
                 num_classes: int = 10, reg_class_agnostic: bool = False,
                 target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
                 target_stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2)) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.roi_feat_size = int(roi_feat_size)
        self.num_classes = int(num_classes)
        self.reg_class_agnostic = bool(reg_class_agnostic)
        self.bbox_coder = DeltaXYWHBBoxCoder(target_means, target_stds)
        # mmdet registers fc_cls and fc_reg (BBoxHead) before shared_fcs (ConvFCBBoxHead):
        # the state-dict order is fc_cls, fc_reg, shared_fcs.
        self.fc_cls = nn.Linear(fc_out_channels, self.num_classes + 1)
        self.fc_reg = nn.Linear(fc_out_channels, 4 if self.reg_class_agnostic else 4 * self.num_classes)
        flat = in_channels * self.roi_feat_size * self.roi_feat_size
        self.shared_fcs = nn.ModuleList([nn.Linear(flat, fc_out_channels),
                                         nn.Linear(fc_out_channels, fc_out_channels)])
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.normal_(self.fc_reg.weight, std=0.001)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.zeros_(self.fc_reg.bias)
        for fc in self.shared_fcs:
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """RoI features ``[N, C, 7, 7]`` → (logits ``[N, num_classes + 1]``, deltas ``[N, 4]``
        or ``[N, 4 * num_classes]``)."""
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)

    def regress_by_class(self, rois: Tensor, labels: Tensor, bbox_pred: Tensor,
                         img_shape: Sequence[int]) -> Tensor:
        """Apply the deltas of class ``labels`` (ignored when class-agnostic) to ``rois``
        ``[N, 5]`` (or ``[N, 4]``), clipped to ``img_shape`` ``(h, w)``; same shape out."""
        if not self.reg_class_agnostic:
            idx = labels * 4
            bbox_pred = torch.gather(bbox_pred, 1, torch.stack((idx, idx + 1, idx + 2, idx + 3), 1))
        if rois.size(1) == 4:
            return self.bbox_coder.decode(rois, bbox_pred, max_shape=img_shape)
        boxes = self.bbox_coder.decode(rois[:, 1:], bbox_pred, max_shape=img_shape)
        return torch.cat((rois[:, [0]], boxes), dim=1)


# --------------------------------------------------------------------------- mask heads
class FCNMaskHead(nn.Module):
    """mmdet ``FCNMaskHead``: ``num_convs`` x (3x3 conv + ReLU), deconv x2 + ReLU, 1x1 logits.

    Args:
        num_convs: 4.
        in_channels, conv_out_channels: 256.
        num_classes: 10 (one logit map per class).
        roi_feat_size: 14 (output masks are ``2 * roi_feat_size`` = 28).
    """

    def __init__(self, num_convs: int = 4, in_channels: int = 256, conv_out_channels: int = 256,
                 num_classes: int = 10, roi_feat_size: int = 14) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.roi_feat_size = int(roi_feat_size)
        self.conv_out_channels = conv_out_channels
        self.convs = nn.ModuleList([
            ConvModule(in_channels if i == 0 else conv_out_channels, conv_out_channels, 3, padding=1)
            for i in range(num_convs)])
        last = conv_out_channels if num_convs > 0 else in_channels
        self.upsample = nn.ConvTranspose2d(last, conv_out_channels, 2, stride=2)
        self.conv_logits = nn.Conv2d(conv_out_channels, self.num_classes, 1)
        for m in (self.upsample, self.conv_logits):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def logits_from_feat(self, x: Tensor) -> Tensor:
        """Conv-stack output ``[N, C, 14, 14]`` → mask logits ``[N, num_classes, 28, 28]``."""
        return self.conv_logits(F.relu(self.upsample(x)))

    def forward(self, x: Tensor) -> Tensor:
        """RoI features ``[N, C, 14, 14]`` → mask logits ``[N, num_classes, 28, 28]``."""
        for conv in self.convs:
            x = conv(x)
        return self.logits_from_feat(x)


class HTCMaskHead(FCNMaskHead):
    """HTC mask head: an FCN mask head that can add the previous stage's feature.

    With ``with_conv_res`` (stages 2 and 3) ``conv_res`` (1x1 conv + ReLU) maps the previous
    head's conv-stack output and adds it to the input before the convs.
    """

    def __init__(self, with_conv_res: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.with_conv_res = bool(with_conv_res)
        if self.with_conv_res:
            self.conv_res = ConvModule(self.conv_out_channels, self.conv_out_channels, 1)

    def forward(self, x: Tensor, res_feat: Optional[Tensor] = None, return_logits: bool = True,
                return_feat: bool = True):
        """``x`` ``[N, C, 14, 14]``, ``res_feat`` (previous stage's feature, same shape) →
        ``(logits [N, K, 28, 28], feat [N, C, 14, 14])``, or just one of them when
        ``return_feat`` / ``return_logits`` is False."""
        if res_feat is not None:
            if not self.with_conv_res:
                raise ValueError("this HTC mask head has no conv_res for a previous feature")
            x = x + self.conv_res(res_feat)
        for conv in self.convs:
            x = conv(x)
        feat = x
        outs = []
        if return_logits:
            outs.append(self.logits_from_feat(x))
        if return_feat:
            outs.append(feat)
        return tuple(outs) if len(outs) > 1 else outs[0]


class FusedSemanticHead(nn.Module):
    """HTC's semantic branch (mmdet ``FusedSemanticHead``).

    Level ``fusion_level`` (P3) goes through its 1x1 lateral conv; every other level is
    resized to that size (bilinear, ``align_corners=True``) and through its own lateral conv,
    and summed; then ``num_convs`` 3x3 convs; ``conv_logits`` gives the segmentation logits
    and ``conv_embedding`` the semantic feature that is fused into the RoI features.

    Args:
        num_ins: number of FPN levels given (5).
        fusion_level: 1 (stride 8).
        num_convs: 4.
        in_channels, conv_out_channels: 256.
        num_classes: 32 (nuImages devkit category indices, 0 = unlabelled).
        ignore_label, loss_weight: kept for the training loss (0 and 0.2).
    """

    def __init__(self, num_ins: int = 5, fusion_level: int = 1, num_convs: int = 4,
                 in_channels: int = 256, conv_out_channels: int = 256, num_classes: int = 32,
                 ignore_label: int = 0, loss_weight: float = 0.2) -> None:
        super().__init__()
        self.num_ins = num_ins
        self.fusion_level = fusion_level
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.loss_weight = loss_weight
        self.lateral_convs = nn.ModuleList([ConvModule(in_channels, in_channels, 1) for _ in range(num_ins)])
        self.convs = nn.ModuleList([
            ConvModule(in_channels if i == 0 else conv_out_channels, conv_out_channels, 3, padding=1)
            for i in range(num_convs)])
        self.conv_embedding = ConvModule(conv_out_channels, conv_out_channels, 1)
        self.conv_logits = nn.Conv2d(conv_out_channels, num_classes, 1)
        nn.init.kaiming_normal_(self.conv_logits.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv_logits.bias)

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """FPN maps (5 x ``[B, C, H_l, W_l]``) → (logits ``[B, num_classes, H_1, W_1]``,
        semantic feature ``[B, C, H_1, W_1]``), at the fusion level's size (stride 8)."""
        x = self.lateral_convs[self.fusion_level](feats[self.fusion_level])
        size = tuple(x.shape[-2:])
        for i, feat in enumerate(feats):
            if i != self.fusion_level:
                feat = F.interpolate(feat, size=size, mode="bilinear", align_corners=True)
                x = x + self.lateral_convs[i](feat)
        for conv in self.convs:
            x = conv(x)
        return self.conv_logits(x), self.conv_embedding(x)


# --------------------------------------------------------------------------- mask pasting
def paste_masks(mask_probs: Tensor, boxes: Tensor, img_h: int, img_w: int,
                threshold: float = 0.5) -> Tensor:
    """Paste RoI mask probabilities into the image as mmdet 2.x does (``_do_paste_mask``).

    Each ``M x M`` map is sampled with ``grid_sample`` (bilinear, zeros outside,
    ``align_corners=False``) at the pixel centres ``x + 0.5`` mapped so that the box edges
    ``x1, x2`` become -1 and +1; only the box's bounding pixel window (±1 px) is computed, as
    mmdet does on CPU; then ``>= threshold``.

    Args:
        mask_probs: ``[N, M, M]`` float probabilities.
        boxes: ``[N, 4]`` boxes in the output image frame.
        img_h, img_w: output size.
        threshold: ``mask_thr_binary``.

    Returns:
        bool ``[N, img_h, img_w]``.
    """
    n = mask_probs.size(0)
    out = torch.zeros((n, img_h, img_w), dtype=torch.bool, device=mask_probs.device)
    for i in range(n):
        region, (ys, xs) = _paste_one(mask_probs[i: i + 1], boxes[i: i + 1], img_h, img_w)
        out[i, ys, xs] = region >= threshold
    return out


def _paste_one(mask: Tensor, box: Tensor, img_h: int, img_w: int) -> tuple[Tensor, tuple[slice, slice]]:
    """One mask ``[1, M, M]`` and box ``[1, 4]`` → (probabilities in the window, window)."""
    x0_int, y0_int = torch.clamp(box.min(dim=0).values.floor()[:2] - 1, min=0).to(dtype=torch.int32).tolist()
    x1_int = int(torch.clamp(box[:, 2].max().ceil() + 1, max=img_w).to(dtype=torch.int32))
    y1_int = int(torch.clamp(box[:, 3].max().ceil() + 1, max=img_h).to(dtype=torch.int32))
    x0, y0, x1, y1 = torch.split(box.float(), 1, dim=1)
    img_y = torch.arange(y0_int, y1_int, device=mask.device).to(torch.float32) + 0.5
    img_x = torch.arange(x0_int, x1_int, device=mask.device).to(torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    # A zero-width box gives inf coordinates; mmdet sets them to 0.
    img_x = torch.where(torch.isinf(img_x), torch.zeros_like(img_x), img_x)
    img_y = torch.where(torch.isinf(img_y), torch.zeros_like(img_y), img_y)
    gx = img_x[:, None, :].expand(1, img_y.size(1), img_x.size(1))
    gy = img_y[:, :, None].expand(1, img_y.size(1), img_x.size(1))
    grid = torch.stack([gx, gy], dim=3)
    if grid.numel() == 0:  # empty window (cannot happen for boxes clipped to the image)
        return mask.new_zeros((0, 0)), (slice(0, 0), slice(0, 0))
    res = F.grid_sample(mask[:, None].to(torch.float32), grid, align_corners=False)
    return res[0, 0], (slice(y0_int, y1_int), slice(x0_int, x1_int))


# --------------------------------------------------------------------------- RoI heads
@dataclass
class RoIDetections:
    """Test-time output of a RoI head for one image (before mask pasting).

    ``boxes`` ``[K, 4]`` in the original image frame (divided by the scale factor),
    ``scores`` ``[K]``, ``labels`` ``[K]`` (0..C-1), ``mask_probs`` ``[K, 28, 28]`` = the
    (stage-averaged) sigmoid of the predicted class's mask logits or None, ``mask_boxes``
    ``[K, 4]`` the boxes to paste them into (``boxes * scale / scale``, as mmdet), and
    ``semantic_logits`` ``[S, H_pad/8, W_pad/8]`` (HTC with a semantic head) or None.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    mask_probs: Optional[Tensor] = None
    mask_boxes: Optional[Tensor] = None
    semantic_logits: Optional[Tensor] = None


def _meta_shape(meta: dict, key: str) -> tuple[int, int]:
    shape = meta[key]
    return int(shape[0]), int(shape[1])


class _RoIHeadBase(nn.Module):
    """Test-time post-processing shared by the three RoI heads."""

    num_stages: int = 1

    def _init_test_cfg(self, score_thr: float, nms_iou: float, max_per_img: int,
                       mask_thr_binary: float) -> None:
        self.score_thr = float(score_thr)
        self.nms_iou = float(nms_iou)
        self.max_per_img = int(max_per_img)
        self.mask_thr_binary = float(mask_thr_binary)

    @property
    def with_mask(self) -> bool:
        return getattr(self, "mask_head", None) is not None

    def _last_bbox_head(self) -> Shared2FCBBoxHead:
        head = self.bbox_head
        return head[-1] if isinstance(head, nn.ModuleList) else head

    def get_bboxes(self, bbox_head: Shared2FCBBoxHead, rois: Tensor, cls_score: Tensor,
                   bbox_pred: Tensor, meta: dict) -> tuple[Tensor, Tensor, Tensor]:
        """mmdet ``BBoxHead.get_bboxes(rescale=True)`` for one image.

        Softmax scores (background last), decode + clip to ``img_shape``, divide by the scale
        factor, per-class NMS keeping ``max_per_img``. Returns ``(boxes [K, 4], scores [K],
        labels [K])`` in the original image frame.
        """
        scores = F.softmax(cls_score, dim=-1)
        boxes = bbox_head.bbox_coder.decode(rois[:, 1:], bbox_pred, max_shape=_meta_shape(meta, "img_shape"))
        if boxes.size(0) > 0:
            sf = boxes.new_tensor(meta["scale_factor"])
            boxes = (boxes.view(boxes.size(0), -1, 4) / sf).view(boxes.size(0), -1)
        dets, labels, _ = multiclass_nms(boxes, scores, self.score_thr, self.nms_iou, self.max_per_img)
        return dets[:, :4], dets[:, 4], labels

    def _empty(self, feats: Sequence[Tensor]) -> RoIDetections:
        z = feats[0].new_zeros
        labels = torch.zeros((0,), dtype=torch.long, device=feats[0].device)
        if not self.with_mask:
            return RoIDetections(z((0, 4)), z((0,)), labels)
        heads = self.mask_head if isinstance(self.mask_head, nn.ModuleList) else [self.mask_head]
        size = 2 * heads[-1].roi_feat_size
        return RoIDetections(z((0, 4)), z((0,)), labels, z((0, size, size)), z((0, 4)))

    def _mask_rois(self, dets: list[RoIDetections], img_metas: Sequence[dict]) -> list[Tensor]:
        # mmdet maps the rescaled detections back to the network frame by * scale_factor.
        return [d.boxes * d.boxes.new_tensor(m["scale_factor"]) for d, m in zip(dets, img_metas)]

    def _mask_probs(self, feats: Sequence[Tensor], mask_rois: Tensor,
                    labels: Tensor, semantic_feat: Optional[Tensor]) -> Tensor:
        """Per RoI ``[N, 28, 28]`` probabilities of its label's mask.

        Abstract hook: each RoI head (standard, cascade, HTC) defines how its mask stages are combined.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define _mask_probs")

    def _add_masks(self, feats: Sequence[Tensor], dets: list[RoIDetections], img_metas: Sequence[dict],
                   semantic_feat: Optional[Tensor] = None) -> None:
        if not self.with_mask:
            return
        boxes = self._mask_rois(dets, img_metas)
        counts = [b.size(0) for b in boxes]
        if sum(counts) == 0:
            return
        labels = torch.cat([d.labels for d in dets])
        probs = self._mask_probs(feats, bbox2roi(boxes), labels, semantic_feat).split(counts, 0)
        for d, p, b, m in zip(dets, probs, boxes, img_metas):
            d.mask_probs = p
            d.mask_boxes = b / b.new_tensor(m["scale_factor"])

    def _cascade_bboxes(self, feats: Sequence[Tensor], proposals: Sequence[Tensor], img_metas: Sequence[dict],
                        semantic_feat: Optional[Tensor] = None) -> list[RoIDetections]:
        """Boxes through every stage (mmdet 2.x cascade ``simple_test``); for one stage this is
        the standard head's ``simple_test_bboxes``."""
        num_imgs = len(proposals)
        rois = bbox2roi([p[:, :4] for p in proposals]).to(feats[0])
        if rois.size(0) == 0:
            return [self._empty(feats) for _ in range(num_imgs)]
        counts = [int(p.size(0)) for p in proposals]
        ms_scores = []
        for stage in range(self.num_stages):
            cls_score, bbox_pred = self.bbox_forward(stage, feats, rois, semantic_feat)
            rois_split = rois.split(counts, 0)
            cls_split = cls_score.split(counts, 0)
            pred_split = bbox_pred.split(counts, 0)
            ms_scores.append(cls_split)
            if stage < self.num_stages - 1:
                head = self.bbox_head[stage]
                refined = []
                for j in range(num_imgs):
                    if rois_split[j].size(0) > 0:
                        # The argmax over foreground classes picks the deltas of a
                        # class-specific head; a class-agnostic head ignores it.
                        label = cls_split[j][:, :-1].argmax(dim=1)
                        refined.append(head.regress_by_class(rois_split[j], label, pred_split[j],
                                                             _meta_shape(img_metas[j], "img_shape")))
                rois = torch.cat(refined)
            else:
                rois = rois_split
                bbox_pred = pred_split
        out = []
        last = self._last_bbox_head()
        for i in range(num_imgs):
            if counts[i] == 0:
                out.append(self._empty(feats))
                continue
            # Mean of the stages' raw logits (summed in stage order, as mmdet), then softmax.
            score = sum([s[i] for s in ms_scores]) / float(len(ms_scores))
            boxes, scores, labels = self.get_bboxes(last, rois[i], score, bbox_pred[i], img_metas[i])
            out.append(RoIDetections(boxes, scores, labels))
        return out

    def semantic_forward(self, feats: Sequence[Tensor]) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """(semantic logits, semantic feature) or (None, None) without a semantic head."""
        return None, None

    @torch.no_grad()
    def simple_test(self, feats: Sequence[Tensor], proposals: Sequence[Tensor],
                    img_metas: Sequence[dict]) -> list[RoIDetections]:
        """mmdet 2.x test-time RoI stage for a batch.

        Args:
            feats: FPN maps (5 x ``[B, C, H_l, W_l]``).
            proposals: B tensors ``[K_i, >=4]`` (RPN output, network-input frame).
            img_metas: B dicts with ``img_shape`` (h, w), ``scale_factor`` (4 floats).

        Returns:
            one :class:`RoIDetections` per image (boxes in the original frame).
        """
        seg_logits, semantic_feat = self.semantic_forward(feats)
        dets = self._cascade_bboxes(feats, proposals, img_metas, semantic_feat)
        self._add_masks(feats, dets, img_metas, semantic_feat)
        if seg_logits is not None:
            for i, d in enumerate(dets):
                d.semantic_logits = seg_logits[i]
        return dets


class StandardRoIHead(_RoIHeadBase):
    """Mask R-CNN's RoI head: one box head and one mask head (attributes ``bbox_head``, ``mask_head``).

    Args:
        bbox_head: a :class:`Shared2FCBBoxHead`.
        mask_head: an :class:`FCNMaskHead` or None.
        featmap_strides, finest_scale: RoIAlign level settings (P2–P5, 56).
        score_thr, nms_iou, max_per_img, mask_thr_binary: test settings (0.05, 0.5, 100, 0.5).
        train_cfg: kept for the training code (assigner / sampler settings); unused here.
    """

    def __init__(self, bbox_head: Shared2FCBBoxHead, mask_head: Optional[FCNMaskHead] = None,
                 featmap_strides: Sequence[int] = (4, 8, 16, 32), finest_scale: int = 56,
                 score_thr: float = 0.05, nms_iou: float = 0.5, max_per_img: int = 100,
                 mask_thr_binary: float = 0.5, train_cfg: Any = None) -> None:
        super().__init__()
        self.num_stages = 1
        self.bbox_roi_extractor = SingleRoIExtractor(bbox_head.roi_feat_size, featmap_strides, finest_scale)
        self.bbox_head = bbox_head
        if mask_head is not None:
            self.mask_roi_extractor = SingleRoIExtractor(mask_head.roi_feat_size, featmap_strides, finest_scale)
        self.mask_head = mask_head
        self.train_cfg = train_cfg
        self._init_test_cfg(score_thr, nms_iou, max_per_img, mask_thr_binary)

    def bbox_forward(self, stage: int, feats: Sequence[Tensor], rois: Tensor,
                     semantic_feat: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """RoIs ``[N, 5]`` → (logits ``[N, C + 1]``, deltas ``[N, 4C]``). ``stage`` must be 0."""
        if stage != 0:
            raise ValueError("a standard RoI head has a single stage")
        return self.bbox_head(self.bbox_roi_extractor(feats, rois))

    def mask_forward(self, stage: int, feats: Sequence[Tensor], rois: Tensor,
                     semantic_feat: Optional[Tensor] = None) -> Tensor:
        """RoIs ``[N, 5]`` → mask logits ``[N, C, 28, 28]``. ``stage`` must be 0."""
        if stage != 0:
            raise ValueError("a standard RoI head has a single stage")
        return self.mask_head(self.mask_roi_extractor(feats, rois))

    def _mask_probs(self, feats, mask_rois, labels, semantic_feat):
        logits = self.mask_forward(0, feats, mask_rois)
        return logits.sigmoid()[torch.arange(logits.size(0), device=logits.device), labels]


class CascadeRoIHead(_RoIHeadBase):
    """Cascade Mask R-CNN's RoI head: ``bbox_head`` and ``mask_head`` are ModuleLists (3 stages).

    Test: RoIs pass stage 1 → 2 → 3, regressed (class-agnostic) and clipped between stages;
    scores = softmax of the mean of the stages' logits; boxes from the last stage; masks =
    mean of the stages' sigmoids on the final detections.

    Args:
        bbox_heads: one :class:`Shared2FCBBoxHead` per stage (each with its coder stds).
        mask_heads: one :class:`FCNMaskHead` per stage, or None.
        stage_loss_weights: kept for training ([1, 0.5, 0.25]).
        Other arguments as :class:`StandardRoIHead`.
    """

    def __init__(self, bbox_heads: Sequence[Shared2FCBBoxHead], mask_heads: Optional[Sequence[nn.Module]] = None,
                 stage_loss_weights: Sequence[float] = (1.0, 0.5, 0.25),
                 featmap_strides: Sequence[int] = (4, 8, 16, 32), finest_scale: int = 56,
                 score_thr: float = 0.05, nms_iou: float = 0.5, max_per_img: int = 100,
                 mask_thr_binary: float = 0.5, train_cfg: Any = None) -> None:
        super().__init__()
        self.num_stages = len(bbox_heads)
        if mask_heads is not None and len(mask_heads) != self.num_stages:
            raise ValueError(f"{len(mask_heads)} mask heads for {self.num_stages} box stages")
        self.stage_loss_weights = [float(w) for w in stage_loss_weights]
        self.bbox_roi_extractor = nn.ModuleList(
            [SingleRoIExtractor(h.roi_feat_size, featmap_strides, finest_scale) for h in bbox_heads])
        self.bbox_head = nn.ModuleList(bbox_heads)
        if mask_heads is not None:
            self.mask_roi_extractor = nn.ModuleList(
                [SingleRoIExtractor(h.roi_feat_size, featmap_strides, finest_scale) for h in mask_heads])
            self.mask_head = nn.ModuleList(mask_heads)
        else:
            self.mask_head = None
        self.train_cfg = train_cfg
        self._init_test_cfg(score_thr, nms_iou, max_per_img, mask_thr_binary)

    def bbox_forward(self, stage: int, feats: Sequence[Tensor], rois: Tensor,
                     semantic_feat: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Stage ``stage``: RoIs ``[N, 5]`` → (logits ``[N, C + 1]``, deltas ``[N, 4]``)."""
        return self.bbox_head[stage](self.bbox_roi_extractor[stage](feats, rois))

    def mask_forward(self, stage: int, feats: Sequence[Tensor], rois: Tensor,
                     semantic_feat: Optional[Tensor] = None) -> Tensor:
        """Stage ``stage``: RoIs ``[N, 5]`` → mask logits ``[N, C, 28, 28]``."""
        return self.mask_head[stage](self.mask_roi_extractor[stage](feats, rois))

    def _mask_probs(self, feats, mask_rois, labels, semantic_feat):
        idx = torch.arange(mask_rois.size(0), device=mask_rois.device)
        probs = [self.mask_forward(s, feats, mask_rois).sigmoid()[idx, labels] for s in range(self.num_stages)]
        return sum(probs[1:], probs[0]) / float(self.num_stages)


class HybridTaskCascadeRoIHead(CascadeRoIHead):
    """HTC's RoI head: the cascade plus mask information flow and the semantic branch.

    Box features of every stage get the semantic feature's RoIAlign (14x14, stride 8)
    adaptive-average-pooled to 7x7 added; mask features get the 14x14 one added. With
    ``mask_info_flow`` each mask head receives the previous heads' conv features
    (``conv_res``). Test masks: the three heads run in a chain on the final detections and
    their sigmoids are averaged (mmdet 2.x).

    Args:
        bbox_heads, mask_heads: per stage (mask heads are :class:`HTCMaskHead`, the first
            without ``conv_res``).
        semantic_head: a :class:`FusedSemanticHead` or None (the "without semantic" row).
        interleaved, mask_info_flow: HTC switches (both True in every nuImages config).
        semantic_fusion: where the semantic feature is added (``("bbox", "mask")``).
        Other arguments as :class:`CascadeRoIHead`.
    """

    def __init__(self, bbox_heads: Sequence[Shared2FCBBoxHead], mask_heads: Optional[Sequence[HTCMaskHead]] = None,
                 semantic_head: Optional[FusedSemanticHead] = None, interleaved: bool = True,
                 mask_info_flow: bool = True, semantic_fusion: Sequence[str] = ("bbox", "mask"),
                 semantic_stride: int = 8, **kwargs: Any) -> None:
        super().__init__(bbox_heads, mask_heads, **kwargs)
        if semantic_head is not None:
            roi_size = mask_heads[0].roi_feat_size if mask_heads else 14
            self.semantic_roi_extractor = SingleRoIExtractor(roi_size, [semantic_stride])
        self.semantic_head = semantic_head
        self.interleaved = bool(interleaved)
        self.mask_info_flow = bool(mask_info_flow)
        self.semantic_fusion = tuple(semantic_fusion)

    @property
    def with_semantic(self) -> bool:
        return self.semantic_head is not None

    def semantic_forward(self, feats: Sequence[Tensor]) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """FPN maps → (logits ``[B, 32, H/8, W/8]``, feature ``[B, C, H/8, W/8]``) or (None, None)."""
        if not self.with_semantic:
            return None, None
        return self.semantic_head(feats)

    def bbox_forward(self, stage: int, feats: Sequence[Tensor], rois: Tensor,
                     semantic_feat: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Stage ``stage``: RoIs ``[N, 5]`` (+ semantic feature ``[B, C, H/8, W/8]``) →
        (logits ``[N, C + 1]``, deltas ``[N, 4]``)."""
        x = self.bbox_roi_extractor[stage](feats, rois)
        if self.with_semantic and "bbox" in self.semantic_fusion and semantic_feat is not None:
            sem = self.semantic_roi_extractor([semantic_feat], rois)
            if sem.shape[-2:] != x.shape[-2:]:
                sem = F.adaptive_avg_pool2d(sem, x.shape[-2:])
            x = x + sem
        return self.bbox_head[stage](x)

    def mask_feats(self, feats: Sequence[Tensor], rois: Tensor, semantic_feat: Optional[Tensor] = None,
                   stage: int = -1) -> Tensor:
        """Mask RoI features ``[N, C, 14, 14]`` with the semantic feature fused in."""
        x = self.mask_roi_extractor[stage](feats, rois)
        if self.with_semantic and "mask" in self.semantic_fusion and semantic_feat is not None:
            sem = self.semantic_roi_extractor([semantic_feat], rois)
            if sem.shape[-2:] != x.shape[-2:]:
                sem = F.adaptive_avg_pool2d(sem, x.shape[-2:])
            x = x + sem
        return x

    def mask_forward(self, stage: int, feats: Sequence[Tensor], rois: Tensor,
                     semantic_feat: Optional[Tensor] = None) -> Tensor:
        """Training path of stage ``stage``: RoIs ``[N, 5]`` → mask logits ``[N, C, 28, 28]``;
        with info flow the heads ``0 .. stage - 1`` run first (features only)."""
        x = self.mask_feats(feats, rois, semantic_feat, stage)
        if not self.mask_info_flow:
            return self.mask_head[stage](x, return_feat=False)
        last = None
        for i in range(stage):
            last = self.mask_head[i](x, last, return_logits=False)
        return self.mask_head[stage](x, last, return_feat=False)

    def _mask_probs(self, feats, mask_rois, labels, semantic_feat):
        x = self.mask_feats(feats, mask_rois, semantic_feat, -1)
        idx = torch.arange(mask_rois.size(0), device=mask_rois.device)
        probs, last = [], None
        for head in self.mask_head:
            if self.mask_info_flow:
                logits, last = head(x, last)
            else:
                logits = head(x, return_feat=False)
            probs.append(logits.sigmoid()[idx, labels])
        return sum(probs[1:], probs[0]) / float(self.num_stages)
