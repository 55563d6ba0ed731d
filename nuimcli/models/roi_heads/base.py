"""What the three RoI heads share: the stage loop, for training and inference alike.

:class:`RoIHead` runs the box stages in ONE loop (:meth:`RoIHead._run_stages`; detectron2's
``CascadeROIHeads._forward_box`` is the model): each stage's box head sees the previous
stage's regressed boxes (the RPN proposals for the first). Mask R-CNN is the one-stage case.

* Training (:meth:`RoIHead.loss`, mmdet 2.x ``forward_train``): before each stage its
  proposals are assigned (max IoU at the stage IoU, GT boxes added as proposals) and 512 of
  them sampled at 0.25 positive; softmax CE (background = last class) averaged over the
  samples, box loss summed over positives and divided by the number of samples; masks on the
  positives: targets cropped from the GT bitmaps with RoIAlign to 28x28 and binarised,
  per-class BCE. Cascade / HTC: each stage's losses times its weight, named ``s{i}.…``;
  between stages the sampled RoIs regressed by that stage (labels: the GT class of positives,
  the predicted class of the rest; GT proposals removed) are the next proposals. HTC is
  interleaved (masks trained on the same stage's regressed, re-sampled boxes) and adds the
  semantic loss.
* Inference (:meth:`RoIHead.simple_test`, mmdet 2.x ``simple_test``): every proposal goes
  through every stage, regressed (with the predicted class) and clipped between stages;
  scores = softmax of the mean of the stages' logits; boxes from the last stage; per-class
  NMS; then the mask heads on the final detections (:meth:`RoIHead.mask_probs`).

Random sampling draws from each image's generator
(:func:`~nuimcli.models.targets.seeded_generators`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from nuimcli.data.structures import Batch, ImageMeta
from nuimcli.models.boxes import bbox2roi, bbox_overlaps
from nuimcli.models.roi_heads.bbox_head import Shared2FCBBoxHead
from nuimcli.models.roi_heads.mask_heads import FCNMaskHead
from nuimcli.models.roi_heads.postprocess import RoIDetections, detect_boxes
from nuimcli.models.settings import RoITestSettings, RoITrainSettings
from nuimcli.models.targets import SamplingResult, max_iou_assign, random_sample


@dataclass
class GroundTruth:
    """The training targets of a batch on the model's device (what :meth:`RoIHead.loss` samples against).

    ``bboxes`` B x float32 ``[G_i, 4]``, ``labels`` B x int64 ``[G_i]``, ``masks`` B x
    ``[G_i, H_pad, W_pad]`` or None (no mask loss), ``generators`` one per image.
    """

    bboxes: list[Tensor]
    labels: list[Tensor]
    masks: Optional[list[Tensor]]
    generators: Sequence[Optional[torch.Generator]]


class RoIHead(nn.Module, metaclass=abc.ABCMeta):
    """Base of :class:`StandardRoIHead`, :class:`CascadeRoIHead` and :class:`HybridTaskCascadeRoIHead`.

    A subclass registers its modules (mmdet's names) and defines :meth:`stage_bbox_head`,
    :meth:`stage_mask_head`, :meth:`bbox_forward` and :meth:`mask_logits`; HTC also the
    semantic hooks. Everything else — the stage loop, sampling, losses, post-processing —
    is here, once.

    Args:
        num_stages: box stages (1 for Mask R-CNN, 3 for the cascades).
        test_cfg: post-processing settings.
        train_cfg: sampling and loss settings; None for an inference-only head.
    """

    #: HTC: masks train on the boxes regressed by the same stage (re-assigned and re-sampled).
    interleaved: bool = False

    def __init__(self, num_stages: int, test_cfg: RoITestSettings, train_cfg: Optional[RoITrainSettings]) -> None:
        super().__init__()
        self.num_stages = int(num_stages)
        if train_cfg is not None:
            per_stage = {"stage_iou_thrs": train_cfg.stage_iou_thrs, "stage_loss_weights": train_cfg.stage_loss_weights}
            for name, values in per_stage.items():
                if len(values) != self.num_stages:
                    raise ValueError(f"train_cfg.{name} has {len(values)} entries for {self.num_stages} stages")
        self.test_cfg = test_cfg
        self.train_cfg = train_cfg

    # ------------------------------------------------------------------ what a head defines
    @property
    @abc.abstractmethod
    def with_mask(self) -> bool:
        """True when the head predicts masks."""

    @property
    def with_semantic(self) -> bool:
        """True when the head has HTC's semantic branch."""
        return False

    @abc.abstractmethod
    def stage_bbox_head(self, stage: int) -> Shared2FCBBoxHead:
        """The box head of stage ``stage``."""

    @abc.abstractmethod
    def stage_mask_head(self, stage: int) -> FCNMaskHead:
        """The mask head of stage ``stage`` (only when :attr:`with_mask`)."""

    @abc.abstractmethod
    def bbox_forward(self, stage: int, feats: Sequence[Tensor], rois: Tensor,
                     semantic_feat: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Stage ``stage``: RoIs ``[N, 5]`` → (logits ``[N, C + 1]``, deltas ``[N, 4]`` or ``[N, 4C]``)."""

    @abc.abstractmethod
    def mask_logits(self, feats: Sequence[Tensor], rois: Tensor, semantic_feat: Optional[Tensor],
                    stages: Sequence[int], labels: Optional[Tensor] = None) -> list[Tensor]:
        """Mask logits ``[N, C, 28, 28]`` of RoIs ``[N, 5]`` from the mask head of each of
        ``stages`` (ascending); with ``labels`` ``[N]``, each RoI's own class only, ``[N, 28, 28]``."""

    def semantic_forward(self, feats: Sequence[Tensor]) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """(semantic logits, semantic feature) or (None, None) without a semantic head."""
        return None, None

    def semantic_loss(self, seg_logits: Optional[Tensor], batch: Batch) -> dict[str, Tensor]:
        """``{"loss_semantic_seg": …}`` for a head with a semantic branch, else empty."""
        return {}

    # ------------------------------------------------------------------ training
    def loss(self, feats: Sequence[Tensor], proposals: Sequence[Tensor], batch: Batch,
             generators: Sequence[Optional[torch.Generator]]) -> dict[str, Tensor]:
        """R-CNN (+ mask, + semantic) losses of every stage (see the module docstring).

        Args:
            feats: FPN maps (5 x ``[B, C, H_l, W_l]``).
            proposals: B tensors ``[K_i, >=4]`` (the RPN's train-time proposals).
            batch: the collated batch (targets and metas).
            generators: one per image, for the samplers.

        Returns:
            mmdet's names: ``loss_semantic_seg`` (HTC), then per stage ``loss_cls``,
            ``loss_bbox``, ``acc`` (not a loss), ``loss_mask``, prefixed ``s{i}.`` when there
            are several stages.
        """
        if self.train_cfg is None:
            raise ValueError(f"this {type(self).__name__} was built without train settings; it cannot compute losses")
        device = feats[0].device
        gt = GroundTruth(
            bboxes=[b.to(device=device, dtype=torch.float32) for b in batch.gt_bboxes],
            labels=[lab.to(device) for lab in batch.gt_labels],
            masks=[m.to(device) for m in batch.gt_masks] if batch.gt_masks is not None else None,
            generators=generators,
        )
        seg_logits, semantic_feat = self.semantic_forward(feats)
        losses = self.semantic_loss(seg_logits, batch)
        losses.update(self._run_stages(feats, proposals, batch.img_metas, semantic_feat, gt).losses)
        return losses

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def simple_test(self, feats: Sequence[Tensor], proposals: Sequence[Tensor],
                    img_metas: Sequence[ImageMeta]) -> list[RoIDetections]:
        """mmdet 2.x test-time RoI stage for a batch.

        Args:
            feats: FPN maps (5 x ``[B, C, H_l, W_l]``).
            proposals: B tensors ``[K_i, >=4]`` (RPN output, network-input frame).
            img_metas: B metas (``img_shape``, ``scale_factor`` are read).

        Returns:
            one :class:`RoIDetections` per image (boxes in the original frame).
        """
        seg_logits, semantic_feat = self.semantic_forward(feats)
        # torchvision's roi_align makes its input contiguous on every call: with the fast mode's
        # channels-last maps that was a full copy of each level per stage (~1 s of Cascade's 5.7 s
        # at 1600x900 here); one copy per level up front. A no-op for NCHW maps (exact mode).
        feats = [f.contiguous() for f in feats]
        if semantic_feat is not None:
            semantic_feat = semantic_feat.contiguous()
        dets = self._run_stages(feats, proposals, img_metas, semantic_feat).detections
        self._add_masks(feats, dets, img_metas, semantic_feat)
        if seg_logits is not None:
            for i, d in enumerate(dets):
                d.semantic_logits = seg_logits[i]
        return dets

    def mask_probs(self, feats: Sequence[Tensor], rois: Tensor, labels: Tensor,
                   semantic_feat: Optional[Tensor] = None) -> Tensor:
        """Test-time masks: ``[N, 28, 28]`` mean over the stages' mask heads of the sigmoid of
        each RoI's ``labels`` channel (mmdet 2.x merges the stages' probabilities)."""
        probs = [logits.sigmoid()
                 for logits in self.mask_logits(feats, rois, semantic_feat, range(self.num_stages), labels)]
        return sum(probs[1:], probs[0]) / float(self.num_stages)

    # ------------------------------------------------------------------ the stage loop
    def _run_stages(self, feats: Sequence[Tensor], proposals: Sequence[Tensor], img_metas: Sequence[ImageMeta],
                    semantic_feat: Optional[Tensor], gt: Optional[GroundTruth] = None) -> "_StagesOut":
        """The box stages, in one loop: training (``gt`` given) gives losses, inference detections."""
        training = gt is not None
        if training:
            boxes = [p[:, :4].detach().to(torch.float32) for p in proposals]
        else:
            boxes = [p[:, :4] for p in proposals]
            if sum(int(b.size(0)) for b in boxes) == 0:
                return _StagesOut(detections=[self._empty(feats) for _ in boxes])
        losses: dict[str, Tensor] = {}
        stage_scores: list[Tensor] = []
        for stage in range(self.num_stages):
            last = stage == self.num_stages - 1
            samplings: list[SamplingResult] = []
            if training:  # this stage's RoIs: its proposals assigned and sampled
                samplings = self._sample(stage, boxes, gt)
                boxes = [s.bboxes for s in samplings]
                rois = bbox2roi(boxes)
            else:
                rois = bbox2roi(boxes).to(feats[0])
            counts = [int(b.size(0)) for b in boxes]
            cls_score, bbox_pred = self.bbox_forward(stage, feats, rois, semantic_feat)
            stage_scores.append(cls_score)
            if training:
                regressed = self._stage_losses(stage, feats, semantic_feat, rois, counts, cls_score, bbox_pred,
                                               samplings, img_metas, gt, losses)
            elif not last:  # regressed with the predicted class
                regressed = self._regress(stage, rois, cls_score[:, :-1].argmax(1), bbox_pred, img_metas, counts)
            if not last:
                boxes = regressed  # the next stage's proposals
        if training:
            return _StagesOut(losses=losses)
        return _StagesOut(detections=self._detect(rois, counts, stage_scores, bbox_pred, img_metas, feats))

    def _stage_losses(self, stage: int, feats: Sequence[Tensor], semantic_feat: Optional[Tensor], rois: Tensor,
                      counts: list[int], cls_score: Tensor, bbox_pred: Tensor, samplings: list[SamplingResult],
                      img_metas: Sequence[ImageMeta], gt: GroundTruth,
                      losses: dict[str, Tensor]) -> Optional[list[Tensor]]:
        """Stage ``stage``'s box (and mask) losses, added to ``losses``; returns the sampled RoIs
        regressed by the stage without the GT proposals (None when no later step needs them)."""
        head = self.stage_bbox_head(stage)
        weight = self.train_cfg.stage_loss_weights[stage] if self.num_stages > 1 else 1.0
        prefix = f"s{stage}." if self.num_stages > 1 else ""
        labels, targets = head.get_targets(samplings)
        for name, value in head.loss(cls_score, bbox_pred, labels, targets, self.train_cfg.loss_bbox,
                                     self.train_cfg.smooth_l1_beta).items():
            losses[prefix + name] = value * weight if "loss" in name else value
        regressed = None
        if self.num_stages > 1 and (stage < self.num_stages - 1 or self.interleaved):
            # mmdet refine_bboxes: positives keep their GT class, the rest take the predicted one
            labels = torch.where(labels == head.num_classes, cls_score.detach()[:, :-1].argmax(1), labels)
            regressed = self._regress(stage, rois, labels, bbox_pred.detach().float(), img_metas, counts)
            regressed = _drop_gt_proposals(regressed, samplings)
        if self.with_mask and gt.masks is not None:
            # HTC (interleaved) trains the masks on this stage's regressed boxes, sampled again
            mask_samplings = self._sample(stage, regressed, gt) if self.interleaved else samplings
            pos_rois = bbox2roi([s.pos_bboxes for s in mask_samplings])
            (logits,) = self.mask_logits(feats, pos_rois, semantic_feat, [stage])
            mask_loss = self.stage_mask_head(stage).loss(logits, mask_samplings, gt.masks, self.train_cfg.mask_size)
            losses[prefix + "loss_mask"] = mask_loss * weight
        return regressed

    def _sample(self, stage: int, proposals: Sequence[Tensor], gt: GroundTruth) -> list[SamplingResult]:
        """Each image's proposals ``[K_i, 4]`` assigned at the stage IoU and sampled (GT boxes added)."""
        cfg = self.train_cfg
        iou = cfg.stage_iou_thrs[stage]
        out = []
        for j, props in enumerate(proposals):
            gt_boxes = gt.bboxes[j].to(props)
            assign = max_iou_assign(bbox_overlaps(gt_boxes, props[:, :4]), gt.labels[j], iou, iou, iou,
                                    cfg.match_low_quality, gt_max_assign_all=True)
            out.append(random_sample(assign, props, gt_boxes, gt.labels[j], cfg.num_samples, cfg.pos_fraction,
                                     True, gt.generators[j]))
        return out

    @torch.no_grad()
    def _regress(self, stage: int, rois: Tensor, labels: Tensor, bbox_pred: Tensor,
                 img_metas: Sequence[ImageMeta], counts: list[int]) -> list[Tensor]:
        """RoIs ``[N, 5]`` regressed by stage ``stage`` with the deltas of ``labels`` ``[N]``,
        clipped to each image's ``img_shape``: B tensors ``[K_i, 4]``."""
        head = self.stage_bbox_head(stage)
        out = []
        for r, lab, pred, meta in zip(per_image(rois, counts), per_image(labels, counts), per_image(bbox_pred, counts),
                                      img_metas):
            out.append(head.regress_by_class(r[:, 1:], lab, pred, meta.img_shape) if r.size(0) else r[:, 1:])
        return out

    # ------------------------------------------------------------------ test-time post-processing
    def _detect(self, rois: Tensor, counts: list[int], stage_scores: Sequence[Tensor], bbox_pred: Tensor,
                img_metas: Sequence[ImageMeta], feats: Sequence[Tensor]) -> list[RoIDetections]:
        """Per image: the mean of the stages' raw logits (summed in stage order, as mmdet), then
        softmax, the last stage's boxes and per-class NMS."""
        last = self.stage_bbox_head(self.num_stages - 1)
        scores = [per_image(s, counts) for s in stage_scores]
        out = []
        for i, (r, pred) in enumerate(zip(per_image(rois, counts), per_image(bbox_pred, counts))):
            if counts[i] == 0:
                out.append(self._empty(feats))
                continue
            score = sum([s[i] for s in scores]) / float(len(scores))
            out.append(detect_boxes(last, r[:, 1:], score, pred, img_metas[i], self.test_cfg))
        return out

    def _empty(self, feats: Sequence[Tensor]) -> RoIDetections:
        z = feats[0].new_zeros
        labels = torch.zeros((0,), dtype=torch.long, device=feats[0].device)
        if not self.with_mask:
            return RoIDetections(z((0, 4)), z((0,)), labels)
        size = self.stage_mask_head(self.num_stages - 1).mask_size
        return RoIDetections(z((0, 4)), z((0,)), labels, z((0, size, size)), z((0, 4)))

    def _add_masks(self, feats: Sequence[Tensor], dets: list[RoIDetections], img_metas: Sequence[ImageMeta],
                   semantic_feat: Optional[Tensor] = None) -> None:
        if not self.with_mask:
            return
        # mmdet maps the rescaled detections back to the network frame by * scale_factor.
        boxes = [d.boxes * d.boxes.new_tensor(m.scale_factor) for d, m in zip(dets, img_metas)]
        counts = [b.size(0) for b in boxes]
        if sum(counts) == 0:
            return
        labels = torch.cat([d.labels for d in dets])
        probs = per_image(self.mask_probs(feats, bbox2roi(boxes), labels, semantic_feat), counts)
        for d, p, b, m in zip(dets, probs, boxes, img_metas):
            d.mask_probs = p
            d.mask_boxes = b / b.new_tensor(m.scale_factor)


def per_image(t: Tensor, counts: Sequence[int]) -> Sequence[Tensor]:
    """``t`` (rows of a batch's images, concatenated) split into one tensor per image.

    One image takes all the rows without a split: a traced export would freeze ``counts``
    (the proposal and detection counts of its example image) into the graph, and an image with
    fewer proposals would then fail or be cut.
    """
    if len(counts) == 1:
        return (t,)
    return t.split(list(counts), 0)


@dataclass
class _StagesOut:
    """What :meth:`RoIHead._run_stages` gives: losses (training) or detections (inference)."""

    losses: Optional[dict[str, Tensor]] = None
    detections: Optional[list[RoIDetections]] = None


def _drop_gt_proposals(boxes: list[Tensor], samplings: Sequence[SamplingResult]) -> list[Tensor]:
    """mmdet ``refine_bboxes``: remove the GT boxes the sampler added as proposals."""
    out = []
    for b, s in zip(boxes, samplings):
        keep = torch.ones(b.shape[0], dtype=torch.bool, device=b.device)
        keep[: s.pos_is_gt.shape[0]] = s.pos_is_gt == 0
        out.append(b[keep])
    return out
