"""FPN neck named like mmdet 2.x's ``FPN`` (``lateral_convs.i.conv``, ``fpn_convs.i.conv``).

mmdet wraps each conv in mmcv's ``ConvModule``; without norm or activation that is just a
biased conv, but it adds the ``.conv.`` level to the parameter names, kept here by
:class:`ConvModule`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvModule(nn.Module):
    """A conv (with bias) optionally followed by ReLU; its parameters live under ``.conv.``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        relu: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=True)
        self.relu = nn.ReLU(inplace=True) if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.relu(x) if self.relu is not None else x


class FPN(nn.Module):
    """Feature pyramid: C2..C5 -> P2..P6 (strides 4, 8, 16, 32, 64), ``out_channels`` each.

    Lateral 1x1 convs; top-down path adds each upper lateral, upsampled with nearest
    interpolation to the **exact** size of the lower one (not x2, so odd sizes work as in
    mmdet); 3x3 output convs on every level; extra levels beyond the inputs are
    ``max_pool2d(kernel 1, stride 2)`` of the last output (mmdet's ``add_extra_convs=False``).
    """

    def __init__(self, in_channels: Sequence[int] = (256, 512, 1024, 2048), out_channels: int = 256, num_outs: int = 5) -> None:
        super().__init__()
        if num_outs < len(in_channels):
            raise ValueError(f"num_outs={num_outs} is fewer than the {len(in_channels)} input levels")
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.lateral_convs = nn.ModuleList(ConvModule(c, out_channels, 1) for c in self.in_channels)
        self.fpn_convs = nn.ModuleList(ConvModule(out_channels, out_channels, 3, padding=1) for _ in self.in_channels)
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier-uniform weights, zero biases (mmdet's FPN init)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """inputs: C2..C5 [B, in_channels[i], Hi, Wi] -> ``num_outs`` tensors [B, out_channels, ., .]."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"FPN expects {len(self.in_channels)} feature maps, got {len(inputs)}")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
