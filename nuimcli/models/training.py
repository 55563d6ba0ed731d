"""Training losses of the three detectors (mmdet 2.x ``forward_train``), as one function.

:func:`compute_losses` is what ``Detector.loss(batch)`` returns. It drives the heads' separately
callable pieces (``rpn_head.forward`` / ``get_proposals``, ``roi_head.bbox_forward`` /
``mask_forward`` / ``semantic_forward``) and builds the targets of :mod:`targets`:

* RPN: anchors valid on each image's own padded area (and, with ``allowed_border >= 0``, not
  crossing its border); max-IoU assignment 0.7 / 0.3 (min_pos 0.3, low-quality matches, all
  ties); 256 random samples at 0.5 positive; sigmoid CE + L1 or SmoothL1(beta) on the deltas;
  both summed and divided by the number of sampled anchors (each image counting at least one
  positive and one negative, as mmdet).
* Proposals: the RPN's own proposal step with the train ``nms_pre`` / ``max_per_img``.
* R-CNN per stage: max-IoU assignment at the stage IoU, GT boxes added as proposals, 512
  samples at 0.25 positive; softmax CE (background = last class) averaged over the samples,
  box loss summed over positives and divided by the number of samples; masks: targets cropped
  from the GT bitmaps with RoIAlign to 28x28 and binarised, per-class BCE over the positives.
  Cascade / HTC: each stage's losses times its weight, named ``s{i}.…``; between stages the
  sampled RoIs regressed by that stage (GT proposals removed) are the next proposals. HTC is
  interleaved (masks trained on the same stage's refined, re-sampled boxes) and adds the
  semantic loss (CE ignoring ``ignore_label``, times ``loss_weight``).

Random sampling draws from a ``torch.Generator`` seeded by each image's ``img_meta['seed']``
(set by the dataset), so the same image and parameters give the same losses anywhere.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nuimcli.models.boxes import bbox2roi, bbox_overlaps
from nuimcli.models.targets import (
    SamplingResult,
    anchor_inside_flags,
    mask_targets,
    max_iou_assign,
    random_sample,
    smooth_l1,
)


def _generators(img_metas: Sequence[dict]) -> list[Optional[torch.Generator]]:
    out = []
    for m in img_metas:
        if m.get("seed") is None:
            out.append(None)
        else:
            g = torch.Generator()
            g.manual_seed(int(m["seed"]))
            out.append(g)
    return out


def _box_loss(pred: Tensor, target: Tensor, kind: str, beta: float) -> Tensor:
    """Element-wise box regression loss: ``l1`` or ``smooth_l1`` (beta)."""
    if kind == "smooth_l1":
        return smooth_l1(pred, target, beta)
    return (pred - target).abs()


def extract_feats(model: nn.Module, images: Tensor) -> list[Tensor]:
    """Backbone + FPN: ``[B, 3, H, W]`` → 5 maps ``[B, C, H/s, W/s]`` (s = 4 … 64)."""
    if hasattr(model, "extract_feat"):
        return list(model.extract_feat(images))
    return list(model.neck(model.backbone(images)))


# --------------------------------------------------------------------------- RPN


def rpn_losses(rpn_head: nn.Module, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor],
               gt_bboxes: Sequence[Tensor], img_metas: Sequence[dict], cfg: Any,
               generators: Sequence[Optional[torch.Generator]]) -> dict[str, Tensor]:
    """``loss_rpn_cls`` and ``loss_rpn_bbox`` for a batch.

    cls_scores / bbox_preds: per level ``[B, A, H, W]`` / ``[B, 4A, H, W]``; gt_bboxes: B x
    ``[G_i, 4]``; cfg: the preset's ``model.rpn`` block.
    """
    device = cls_scores[0].device
    sizes = [tuple(c.shape[-2:]) for c in cls_scores]
    anchors = torch.cat(rpn_head.anchors(cls_scores))  # [T, 4], order (level, y, x, anchor)
    num_imgs = len(img_metas)
    logits = torch.cat([c.permute(0, 2, 3, 1).reshape(num_imgs, -1) for c in cls_scores], dim=1)  # [B, T]
    deltas = torch.cat([r.permute(0, 2, 3, 1).reshape(num_imgs, -1, 4) for r in bbox_preds], dim=1)  # [B, T, 4]
    total = anchors.shape[0]
    labels = torch.zeros((num_imgs, total), device=device)  # 1 = object (sigmoid target)
    label_w = torch.zeros((num_imgs, total), device=device)
    box_t = torch.zeros((num_imgs, total, 4), device=device)
    box_w = torch.zeros((num_imgs, total), device=device)
    num_samples = 0
    coder = rpn_head.bbox_coder
    for i, meta in enumerate(img_metas):
        valid = torch.cat(rpn_head.anchor_generator.valid_flags(sizes, meta["pad_shape"], device=device))
        inside = anchor_inside_flags(anchors, valid, tuple(meta["img_shape"][:2]), cfg.allowed_border)
        inside_idx = torch.nonzero(inside, as_tuple=False).squeeze(1)
        cand = anchors[inside_idx]
        gt = gt_bboxes[i].to(device=device, dtype=anchors.dtype)
        assign = max_iou_assign(bbox_overlaps(gt, cand), None, cfg.pos_iou_thr, cfg.neg_iou_thr,
                                cfg.min_pos_iou, cfg.match_low_quality, gt_max_assign_all=True)
        s = random_sample(assign, cand, gt, None, cfg.num_samples, cfg.pos_fraction, False, generators[i])
        pos = inside_idx[s.pos_inds]
        neg = inside_idx[s.neg_inds]
        labels[i, pos] = 1.0
        label_w[i, pos] = 1.0
        label_w[i, neg] = 1.0
        if pos.numel():
            box_t[i, pos] = coder.encode(s.pos_bboxes, s.pos_gt_bboxes)
            box_w[i, pos] = 1.0
        num_samples += max(pos.numel(), 1) + max(neg.numel(), 1)
    cls = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")
    loss_cls = (cls * label_w).sum() / num_samples
    reg = _box_loss(deltas.float(), box_t, cfg.loss_bbox, cfg.smooth_l1_beta)
    loss_bbox = (reg * box_w[..., None]).sum() / num_samples
    return {"loss_rpn_cls": loss_cls, "loss_rpn_bbox": loss_bbox}


# --------------------------------------------------------------------------- R-CNN


def _assign_and_sample(proposals: Sequence[Tensor], gt_bboxes: Sequence[Tensor], gt_labels: Sequence[Tensor],
                       iou: float, roi_cfg: Any, generators: Sequence[Optional[torch.Generator]]) -> list[SamplingResult]:
    out = []
    for j, props in enumerate(proposals):
        gt = gt_bboxes[j].to(props)
        assign = max_iou_assign(bbox_overlaps(gt, props[:, :4]), gt_labels[j], iou, iou, iou,
                                roi_cfg.match_low_quality, gt_max_assign_all=True)
        out.append(random_sample(assign, props, gt, gt_labels[j], roi_cfg.num_samples, roi_cfg.pos_fraction,
                                 True, generators[j]))
    return out


def _bbox_targets(samplings: Sequence[SamplingResult], coder: Any, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Concatenated (labels [N] with background = num_classes, deltas [N, 4], box weights [N])."""
    labels, targets, weights = [], [], []
    for s in samplings:
        n_pos, n_neg = s.pos_bboxes.shape[0], s.neg_bboxes.shape[0]
        lab = s.pos_bboxes.new_full((n_pos + n_neg,), num_classes, dtype=torch.long)
        tgt = s.pos_bboxes.new_zeros((n_pos + n_neg, 4))
        w = s.pos_bboxes.new_zeros((n_pos + n_neg,))
        if n_pos:
            lab[:n_pos] = s.pos_gt_labels
            tgt[:n_pos] = coder.encode(s.pos_bboxes, s.pos_gt_bboxes)
            w[:n_pos] = 1.0
        labels.append(lab)
        targets.append(tgt)
        weights.append(w)
    return torch.cat(labels), torch.cat(targets), torch.cat(weights)


