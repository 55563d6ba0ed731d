"""RPN head: a shared 3x3 conv + sigmoid objectness + box deltas per anchor, and proposals.

State-dict names follow mmdet's ``RPNHead``: ``rpn_conv``, ``rpn_cls``, ``rpn_reg`` (in this
registration order). Proposal generation is mmdet 2.28's test-time ``_get_bboxes_single``:
per level sigmoid scores and the top ``nms_pre``; decode + clip to ``img_shape``; drop boxes
with w or h ``<= min_bbox_size``; NMS per level (``batched_nms`` with the level as the group);
keep the first ``max_per_img``. Training (:meth:`RPNHead.loss`) is mmdet 2.x ``RPNHead.forward_train``:

* anchors valid on each image's own padded area (and, with ``allowed_border >= 0``, not
  crossing its border); max-IoU assignment 0.7 / 0.3 (min_pos 0.3, low-quality matches, all
  ties); 256 random samples at 0.5 positive; sigmoid CE + L1 or SmoothL1(beta) on the deltas;
  both summed and divided by the number of sampled anchors (each image counting at least one
  positive and one negative, as mmdet);
* then the proposals of the same outputs with the train ``nms_pre`` / ``max_per_img``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nuimcli.data.structures import Batch, ImageMeta
from nuimcli.models.boxes import AnchorGenerator, DeltaXYWHBBoxCoder, batched_nms, bbox_overlaps
from nuimcli.models.settings import RPNTrainSettings
from nuimcli.models.targets import anchor_inside_flags, box_loss, max_iou_assign, random_sample


class RPNHead(nn.Module):
    """Region proposal head shared by every FPN level.

    Args:
        in_channels: FPN channels (256 in the released models).
        feat_channels: channels of the 3x3 ``rpn_conv``.
        anchor_strides, anchor_scales, anchor_ratios: the anchor generator's settings.
        nms_pre: test-time top-k per level before NMS.
        max_per_img: test-time proposals kept per image after NMS.
        nms_iou: NMS IoU threshold.
        min_bbox_size: proposals with w or h ``<=`` this are dropped (mmdet 2.28 rule).
        train_cfg: assigner, sampler, loss and proposal limits for training; None for a head
            that only runs inference (:meth:`loss` then refuses).
    """

    def __init__(self, in_channels: int = 256, feat_channels: int = 256,
                 anchor_strides: Sequence[int] = (4, 8, 16, 32, 64),
                 anchor_scales: Sequence[float] = (8.0,),
                 anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 nms_pre: int = 1000, max_per_img: int = 1000, nms_iou: float = 0.7,
                 min_bbox_size: float = 0.0, train_cfg: Optional[RPNTrainSettings] = None) -> None:
        super().__init__()
        self.anchor_generator = AnchorGenerator(anchor_strides, anchor_ratios, anchor_scales)
        self.bbox_coder = DeltaXYWHBBoxCoder()
        self.num_anchors = self.anchor_generator.num_base_anchors
        self.nms_pre = int(nms_pre)
        self.max_per_img = int(max_per_img)
        self.nms_iou = float(nms_iou)
        self.min_bbox_size = float(min_bbox_size)
        self.train_cfg = train_cfg
        # Registration order = mmdet's state-dict key order.
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, self.num_anchors * 1, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, self.num_anchors * 4, 1)
        for conv in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One level ``[B, C, H, W]`` → (objectness logits ``[B, A, H, W]``, deltas ``[B, 4A, H, W]``)."""
        x = F.relu(self.rpn_conv(x))
        return self.rpn_cls(x), self.rpn_reg(x)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """All levels: lists (one entry per level) of ``[B, A, H_l, W_l]`` logits and
        ``[B, 4A, H_l, W_l]`` deltas. Channel ``k`` of the deltas = anchor ``k // 4``,
        component ``k % 4`` (dx, dy, dw, dh); logits are for a sigmoid."""
        cls_scores, bbox_preds = [], []
        for x in feats:
            c, r = self.forward_single(x)
            cls_scores.append(c)
            bbox_preds.append(r)
        return cls_scores, bbox_preds

    def anchors(self, cls_scores: Sequence[Tensor]) -> list[Tensor]:
        """Grid anchors matching the head outputs: per level ``[H_l * W_l * A, 4]``."""
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        return self.anchor_generator.grid_anchors(sizes, device=cls_scores[0].device)

    @torch.no_grad()
    def get_proposals(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor],
                      img_shapes: Sequence[Sequence[int]], nms_pre: Optional[int] = None,
                      max_per_img: Optional[int] = None) -> list[Tensor]:
        """Proposals per image from the head outputs of a batch.

        Args:
            cls_scores, bbox_preds: :meth:`forward` outputs for B images.
            img_shapes: ``(h, w)`` of each resized, unpadded image (the clip window).
            nms_pre, max_per_img: override the limits; by default the training values when
                the module is in training mode and has train settings, else the test values.

        Returns:
            B tensors ``[K_i, 5]``: ``(x1, y1, x2, y2, score)`` sorted by decreasing score.
        """
        train = self.train_cfg if self.training else None
        if nms_pre is None:
            nms_pre = train.nms_pre if train is not None else self.nms_pre
        if max_per_img is None:
            max_per_img = train.max_per_img if train is not None else self.max_per_img
        anchors = self.anchors(cls_scores)
        out = []
        for i, img_shape in enumerate(img_shapes):
            out.append(self._proposals_single([c[i].detach() for c in cls_scores],
                                              [b[i].detach() for b in bbox_preds],
                                              anchors, img_shape, nms_pre, max_per_img))
        return out

    def loss(self, feats: Sequence[Tensor], batch: Batch,
             generators: Sequence[Optional[torch.Generator]]) -> tuple[dict[str, Tensor], list[Tensor]]:
        """Training step of the RPN on a batch: its losses and the proposals for the RoI head.

        Args:
            feats: FPN maps (5 x ``[B, C, H_l, W_l]``).
            batch: the collated batch (``gt_bboxes``, ``img_metas``).
            generators: one per image, for the anchor sampler (see
                :func:`~nuimcli.models.targets.seeded_generators`).

        Returns:
            ``({"loss_rpn_cls", "loss_rpn_bbox"}, proposals)`` with B proposal tensors
            ``[K_i, 5]`` made with the train ``nms_pre`` / ``max_per_img``.
        """
        cfg = self._require_train_cfg()
        cls_scores, bbox_preds = self(feats)
        gt_bboxes = [b.to(batch.images.device) for b in batch.gt_bboxes]
        losses = self._losses(cls_scores, bbox_preds, gt_bboxes, batch.img_metas, cfg, generators)
        proposals = self.get_proposals(cls_scores, bbox_preds, [m.img_shape for m in batch.img_metas],
                                       nms_pre=cfg.nms_pre, max_per_img=cfg.max_per_img)
        return losses, proposals

    def _require_train_cfg(self) -> RPNTrainSettings:
        if self.train_cfg is None:
            raise ValueError("this RPN head was built without train settings; it cannot compute losses")
        return self.train_cfg

    def _losses(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], gt_bboxes: Sequence[Tensor],
                img_metas: Sequence[ImageMeta], cfg: RPNTrainSettings,
                generators: Sequence[Optional[torch.Generator]]) -> dict[str, Tensor]:
        """``loss_rpn_cls`` and ``loss_rpn_bbox``: cls_scores / bbox_preds per level
        ``[B, A, H, W]`` / ``[B, 4A, H, W]``; gt_bboxes B x ``[G_i, 4]``."""
        device = cls_scores[0].device
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        anchors = torch.cat(self.anchors(cls_scores))  # [T, 4], order (level, y, x, anchor)
        num_imgs = len(img_metas)
        logits = torch.cat([c.permute(0, 2, 3, 1).reshape(num_imgs, -1) for c in cls_scores], dim=1)  # [B, T]
        deltas = torch.cat([r.permute(0, 2, 3, 1).reshape(num_imgs, -1, 4) for r in bbox_preds], dim=1)  # [B, T, 4]
        total = anchors.shape[0]
        labels = torch.zeros((num_imgs, total), device=device)  # 1 = object (sigmoid target)
        label_w = torch.zeros((num_imgs, total), device=device)
        box_t = torch.zeros((num_imgs, total, 4), device=device)
        box_w = torch.zeros((num_imgs, total), device=device)
        num_samples = 0
        for i, meta in enumerate(img_metas):
            valid = torch.cat(self.anchor_generator.valid_flags(sizes, meta.pad_shape, device=device))
            inside = anchor_inside_flags(anchors, valid, meta.img_shape, cfg.allowed_border)
            inside_idx = torch.nonzero(inside, as_tuple=False).squeeze(1)
            cand = anchors[inside_idx]
            gt = gt_bboxes[i].to(device=device, dtype=anchors.dtype)
            assign = max_iou_assign(bbox_overlaps(gt, cand), None, cfg.pos_iou_thr, cfg.neg_iou_thr,
                                    cfg.min_pos_iou, cfg.match_low_quality, gt_max_assign_all=True)
            s = random_sample(assign, cand, gt, None, cfg.num_samples, cfg.pos_fraction, False, generators[i])
            pos = inside_idx[s.pos_inds]
            neg = inside_idx[s.neg_inds]
            labels[i, pos] = 1.0
            label_w[i, pos] = 1.0
            label_w[i, neg] = 1.0
            if pos.numel():
                box_t[i, pos] = self.bbox_coder.encode(s.pos_bboxes, s.pos_gt_bboxes)
                box_w[i, pos] = 1.0
            num_samples += max(pos.numel(), 1) + max(neg.numel(), 1)
        cls = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")
        loss_cls = (cls * label_w).sum() / num_samples
        reg = box_loss(deltas.float(), box_t, cfg.loss_bbox, cfg.smooth_l1_beta)
        loss_bbox = (reg * box_w[..., None]).sum() / num_samples
        return {"loss_rpn_cls": loss_cls, "loss_rpn_bbox": loss_bbox}

    def _proposals_single(self, cls_scores: list[Tensor], bbox_preds: list[Tensor],
                          anchors: list[Tensor], img_shape: Sequence[int], nms_pre: int,
                          max_per_img: int) -> Tensor:
        mlvl_scores, mlvl_deltas, mlvl_anchors, level_ids = [], [], [], []
        for level, (cls, reg, anc) in enumerate(zip(cls_scores, bbox_preds, anchors)):
            scores = cls.permute(1, 2, 0).reshape(-1).sigmoid()
            deltas = reg.permute(1, 2, 0).reshape(-1, 4)
            # a traced export keeps the sort whatever the anchor count, which follows its input
            # size (--dynamic); slicing past the end keeps all. Eager: mmdet's condition.
            if 0 < nms_pre and (torch.jit.is_tracing() or nms_pre < scores.shape[0]):
                # mmdet sorts (rather than topk); keep its order among equal scores too.
                ranked, order = scores.sort(descending=True)
                keep = order[:nms_pre]
                scores = ranked[:nms_pre]
                deltas = deltas[keep]
                anc = anc[keep]
            mlvl_scores.append(scores)
            mlvl_deltas.append(deltas)
            mlvl_anchors.append(anc)
            level_ids.append(scores.new_full((scores.size(0),), level, dtype=torch.long))
        scores = torch.cat(mlvl_scores)
        proposals = self.bbox_coder.decode(torch.cat(mlvl_anchors), torch.cat(mlvl_deltas),
                                           max_shape=img_shape)
        ids = torch.cat(level_ids)
        if self.min_bbox_size >= 0:
            w = proposals[:, 2] - proposals[:, 0]
            h = proposals[:, 3] - proposals[:, 1]
            valid = (w > self.min_bbox_size) & (h > self.min_bbox_size)
            if not bool(valid.all()):
                proposals, scores, ids = proposals[valid], scores[valid], ids[valid]
        if proposals.numel() == 0:
            return proposals.new_zeros((0, 5))
        keep = batched_nms(proposals, scores, ids, self.nms_iou)[:max_per_img]
        return torch.cat([proposals[keep], scores[keep, None]], dim=1)
