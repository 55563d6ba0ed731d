"""ResNet / ResNeXt backbones named and shaped exactly like mmdet 2.x's ``ResNet``/``ResNeXt``.

State-dict layout (what released checkpoints hold): ``conv1``, ``bn1`` (stem), then
``layer{1..4}.{j}.{conv1,bn1,conv2,bn2[,conv3,bn3][,downsample.0,downsample.1]}``; no conv
biases. Deformable 3x3 convs (DCN v1) keep mmcv's ``DeformConv2dPack`` layout: ``conv2.weight``
plus a child ``conv2.conv_offset`` (plain 3x3 conv, 18 channels, bias, zero-initialised).

Training-time behaviour follows mmdet: ``frozen_stages`` (stem + the first N stages get no
gradient and stay in eval mode), ``norm_eval`` (every BatchNorm stays in eval mode, so its
running statistics never change) and BN ``requires_grad``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

# depth -> (block type, blocks per stage), as mmdet's ResNet.arch_settings
ARCH_SETTINGS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class DeformConv2d(nn.Module):
    """Deformable convolution v1 (no modulation) with its own offset predictor.

    Same parameters and names as mmcv's ``DeformConv2dPack``: ``weight``
    [out, in/groups, k, k] (no bias) and ``conv_offset`` (a k x k conv with the same stride,
    padding and dilation, ``2*k*k*deform_groups`` outputs, zero-initialised so the layer
    starts as a plain convolution). Offset channels are ``[dy0, dx0, dy1, dx1, ...]`` over
    kernel positions in row-major order, the layout ``torchvision.ops.deform_conv2d`` uses.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        groups: int = 1,
        deform_groups: int = 1,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by groups={groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.deform_groups = deform_groups
        # `weight` registered before `conv_offset`: mmcv's key order.
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.register_parameter("bias", None)  # mmcv has none; a folded BatchNorm adds one (not in checkpoints)
        self.conv_offset = nn.Conv2d(
            in_channels,
            deform_groups * 2 * kernel_size * kernel_size,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=True,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weight ~ U(-1/sqrt(n), 1/sqrt(n)) with n = fan-in (mmcv's choice); offsets start at 0."""
        n = self.in_channels * self.kernel_size * self.kernel_size
        bound = 1.0 / n**0.5
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in, H, W] -> [B, out, H', W'] (H' as a plain conv with the same settings)."""
        offset = self.conv_offset(x)
        k = self.kernel_size
        # mmcv zero-pads inputs smaller than the kernel (bottom/right) and crops the output back;
        # done here too so tiny feature maps give the same numbers.
        pad_h = max(k - x.shape[2], 0)
        pad_w = max(k - x.shape[3], 0)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
            offset = F.pad(offset, (0, pad_w, 0, pad_h))
        out = deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,  # None unless prepare_for_inference folded a BatchNorm into this conv
            stride=(self.stride, self.stride),
            padding=(self.padding, self.padding),
            dilation=(self.dilation, self.dilation),
        )
        if pad_h or pad_w:
            out = out[:, :, : out.shape[2] - pad_h, : out.shape[3] - pad_w].contiguous()
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, deform_groups={self.deform_groups}"
        )


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)  # eps 1e-5, momentum 0.1: mmdet's BN defaults


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34). No style, groups or DCN variants: the stride is on ``conv1``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place: same sum, one allocation less
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck (ResNet-50+, ResNeXt).

    ``style='pytorch'`` puts the block stride on the 3x3 ``conv2``; ``'caffe'`` on the first
    1x1 ``conv1``. ResNeXt width = floor(planes * base_width / 64) * groups (plain ResNet:
    ``groups=1`` -> width = planes).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        style: str = "pytorch",
        groups: int = 1,
        base_width: int = 64,
        dcn: bool = False,
    ) -> None:
        super().__init__()
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"style must be 'pytorch' or 'caffe', got {style!r}")
        width = planes if groups == 1 else (planes * base_width // 64) * groups
        conv1_stride, conv2_stride = (1, stride) if style == "pytorch" else (stride, 1)
        self.conv1 = nn.Conv2d(inplanes, width, 1, stride=conv1_stride, bias=False)
        self.bn1 = _bn(width)
        if dcn:
            self.conv2: nn.Module = DeformConv2d(width, width, 3, stride=conv2_stride, padding=1, groups=groups)
        else:
            self.conv2 = nn.Conv2d(width, width, 3, stride=conv2_stride, padding=1, groups=groups, bias=False)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = _bn(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """ResNet / ResNeXt backbone returning C2..C5 (strides 4, 8, 16, 32).

    Args:
        depth: 18, 34 (BasicBlock), 50, 101, 152 (Bottleneck).
        style: ``"pytorch"`` (stride on the 3x3) or ``"caffe"`` (stride on the first 1x1).
        groups, base_width: ResNeXt cardinality and bottleneck base width (1, 64 = ResNet).
        dcn_stages: per stage (layer1..layer4), whether every block's 3x3 ``conv2`` is deformable.
        frozen_stages: -1 freezes nothing; N >= 0 freezes the stem and layer1..layerN
            (no gradient, eval mode even in ``train()``).
        norm_eval: keep every BatchNorm in eval mode during training (running stats frozen).
        norm_requires_grad: whether BN weight/bias are trained.
        zero_init_residual: start the last BN of each block at 0 (only matters without
            pretrained weights).
        out_indices: which stages (0..3) to return.
        channels_last: run the convolutions in channels-last memory format. ``False``
            (default): NCHW, bit-identical to mmdet on CPU. ``True``: channels-last (on CPU,
            oneDNN runs backbone + FPN ~1.4x faster; results then differ from mmdet's by float
            rounding). ``None``: channels-last for CPU inference under ``torch.no_grad()`` only
            (oneDNN re-plans channels-last backward passes for every new input shape). The
            outputs (and so the FPN's) follow the chosen format.

    ``forward(x [B,3,H,W]) -> tuple`` of C2..C5 tensors with ``out_channels`` channels
    (256, 512, 1024, 2048 for Bottleneck; 64..512 for BasicBlock).
    """

    def __init__(
        self,
        depth: int = 50,
        style: str = "pytorch",
        groups: int = 1,
        base_width: int = 64,
        dcn_stages: Sequence[bool] = (False, False, False, False),
        frozen_stages: int = -1,
        norm_eval: bool = False,
        norm_requires_grad: bool = True,
        zero_init_residual: bool = True,
        in_channels: int = 3,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        channels_last: bool | None = False,
    ) -> None:
        super().__init__()
        if depth not in ARCH_SETTINGS:
            raise ValueError(f"unsupported ResNet depth {depth}; choose from {sorted(ARCH_SETTINGS)}")
        if len(dcn_stages) != 4:
            raise ValueError("dcn_stages needs one entry per stage (4)")
        kind, blocks = ARCH_SETTINGS[depth]
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock if kind == "basic" else Bottleneck
        if kind == "basic" and (groups != 1 or base_width != 64):
            raise ValueError("BasicBlock (ResNet-18/34) does not support groups/base_width (ResNeXt)")
        if kind == "basic" and any(dcn_stages):
            raise ValueError("BasicBlock (ResNet-18/34) does not support deformable convolution")
        self.depth = depth
        self.style = style
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.norm_requires_grad = norm_requires_grad
        self.zero_init_residual = zero_init_residual
        self.out_indices = tuple(out_indices)
        self.channels_last = channels_last

        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = _bn(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        inplanes = 64
        self.out_channels: list[int] = []
        self.res_layers: list[str] = []
        for i, n in enumerate(blocks):
            planes = 64 * 2**i
            stride = 1 if i == 0 else 2
            layer = self._make_layer(block, inplanes, planes, n, stride, style, groups, base_width, bool(dcn_stages[i]))
            name = f"layer{i + 1}"
            self.add_module(name, layer)
            self.res_layers.append(name)
            inplanes = planes * block.expansion
            if i in self.out_indices:
                self.out_channels.append(inplanes)

        self.init_weights()
        if not norm_requires_grad:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    for p in m.parameters():
                        p.requires_grad_(False)
        self._freeze_stages()

    @staticmethod
    def _make_layer(
        block: type[BasicBlock] | type[Bottleneck],
        inplanes: int,
        planes: int,
        num_blocks: int,
        stride: int,
        style: str,
        groups: int,
        base_width: int,
        dcn: bool,
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            # The downsample conv carries the stride in both styles.
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                _bn(planes * block.expansion),
            )
        # the bottleneck's variants (checked absent for BasicBlock by ResNet)
        kw = dict(style=style, groups=groups, base_width=base_width, dcn=dcn) if block is Bottleneck else {}
        layers = [block(inplanes, planes, stride, downsample, **kw)]
        for _ in range(1, num_blocks):
            layers.append(block(planes * block.expansion, planes, 1, None, **kw))
        return nn.Sequential(*layers)

    def init_weights(self) -> None:
        """Random init as mmdet: Kaiming-normal (fan_out, relu) convs, BN = 1/0, zero-init residual BN, zero offsets."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, DeformConv2d):
                m.reset_parameters()
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_norm().weight)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        mods: list[nn.Module] = [self.conv1, self.bn1]
        for i in range(1, self.frozen_stages + 1):
            mods.append(getattr(self, f"layer{i}"))
        return mods

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNet":
        """Switch mode, then keep frozen stages (and, with ``norm_eval``, every BN) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x [B, 3, H, W] -> (C2 [B,c0,H/4,W/4], C3 [../8], C4 [../16], C5 [../32]) for the selected out_indices."""
        if self.channels_last is None:
            use_cl = x.device.type == "cpu" and not torch.is_grad_enabled()
        else:
            use_cl = self.channels_last
        if use_cl:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
