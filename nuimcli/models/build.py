"""Preset -> detector. The only place that reads ``preset.model``.

Train, eval, predict and the zoo all call :func:`build_model`; none of them knows which
detector it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from nuimcli.models.backbones import ResNet
from nuimcli.models.necks import FPN
from nuimcli.models.settings import RoITestSettings, RoITrainSettings, RPNTrainSettings
from nuimcli.presets import DETECTORS, BackboneConfig, Preset, RoIConfig, RPNConfig

if TYPE_CHECKING:
    from nuimcli.models.detector import Detector
    from nuimcli.models.roi_heads import RoIHead
    from nuimcli.models.rpn import RPNHead


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


def rpn_train_settings(r: RPNConfig) -> RPNTrainSettings:
    """The RPN's train settings from the preset's ``model.rpn`` block."""
    return RPNTrainSettings(
        allowed_border=r.allowed_border,
        pos_iou_thr=r.pos_iou_thr,
        neg_iou_thr=r.neg_iou_thr,
        min_pos_iou=r.min_pos_iou,
        match_low_quality=r.match_low_quality,
        num_samples=r.num_samples,
        pos_fraction=r.pos_fraction,
        loss_bbox=r.loss_bbox,
        smooth_l1_beta=r.smooth_l1_beta,
        nms_pre=r.train_nms_pre,
        max_per_img=r.train_max_per_img,
    )


def roi_train_settings(roi: RoIConfig) -> RoITrainSettings:
    """The RoI head's train settings from the preset's ``model.roi`` block."""
    return RoITrainSettings(
        stage_iou_thrs=tuple(roi.stage_iou_thrs),
        stage_loss_weights=tuple(roi.stage_loss_weights),
        match_low_quality=roi.match_low_quality,
        num_samples=roi.num_samples,
        pos_fraction=roi.pos_fraction,
        loss_bbox=roi.loss_bbox,
        smooth_l1_beta=roi.smooth_l1_beta,
        mask_size=roi.mask_size,
    )


def roi_test_settings(roi: RoIConfig) -> RoITestSettings:
    """The RoI head's post-processing settings from the preset's ``model.roi`` block."""
    return RoITestSettings(score_thr=roi.score_thr, nms_iou=roi.nms_iou, max_per_img=roi.max_per_img,
                           mask_thr_binary=roi.mask_thr_binary)


def build_rpn_head(preset: Preset) -> "RPNHead":
    """RPN head with the preset's anchors and train/test proposal limits."""
    from nuimcli.models.rpn import RPNHead

    m = preset.model
    r = m.rpn
    return RPNHead(
        in_channels=m.fpn_channels,
        feat_channels=r.feat_channels,
        anchor_strides=list(r.anchor_strides),
        anchor_scales=list(r.anchor_scales),
        anchor_ratios=list(r.anchor_ratios),
        nms_pre=r.test_nms_pre,
        max_per_img=r.test_max_per_img,
        nms_iou=r.nms_iou,
        min_bbox_size=r.min_bbox_size,
        train_cfg=rpn_train_settings(r),
    )


def build_roi_head(preset: Preset) -> "RoIHead":
    """The RoI head of ``preset.model.detector``: standard (Mask R-CNN), cascade or HTC."""
    from nuimcli.models import roi_heads as R

    m = preset.model
    roi = m.roi
    c = m.fpn_channels

    def bbox_head(stage: int):
        return R.Shared2FCBBoxHead(
            in_channels=c,
            roi_feat_size=roi.roi_feat_size,
            fc_out_channels=roi.fc_out_channels,
            num_classes=m.num_classes,
            reg_class_agnostic=roi.reg_class_agnostic,
            target_means=(0.0, 0.0, 0.0, 0.0),
            target_stds=tuple(roi.target_stds[stage]),
        )

    mask_kw = dict(num_convs=roi.mask_num_convs, in_channels=c, conv_out_channels=c,
                   num_classes=m.num_classes, roi_feat_size=roi.mask_roi_size)
    common = dict(
        featmap_strides=list(roi.featmap_strides),
        finest_scale=roi.finest_scale,
        test_cfg=roi_test_settings(roi),
        train_cfg=roi_train_settings(roi),
    )
    spec = DETECTORS.get(m.detector)
    if spec is None:  # presets.validate_semantics rejects it first
        raise ValueError(f"{preset.name}: unknown detector {m.detector!r}")
    if not spec.cascade:
        if roi.num_stages != 1:
            raise ValueError(f"{preset.name}: {spec.display_name} has one RoI stage, model.roi.num_stages={roi.num_stages}")
        return R.StandardRoIHead(bbox_head(0), R.FCNMaskHead(**mask_kw), **common)
    stages = range(roi.num_stages)
    if not spec.hybrid:
        return R.CascadeRoIHead(
            [bbox_head(i) for i in stages],
            [R.FCNMaskHead(**mask_kw) for _ in stages],
            **common,
        )
    # HTC: hybrid stages and the optional semantic head
    sem = m.semantic
    semantic_head = None
    if sem.enabled:
        semantic_head = R.FusedSemanticHead(
            num_ins=len(m.rpn.anchor_strides),
            fusion_level=sem.fusion_level,
            num_convs=sem.num_convs,
            in_channels=c,
            conv_out_channels=c,
            num_classes=sem.num_classes,
            ignore_label=sem.ignore_label,
            loss_weight=sem.loss_weight,
        )
    return R.HybridTaskCascadeRoIHead(
        [bbox_head(i) for i in stages],
        # every head but the first has conv_res (mmdet's HTC config), used by mask info flow
        [R.HTCMaskHead(with_conv_res=i > 0, **mask_kw) for i in stages],
        semantic_head=semantic_head,
        semantic_stride=m.rpn.anchor_strides[sem.fusion_level],
        interleaved=roi.interleaved,
        mask_info_flow=roi.mask_info_flow,
        **common,
    )


def build_model(preset: Preset) -> "Detector":
    """The detector a preset describes, randomly initialised as mmdet initialises it.

    ``Detector(backbone, neck, rpn_head, roi_head)`` (mmdet's state-dict prefixes) carrying the
    preset and its test-time preprocessing (test scale, mean/std, BGR/RGB, padding).
    Pretrained / ``load_from`` weights are loaded by the caller (training, checkpoints).
    """
    from nuimcli.models.detector import Detector

    m = preset.model
    backbone = build_backbone(m.backbone)
    neck = build_neck(backbone.out_channels, m.fpn_channels, num_outs=len(m.rpn.anchor_strides))
    d = preset.data
    return Detector(
        backbone,
        neck,
        build_rpn_head(preset),
        build_roi_head(preset),
        num_classes=m.num_classes,
        preset=preset,
        test_scale=tuple(d.test_scale),
        mean=tuple(d.mean),
        std=tuple(d.std),
        to_rgb=d.to_rgb,
        size_divisor=d.size_divisor,
    )
