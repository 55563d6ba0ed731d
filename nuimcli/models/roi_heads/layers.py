"""Building blocks of the RoI heads: :class:`ConvModule` and :class:`SingleRoIExtractor`."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nuimcli.models.roi_align import roi_align


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

    def settings(self) -> tuple:
        """What determines the output (an extractor has no parameters): equal settings, equal features."""
        return (type(self).__name__, self.output_size, tuple(self.featmap_strides), self.finest_scale)

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
            # every level runs, even with no RoIs (roi_align takes an empty set), and index_copy_
            # rather than `out[inds] = ...`: a traced/exported graph would otherwise bake in which
            # levels were empty and the per-level counts of the example it was traced on
            out.index_copy_(0, inds, roi_align(feat, rois[inds], (s, s), spatial_scale=1.0 / self.featmap_strides[i],
                                               sampling_ratio=0, aligned=True))
        return out
