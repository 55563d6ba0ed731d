"""Mask R-CNN's RoI head: :class:`StandardRoIHead` (one box stage, one mask head)."""

from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor

from nuimcli.models.roi_heads.base import RoIHead
from nuimcli.models.roi_heads.bbox_head import Shared2FCBBoxHead
from nuimcli.models.roi_heads.layers import SingleRoIExtractor
from nuimcli.models.roi_heads.mask_heads import FCNMaskHead
from nuimcli.models.settings import RoITestSettings, RoITrainSettings


class StandardRoIHead(RoIHead):
    """Mask R-CNN's RoI head: one box head and one mask head (attributes ``bbox_head``, ``mask_head``).

    Training and inference are :class:`~nuimcli.models.roi_heads.base.RoIHead`'s stage loop
    with one stage.

    Args:
        bbox_head: a :class:`Shared2FCBBoxHead`.
        mask_head: an :class:`FCNMaskHead` or None.
        test_cfg: post-processing (score_thr 0.05, nms 0.5, 100 per image, mask threshold 0.5).
        train_cfg: sampling and loss settings, or None for inference only.
        featmap_strides, finest_scale: RoIAlign level settings (P2–P5, 56).
    """

    def __init__(self, bbox_head: Shared2FCBBoxHead, mask_head: Optional[FCNMaskHead], *,
                 test_cfg: RoITestSettings, train_cfg: Optional[RoITrainSettings] = None,
                 featmap_strides: Sequence[int] = (4, 8, 16, 32), finest_scale: int = 56) -> None:
        super().__init__(1, test_cfg, train_cfg)
        self.bbox_roi_extractor = SingleRoIExtractor(bbox_head.roi_feat_size, featmap_strides, finest_scale)
        self.bbox_head = bbox_head
        if mask_head is not None:
            self.mask_roi_extractor = SingleRoIExtractor(mask_head.roi_feat_size, featmap_strides, finest_scale)
        self.mask_head = mask_head

    @property
    def with_mask(self) -> bool:
        return self.mask_head is not None

    def stage_bbox_head(self, stage: int) -> Shared2FCBBoxHead:
        _check_stage(stage)
        return self.bbox_head

    def stage_mask_head(self, stage: int) -> FCNMaskHead:
        _check_stage(stage)
        return self.mask_head

    def bbox_forward(self, stage: int, feats: Sequence[Tensor], rois: Tensor,
                     semantic_feat: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """RoIs ``[N, 5]`` → (logits ``[N, C + 1]``, deltas ``[N, 4C]``). ``stage`` must be 0."""
        _check_stage(stage)
        return self.bbox_head(self.bbox_roi_extractor(feats, rois))

    def mask_logits(self, feats: Sequence[Tensor], rois: Tensor, semantic_feat: Optional[Tensor],
                    stages: Sequence[int], labels: Optional[Tensor] = None) -> list[Tensor]:
        """RoIs ``[N, 5]`` → ``[mask logits [N, C, 28, 28]]`` (``[N, 28, 28]`` with ``labels``).
        ``stages`` must be ``[0]``."""
        for stage in stages:
            _check_stage(stage)
        return [self.mask_head(self.mask_roi_extractor(feats, rois), labels)]


def _check_stage(stage: int) -> None:
    if stage != 0:
        raise ValueError(f"a standard RoI head has a single stage, not stage {stage}")