def bbox_head_losses(cls_score: Tensor, bbox_pred: Tensor, labels: Tensor, targets: Tensor,
                     num_classes: int, class_agnostic: bool, kind: str, beta: float) -> dict[str, Tensor]:
    """mmdet ``BBoxHead.loss``: CE over every sampled RoI (mean), box loss over positives / #RoIs, acc."""
    n = cls_score.shape[0]
    cls_score = cls_score.float()
    bbox_pred = bbox_pred.float()
    loss_cls = F.cross_entropy(cls_score, labels, reduction="sum") / max(n, 1)
    pos = (labels >= 0) & (labels < num_classes)
    if pos.any():
        if class_agnostic:
            pred = bbox_pred.view(n, 4)[pos]
        else:
            pred = bbox_pred.view(n, -1, 4)[pos, labels[pos]]
        loss_bbox = _box_loss(pred, targets[pos], kind, beta).sum() / n
    else:
        loss_bbox = bbox_pred[pos].sum()
    with torch.no_grad():
        acc = (cls_score.argmax(1) == labels).float().mean() * 100 if n else cls_score.new_zeros(())
    return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "acc": acc}


def mask_head_loss(mask_logits: Tensor, samplings: Sequence[SamplingResult], gt_masks: Sequence[Tensor],
                   mask_size: int) -> Tensor:
    """mmdet ``FCNMaskHead.loss``: BCE of the GT class's logits vs the 28x28 targets, mean over pixels."""
    if mask_logits.shape[0] == 0:
        return mask_logits.sum()
    targets = torch.cat([mask_targets(s.pos_bboxes, s.pos_assigned_gt_inds, gt_masks[j], mask_size)
                         for j, s in enumerate(samplings)])
    labels = torch.cat([s.pos_gt_labels for s in samplings])
    idx = torch.arange(mask_logits.shape[0], device=mask_logits.device)
    pred = mask_logits[idx, labels].float()
    return F.binary_cross_entropy_with_logits(pred, targets.to(pred), reduction="mean")


