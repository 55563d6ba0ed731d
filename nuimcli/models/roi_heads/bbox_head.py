"""The box head of every RoI stage: :class:`Shared2FCBBoxHead`, with its targets and loss."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nuimcli.models.boxes import DeltaXYWHBBoxCoder
from nuimcli.models.targets import SamplingResult, box_loss


class Shared2FCBBoxHead(nn.Module):
    """mmdet ``Shared2FCBBoxHead``: flatten → FC + ReLU → FC + ReLU → ``fc_cls`` / ``fc_reg``.

    Args:
        in_channels: RoI feature channels (256).
        roi_feat_size: 7.
        fc_out_channels: 1024.
        num_classes: foreground classes (10); ``fc_cls`` has ``num_classes + 1`` outputs with
            the background **last**.
        reg_class_agnostic: ``fc_reg`` outputs 4 (True) or ``4 * num_classes`` (False, class c
            at columns ``4c .. 4c+3``).
        target_means, target_stds: the stage's box coder normalisation.
    """

    def __init__(self, in_channels: int = 256, roi_feat_size: int = 7, fc_out_channels: int = 1024,
                 num_classes: int = 10, reg_class_agnostic: bool = False,
                 target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
                 target_stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2)) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.roi_feat_size = int(roi_feat_size)
        self.num_classes = int(num_classes)
        self.reg_class_agnostic = bool(reg_class_agnostic)
        self.bbox_coder = DeltaXYWHBBoxCoder(target_means, target_stds)
        # mmdet registers fc_cls and fc_reg (BBoxHead) before shared_fcs (ConvFCBBoxHead):
        # the state-dict order is fc_cls, fc_reg, shared_fcs.
        self.fc_cls = nn.Linear(fc_out_channels, self.num_classes + 1)
        self.fc_reg = nn.Linear(fc_out_channels, 4 if self.reg_class_agnostic else 4 * self.num_classes)
        flat = in_channels * self.roi_feat_size * self.roi_feat_size
        self.shared_fcs = nn.ModuleList([nn.Linear(flat, fc_out_channels),
                                         nn.Linear(fc_out_channels, fc_out_channels)])
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.normal_(self.fc_reg.weight, std=0.001)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.zeros_(self.fc_reg.bias)
        for fc in self.shared_fcs:
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def class_dependent_params(self) -> tuple[str, ...]:
        """Submodules whose outputs are per class (what means nothing under another class list):
        ``fc_cls`` and, unless class-agnostic, ``fc_reg``."""
        return ("fc_cls",) if self.reg_class_agnostic else ("fc_cls", "fc_reg")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """RoI features ``[N, C, 7, 7]`` → (logits ``[N, num_classes + 1]``, deltas ``[N, 4]``
        or ``[N, 4 * num_classes]``)."""
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)

    def regress_by_class(self, rois: Tensor, labels: Tensor, bbox_pred: Tensor,
                         img_shape: Sequence[int]) -> Tensor:
        """Apply the deltas of class ``labels`` (ignored when class-agnostic) to ``rois``
        ``[N, 5]`` (or ``[N, 4]``), clipped to ``img_shape`` ``(h, w)``; same shape out."""
        if not self.reg_class_agnostic:
            idx = labels * 4
            bbox_pred = torch.gather(bbox_pred, 1, torch.stack((idx, idx + 1, idx + 2, idx + 3), 1))
        if rois.size(1) == 4:
            return self.bbox_coder.decode(rois, bbox_pred, max_shape=img_shape)
        boxes = self.bbox_coder.decode(rois[:, 1:], bbox_pred, max_shape=img_shape)
        return torch.cat((rois[:, [0]], boxes), dim=1)

    def get_targets(self, samplings: Sequence[SamplingResult]) -> tuple[Tensor, Tensor]:
        """mmdet ``BBoxHead.get_targets`` for the sampled RoIs of a batch (images concatenated,
        positives first in each): (labels ``[N]`` int64 with background = ``num_classes``,
        encoded deltas ``[N, 4]``, zero for negatives)."""
        labels, targets = [], []
        for s in samplings:
            n_pos, n_neg = s.pos_bboxes.shape[0], s.neg_bboxes.shape[0]
            lab = s.pos_bboxes.new_full((n_pos + n_neg,), self.num_classes, dtype=torch.long)
            tgt = s.pos_bboxes.new_zeros((n_pos + n_neg, 4))
            if n_pos:
                lab[:n_pos] = s.pos_gt_labels
                tgt[:n_pos] = self.bbox_coder.encode(s.pos_bboxes, s.pos_gt_bboxes)
            labels.append(lab)
            targets.append(tgt)
        return torch.cat(labels), torch.cat(targets)

    def loss(self, cls_score: Tensor, bbox_pred: Tensor, labels: Tensor, targets: Tensor,
             loss_bbox: str, beta: float) -> dict[str, Tensor]:
        """mmdet ``BBoxHead.loss``: softmax CE over every sampled RoI (mean); the box loss
        (``loss_bbox`` ``"l1"`` / ``"smooth_l1"``) of the label's deltas over the positives,
        divided by the number of RoIs; and the accuracy (percent, not a loss).

        ``cls_score`` ``[N, C + 1]``, ``bbox_pred`` ``[N, 4]`` or ``[N, 4C]``, ``labels`` /
        ``targets`` from :meth:`get_targets`.
        """
        n = cls_score.shape[0]
        cls_score = cls_score.float()
        bbox_pred = bbox_pred.float()
        loss_cls = F.cross_entropy(cls_score, labels, reduction="sum") / max(n, 1)
        pos = (labels >= 0) & (labels < self.num_classes)
        if pos.any():
            if self.reg_class_agnostic:
                pred = bbox_pred.view(n, 4)[pos]
            else:
                pred = bbox_pred.view(n, -1, 4)[pos, labels[pos]]
            loss_box = box_loss(pred, targets[pos], loss_bbox, beta).sum() / n
        else:
            loss_box = bbox_pred[pos].sum()
        with torch.no_grad():
            acc = (cls_score.argmax(1) == labels).float().mean() * 100 if n else cls_score.new_zeros(())
        return {"loss_cls": loss_cls, "loss_bbox": loss_box, "acc": acc}
