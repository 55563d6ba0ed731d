"""Preset -> detector. The only place that reads ``preset.model``.

Train, eval, predict and the zoo all call :func:`build_model`; none of them knows which
detector it runs.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from nuimcli.models.backbones import ResNet
from nuimcli.models.necks import FPN
from nuimcli.presets import BackboneConfig, Preset


def build_backbone(cfg: BackboneConfig) -> ResNet:
    """ResNet / ResNeXt from the preset's backbone block (outputs C2..C5)."""
    return ResNet(
        depth=cfg.depth,
        style=cfg.style,
        groups=cfg.groups,
        base_width=cfg.base_width,
        dcn_stages=tuple(cfg.dcn_stages),
        frozen_stages=cfg.frozen_stages,
        norm_eval=cfg.norm_eval,
        norm_requires_grad=cfg.norm_requires_grad,
        zero_init_residual=cfg.zero_init_residual,
    )


def build_neck(in_channels: Sequence[int], out_channels: int, num_outs: int = 5) -> FPN:
    """FPN over C2..C5 with ``num_outs`` outputs (P6 by stride-2 max-pool)."""
    return FPN(in_channels=list(in_channels), out_channels=out_channels, num_outs=num_outs)


def build_model(preset: Preset) -> "nn.Module":
    """The detector a preset describes: ``Detector(backbone, neck, rpn_head, roi_head)``."""
    # Heads are imported here: they are the other half of the model core (model-heads).
    from nuimcli.models.detector import Detector  # noqa: F401

    raise NotImplementedError("build_model: RoI heads and Detector not wired yet")
