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

    #: Set by ``prepare_for_inference`` (fast mode): the conv stack runs channels-last (~10 %
    #: faster on [100, 256, 14, 14] here), and the test-time logits of each RoI's own class come
    #: from one matrix product for the 2x2 stride-2 deconvolution and a per-RoI dot product for the
    #: 1x1 logits, instead of the deconvolution kernel (slow in oneDNN here, plus a layout copy of
    #: its output) and the logits of every class: 0.54 s -> 0.12 s of Cascade's three mask heads at
    #: 1600x900 on 2 cores. Same arithmetic in another summation order; the exact mode (and
    #: training) keeps mmdet's operations.
    fast_inference: bool = False

    def stack_input(self, x: Tensor) -> Tensor:
        """``x`` in the memory format the conv stack runs in."""
        return x.contiguous(memory_format=torch.channels_last) if self.fast_inference else x

    def logits_from_feat(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Conv-stack output ``[N, C, 14, 14]`` → mask logits ``[N, num_classes, 28, 28]``, or with
        ``labels`` ``[N]`` each RoI's own class only, ``[N, 28, 28]``."""
        if labels is None:
            return self.conv_logits(F.relu(self.upsample(x)))
        if self.fast_inference:
            return self._label_logits_by_matmul(x, labels)
        idx = torch.arange(x.shape[0], device=x.device)
        return self.conv_logits(F.relu(self.upsample(x)))[idx, labels]

    def _label_logits_by_matmul(self, x: Tensor, labels: Tensor) -> Tensor:
        # ConvTranspose2d(k=2, s=2): out[n, o, 2i+a, 2j+b] = bias[o] + sum_c x[n, c, i, j] * W[c, o, a, b]
        n, c, h, w = x.shape
        weight = self.upsample.weight  # [C_in, C_out, 2, 2]
        c_out = weight.shape[1]
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        up = rows @ weight.permute(0, 2, 3, 1).reshape(c, 4 * c_out)  # [(n i j), (a b o)]
        up = F.relu(up.view(n, h * w * 4, c_out) + self.upsample.bias)
        class_weight = self.conv_logits.weight[labels, :, 0, 0].unsqueeze(2)  # [N, C_out, 1]
        logits = torch.bmm(up, class_weight).view(n, h, w, 2, 2)  # [n, i, j, a, b]
        logits = logits.permute(0, 1, 3, 2, 4).reshape(n, 2 * h, 2 * w)
        return logits + self.conv_logits.bias[labels].view(n, 1, 1)

    def forward(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """RoI features ``[N, C, 14, 14]`` → mask logits (see :meth:`logits_from_feat`)."""
        x = self.stack_input(x)
        for conv in self.convs:
            x = conv(x)
        return self.logits_from_feat(x, labels)

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
        x = self.stack_input(x)
        if res_feat is not None:
            if not self.with_conv_res:
                raise ValueError("this HTC mask head has no conv_res for a previous feature")
            x = x + self.conv_res(res_feat)
        for conv in self.convs:
            x = conv(x)
        return x

    def forward(self, x: Tensor, res_feat: Optional[Tensor] = None,  # type: ignore[override]
                labels: Optional[Tensor] = None) -> Tensor:
        """``x`` ``[N, C, 14, 14]`` (+ the previous head's feature) → logits ``[N, K, 28, 28]``
        (``[N, 28, 28]`` with ``labels``)."""
        return self.logits_from_feat(self.forward_feat(x, res_feat), labels)
