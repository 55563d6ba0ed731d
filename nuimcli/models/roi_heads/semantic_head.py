"""HTC's semantic branch: :class:`FusedSemanticHead`, with its loss."""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from nuimcli.models.roi_heads.layers import ConvModule


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
        ignore_label, loss_weight: of the training loss (0 and 0.2).
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

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy of ``logits`` ``[B, S, h, w]`` vs the label map ``target`` ``[B, h, w]``
        (int64), ignoring ``ignore_label``, times ``loss_weight`` (mmdet 2.x averaging)."""
        valid = target != self.ignore_label
        if bool(valid.any()):
            loss = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_label)
        else:  # all pixels ignored: mmdet would give NaN; a zero keeps the step usable
            loss = logits.sum() * 0.0
        return loss * self.loss_weight