@torch.no_grad()
def refine_proposals(bbox_head: nn.Module, samplings: Sequence[SamplingResult], rois: Tensor, labels: Tensor,
                     cls_score: Tensor, bbox_pred: Tensor, img_metas: Sequence[dict]) -> list[Tensor]:
    """mmdet ``BBoxHead.refine_bboxes``: each image's sampled RoIs regressed by this stage,
    without the GT boxes that were added as proposals. Returns B tensors ``[K_i, 4]``."""
    num_classes = bbox_head.num_classes
    labels = torch.where(labels == num_classes, cls_score[:, :-1].argmax(1), labels)
    counts = [s.pos_bboxes.shape[0] + s.neg_bboxes.shape[0] for s in samplings]
    out = []
    for j, (r, lab, pred) in enumerate(zip(rois.split(counts), labels.split(counts), bbox_pred.split(counts))):
        boxes = bbox_head.regress_by_class(r[:, 1:], lab, pred.float(), tuple(img_metas[j]["img_shape"][:2]))
        keep = torch.ones(boxes.shape[0], dtype=torch.bool, device=boxes.device)
        n_pos = samplings[j].pos_is_gt.shape[0]
        keep[:n_pos] = samplings[j].pos_is_gt == 0
        out.append(boxes[keep])
    return out


