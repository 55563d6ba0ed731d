"""Mask heads: :class:`FCNMaskHead` (Mask R-CNN, cascade) and :class:`HTCMaskHead` (HTC), with the mask loss."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nuimcli.models.roi_heads.layers import ConvModule
from nuimcli.models.targets import SamplingResult, mask_targets


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

    def class_dependent_params(self) -> tuple[str, ...]:
        """Submodules with one output per class: ``conv_logits`` (one mask map per class)."""
        return ("conv_logits",)

    @property
    def mask_size(self) -> int:
        """Side of the predicted masks (``2 * roi_feat_size``)."""
        return 2 * self.roi_feat_size

    def logits_from_feat(self, x: Tensor) -> Tensor:
        """Conv-stack output ``[N, C, 14, 14]`` → mask logits ``[N, num_classes, 28, 28]``."""
        return self.conv_logits(F.relu(self.upsample(x)))

    def forward(self, x: Tensor) -> Tensor:
        """RoI features ``[N, C, 14, 14]`` → mask logits ``[N, num_classes, 28, 28]``."""
        for conv in self.convs:
            x = conv(x)
        return self.logits_from_feat(x)

    @staticmethod
    def loss(mask_logits: Tensor, samplings: Sequence[SamplingResult], gt_masks: Sequence[Tensor],
             mask_size: int) -> Tensor:
        """mmdet ``FCNMaskHead.loss``: BCE of the GT class's logits vs the binarised targets.

        ``mask_logits`` ``[P, C, 28, 28]`` of the positives of ``samplings`` (images
        concatenated); ``gt_masks`` B x ``[G_i, H_pad, W_pad]``; mean over every pixel.
        """
        if mask_logits.shape[0] == 0:
            return mask_logits.sum()
        targets = torch.cat([mask_targets(s.pos_bboxes, s.pos_assigned_gt_inds, gt_masks[j], mask_size)
                             for j, s in enumerate(samplings)])
        labels = torch.cat([s.pos_gt_labels for s in samplings])
        idx = torch.arange(mask_logits.shape[0], device=mask_logits.device)
        pred = mask_logits[idx, labels].float()
        return F.binary_cross_entropy_with_logits(pred, targets.to(pred), reduction="mean")


class HTCMaskHead(FCNMaskHead):
    """HTC mask head: an FCN mask head that can add the previous stage's feature.

    With ``with_conv_res`` (stages 2 and 3) ``conv_res`` (1x1 conv + ReLU) maps the previous
    head's conv-stack output and adds it to the input before the convs.
    """

    def __init__(self, with_conv_res: bool = True, num_convs: int = 4, in_channels: int = 256,
                 conv_out_channels: int = 256, num_classes: int = 10, roi_feat_size: int = 14) -> None:
        super().__init__(num_convs=num_convs, in_channels=in_channels, conv_out_channels=conv_out_channels,
                         num_classes=num_classes, roi_feat_size=roi_feat_size)
        self.with_conv_res = bool(with_conv_res)
        if self.with_conv_res:
            self.conv_res = ConvModule(self.conv_out_channels, self.conv_out_channels, 1)

    def forward_feat(self, x: Tensor, res_feat: Optional[Tensor] = None) -> Tensor:
        """``x`` ``[N, C, 14, 14]`` (+ ``conv_res`` of the previous head's feature ``res_feat``,
        same shape) → this head's conv-stack feature ``[N, C, 14, 14]``."""
        if res_feat is not None:
            if not self.with_conv_res:
                raise ValueError("this HTC mask head has no conv_res for a previous feature")
            x = x + self.conv_res(res_feat)
        for conv in self.convs:
            x = conv(x)
        return x

    def forward(self, x: Tensor, res_feat: Optional[Tensor] = None) -> Tensor:
        """``x`` ``[N, C, 14, 14]`` (+ the previous head's feature) → logits ``[N, K, 28, 28]``."""
        return self.logits_from_feat(self.forward_feat(x, res_feat))
