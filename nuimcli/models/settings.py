"""Typed train / test settings of the heads (mmdet's ``train_cfg`` / ``test_cfg``).

:func:`nuimcli.models.build.build_model` fills them from the preset (``model.rpn``,
``model.roi``); the heads read nothing else. No field has a default: the preset is the one
source of the values.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RPNTrainSettings:
    """What the RPN needs to train (mmdet ``train_cfg.rpn`` + ``train_cfg.rpn_proposal``).

    Args:
        allowed_border: -1 keeps every anchor; ``>= 0`` ignores anchors crossing the image
            border by more than this.
        pos_iou_thr, neg_iou_thr, min_pos_iou, match_low_quality: the max-IoU assigner
            (0.7, 0.3, 0.3, True).
        num_samples, pos_fraction: the random sampler (256 anchors, 0.5 positive).
        loss_bbox: ``"l1"`` or ``"smooth_l1"``; smooth_l1_beta: its beta.
        nms_pre, max_per_img: proposal limits while training (2000, 1000).
    """

    allowed_border: int
    pos_iou_thr: float
    neg_iou_thr: float
    min_pos_iou: float
    match_low_quality: bool
    num_samples: int
    pos_fraction: float
    loss_bbox: str
    smooth_l1_beta: float
    nms_pre: int
    max_per_img: int


@dataclass(frozen=True)
class RoITestSettings:
    """Test-time post-processing of a RoI head (mmdet ``test_cfg.rcnn``).

    Args:
        score_thr: detections need ``score > score_thr`` (0.05; HTC 0.001).
        nms_iou: per-class NMS IoU (0.5).
        max_per_img: detections kept per image (100).
        mask_thr_binary: pasted mask probability threshold (0.5).
    """

    score_thr: float
    nms_iou: float
    max_per_img: int
    mask_thr_binary: float


@dataclass(frozen=True)
class RoITrainSettings:
    """What a RoI head needs to train (mmdet ``train_cfg.rcnn``, one entry per stage).

    Args:
        stage_iou_thrs: IoU of each stage's assigner (positive = negative = min-positive
            threshold: 0.5; cascade 0.5, 0.6, 0.7).
        stage_loss_weights: weight of each stage's losses (cascade 1, 0.5, 0.25).
        match_low_quality: the assigner's low-quality matches.
        num_samples, pos_fraction: the random sampler (512 RoIs, 0.25 positive).
        loss_bbox: ``"l1"`` or ``"smooth_l1"``; smooth_l1_beta: its beta.
        mask_size: side of the mask targets (28).
    """

    stage_iou_thrs: tuple[float, ...]
    stage_loss_weights: tuple[float, ...]
    match_low_quality: bool
    num_samples: int
    pos_fraction: float
    loss_bbox: str
    smooth_l1_beta: float
    mask_size: int