def roi_losses(roi_head: nn.Module, feats: Sequence[Tensor], proposals: Sequence[Tensor], batch: dict,
               generators: Sequence[Optional[torch.Generator]]) -> dict[str, Tensor]:
    """R-CNN (+ masks, + semantic) losses for every stage of the RoI head."""
    roi_cfg = roi_head.train_cfg  # the preset's model.roi block, handed over by build_model
    metas = batch["img_metas"]
    device = feats[0].device
    gt_bboxes = [b.to(device=device, dtype=torch.float32) for b in batch["gt_bboxes"]]
    gt_labels = [lab.to(device) for lab in batch["gt_labels"]]
    gt_masks = [m.to(device) for m in batch["gt_masks"]] if "gt_masks" in batch else None
    losses: dict[str, Tensor] = {}

    seg_logits, semantic_feat = roi_head.semantic_forward(feats)
    if seg_logits is not None:
        if "gt_semantic_seg" not in batch:
            raise ValueError("HTC with a semantic head needs gt_semantic_seg in the batch")
        target = batch["gt_semantic_seg"].to(device).squeeze(1).long()
        sem = roi_head.semantic_head
        valid = target != sem.ignore_label
        if bool(valid.any()):
            loss = F.cross_entropy(seg_logits.float(), target, ignore_index=sem.ignore_label)
        else:  # all pixels ignored: mmdet would give NaN; a zero keeps the step usable
            loss = seg_logits.sum() * 0.0
        losses["loss_semantic_seg"] = loss * sem.loss_weight

    num_stages = int(getattr(roi_head, "num_stages", 1))
    weights = list(roi_cfg.stage_loss_weights)
    with_mask = getattr(roi_head, "mask_head", None) is not None and gt_masks is not None
    interleaved = bool(getattr(roi_head, "interleaved", False))
    heads = roi_head.bbox_head if isinstance(roi_head.bbox_head, nn.ModuleList) else [roi_head.bbox_head]
    proposal_list = [p[:, :4].detach().to(torch.float32) for p in proposals]

    for stage in range(num_stages):
        head = heads[stage]
        prefix = f"s{stage}." if num_stages > 1 else ""
        lw = weights[stage] if num_stages > 1 else 1.0
        iou = roi_cfg.stage_iou_thrs[stage]
        samplings = _assign_and_sample(proposal_list, gt_bboxes, gt_labels, iou, roi_cfg, generators)
        rois = bbox2roi([s.bboxes for s in samplings])
        cls_score, bbox_pred = roi_head.bbox_forward(stage, feats, rois, semantic_feat)
        labels, targets, _ = _bbox_targets(samplings, head.bbox_coder, head.num_classes)
        for name, value in bbox_head_losses(cls_score, bbox_pred, labels, targets, head.num_classes,
                                            head.reg_class_agnostic, roi_cfg.loss_bbox,
                                            roi_cfg.smooth_l1_beta).items():
            losses[prefix + name] = value * lw if "loss" in name else value

        refined = None
        if num_stages > 1 and (stage < num_stages - 1 or interleaved):
            refined = refine_proposals(head, samplings, rois, labels, cls_score.detach(), bbox_pred.detach(), metas)
        if with_mask:
            mask_samplings = samplings
            if interleaved:
                # HTC: the mask branch learns on this stage's regressed boxes, re-assigned and re-sampled.
                mask_samplings = _assign_and_sample(refined, gt_bboxes, gt_labels, iou, roi_cfg, generators)
            pos_rois = bbox2roi([s.pos_bboxes for s in mask_samplings])
            mask_logits = roi_head.mask_forward(stage, feats, pos_rois, semantic_feat)
            losses[prefix + "loss_mask"] = mask_head_loss(mask_logits, mask_samplings, gt_masks, roi_cfg.mask_size) * lw
        if refined is not None and stage < num_stages - 1:
            proposal_list = refined
    return losses


# --------------------------------------------------------------------------- entry point


def compute_losses(model: nn.Module, batch: dict) -> dict[str, Tensor]:
    """All training losses of ``model`` (a :class:`~nuimcli.models.detector.Detector`) on a batch.

    ``batch`` is the collate output of :mod:`nuimcli.data.augment` (images [B, 3, H, W],
    img_metas, gt_bboxes, gt_labels, gt_masks, and gt_semantic_seg for HTC). Returns mmdet's loss
    names (``loss_rpn_cls``, ``loss_rpn_bbox``, ``loss_cls``, ``loss_bbox``, ``loss_mask`` or
    ``s{i}.loss_…``, ``loss_semantic_seg``) plus the accuracies (``acc`` / ``s{i}.acc``, not losses).
    """
    images = batch["images"]
    metas = batch["img_metas"]
    generators = _generators(metas)
    feats = extract_feats(model, images)
    cls_scores, bbox_preds = model.rpn_head(feats)
    gt_bboxes = [b.to(images.device) for b in batch["gt_bboxes"]]
    rpn_head = model.rpn_head
    losses = rpn_losses(rpn_head, cls_scores, bbox_preds, gt_bboxes, metas, rpn_head.train_cfg, generators)
    proposals = rpn_head.get_proposals(cls_scores, bbox_preds, [tuple(m["img_shape"][:2]) for m in metas],
                                       nms_pre=rpn_head.train_nms_pre, max_per_img=rpn_head.train_max_per_img)
    losses.update(roi_losses(model.roi_head, feats, proposals, batch, generators))
    return losses
