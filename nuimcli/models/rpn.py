"""RPN head: a shared 3x3 conv + sigmoid objectness + box deltas per anchor, and proposals.

State-dict names follow mmdet's ``RPNHead``: ``rpn_conv``, ``rpn_cls``, ``rpn_reg`` (in this
registration order). Proposal generation is mmdet 2.28's test-time ``_get_bboxes_single``:
per level sigmoid scores and the top ``nms_pre``; decode + clip to ``img_shape``; drop boxes
with w or h ``<= min_bbox_size``; NMS per level (``batched_nms`` with the level as the group);
keep the first ``max_per_img``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nuimcli.models.boxes import AnchorGenerator, DeltaXYWHBBoxCoder, batched_nms


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
        train_nms_pre, train_max_per_img: the same two limits used while training
            (``rpn_proposal`` in mmdet); ``None`` = the test values.
        train_cfg: anything the training code wants to keep with the head (assigner and sampler
            settings); not used here.
    """

    def __init__(self, in_channels: int = 256, feat_channels: int = 256,
                 anchor_strides: Sequence[int] = (4, 8, 16, 32, 64),
                 anchor_scales: Sequence[float] = (8.0,),
                 anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 nms_pre: int = 1000, max_per_img: int = 1000, nms_iou: float = 0.7,
                 min_bbox_size: float = 0.0, train_nms_pre: Optional[int] = None,
                 train_max_per_img: Optional[int] = None, train_cfg: Any = None) -> None:
        super().__init__()
        self.anchor_generator = AnchorGenerator(anchor_strides, anchor_ratios, anchor_scales)
        self.bbox_coder = DeltaXYWHBBoxCoder()
        self.num_anchors = self.anchor_generator.num_base_anchors
        self.nms_pre = int(nms_pre)
        self.max_per_img = int(max_per_img)
        self.nms_iou = float(nms_iou)
        self.min_bbox_size = float(min_bbox_size)
        self.train_nms_pre = int(train_nms_pre) if train_nms_pre is not None else self.nms_pre
        self.train_max_per_img = (int(train_max_per_img) if train_max_per_img is not None
                                  else self.max_per_img)
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
                the module is in training mode, else the test values.

        Returns:
            B tensors ``[K_i, 5]``: ``(x1, y1, x2, y2, score)`` sorted by decreasing score.
        """
        if nms_pre is None:
            nms_pre = self.train_nms_pre if self.training else self.nms_pre
        if max_per_img is None:
            max_per_img = self.train_max_per_img if self.training else self.max_per_img
        anchors = self.anchors(cls_scores)
        out = []
        for i, img_shape in enumerate(img_shapes):
            out.append(self._proposals_single([c[i].detach() for c in cls_scores],
                                              [b[i].detach() for b in bbox_preds],
                                              anchors, img_shape, nms_pre, max_per_img))
        return out

    def _proposals_single(self, cls_scores: list[Tensor], bbox_preds: list[Tensor],
                          anchors: list[Tensor], img_shape: Sequence[int], nms_pre: int,
                          max_per_img: int) -> Tensor:
        mlvl_scores, mlvl_deltas, mlvl_anchors, level_ids = [], [], [], []
        for level, (cls, reg, anc) in enumerate(zip(cls_scores, bbox_preds, anchors)):
            scores = cls.permute(1, 2, 0).reshape(-1).sigmoid()
            deltas = reg.permute(1, 2, 0).reshape(-1, 4)
            if 0 < nms_pre < scores.shape[0]:
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
