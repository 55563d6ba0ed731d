"""Test-time post-processing of the RoI heads: :class:`RoIDetections`, box decoding + NMS, mask pasting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from nuimcli.data.structures import ImageMeta
from nuimcli.models.boxes import multiclass_nms
from nuimcli.models.roi_heads.bbox_head import Shared2FCBBoxHead
from nuimcli.models.settings import RoITestSettings


@dataclass
class RoIDetections:
    """Test-time output of a RoI head for one image (before mask pasting).

    ``boxes`` ``[K, 4]`` in the original image frame (divided by the scale factor),
    ``scores`` ``[K]``, ``labels`` ``[K]`` (0..C-1), ``mask_probs`` ``[K, 28, 28]`` = the
    (stage-averaged) sigmoid of the predicted class's mask logits or None, ``mask_boxes``
    ``[K, 4]`` the boxes to paste them into (``boxes * scale / scale``, as mmdet), and
    ``semantic_logits`` ``[S, H_pad/8, W_pad/8]`` (HTC with a semantic head) or None.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    mask_probs: Optional[Tensor] = None
    mask_boxes: Optional[Tensor] = None
    semantic_logits: Optional[Tensor] = None


def detect_boxes(bbox_head: Shared2FCBBoxHead, rois: Tensor, cls_score: Tensor, bbox_pred: Tensor,
                 meta: ImageMeta, cfg: RoITestSettings) -> RoIDetections:
    """mmdet ``BBoxHead.get_bboxes(rescale=True)`` for one image.

    Softmax scores (background last) of ``cls_score`` ``[K, C + 1]``; ``bbox_pred`` decoded
    from ``rois`` ``[K, 4]`` and clipped to ``img_shape``; divided by the scale factor;
    per-class NMS keeping ``max_per_img``. Returns boxes ``[N, 4]`` (original image frame),
    scores ``[N]`` and labels ``[N]``, without masks.
    """
    scores = F.softmax(cls_score, dim=-1)
    boxes = bbox_head.bbox_coder.decode(rois, bbox_pred, max_shape=meta.img_shape)
    if boxes.size(0) > 0:
        sf = boxes.new_tensor(meta.scale_factor)
        boxes = (boxes.view(boxes.size(0), -1, 4) / sf).view(boxes.size(0), -1)
    dets, labels, _ = multiclass_nms(boxes, scores, cfg.score_thr, cfg.nms_iou, cfg.max_per_img)
    return RoIDetections(dets[:, :4], dets[:, 4], labels)


def paste_masks(mask_probs: Tensor, boxes: Tensor, img_h: int, img_w: int,
                threshold: float = 0.5) -> Tensor:
    """Paste RoI mask probabilities into the image as mmdet 2.x does (``_do_paste_mask``).

    Each ``M x M`` map is sampled with ``grid_sample`` (bilinear, zeros outside,
    ``align_corners=False``) at the pixel centres ``x + 0.5`` mapped so that the box edges
    ``x1, x2`` become -1 and +1; only the box's bounding pixel window (±1 px) is computed, as
    mmdet does on CPU; then ``>= threshold``.

    Args:
        mask_probs: ``[N, M, M]`` float probabilities.
        boxes: ``[N, 4]`` boxes in the output image frame.
        img_h, img_w: output size.
        threshold: ``mask_thr_binary``.

    Returns:
        bool ``[N, img_h, img_w]``.
    """
    n = mask_probs.size(0)
    out = torch.zeros((n, img_h, img_w), dtype=torch.bool, device=mask_probs.device)
    for i in range(n):
        region, (ys, xs) = paste_window(mask_probs[i: i + 1], boxes[i: i + 1], img_h, img_w)
        out[i, ys, xs] = region >= threshold
    return out


def paste_window(mask: Tensor, box: Tensor, img_h: int, img_w: int) -> tuple[Tensor, tuple[slice, slice]]:
    """One mask ``[1, M, M]`` and box ``[1, 4]`` → (pasted probabilities in the box's pixel window,
    the window as ``(rows, cols)`` slices); :func:`paste_masks` thresholds them."""
    x0_int, y0_int = torch.clamp(box.min(dim=0).values.floor()[:2] - 1, min=0).to(dtype=torch.int32).tolist()
    x1_int = int(torch.clamp(box[:, 2].max().ceil() + 1, max=img_w).to(dtype=torch.int32))
    y1_int = int(torch.clamp(box[:, 3].max().ceil() + 1, max=img_h).to(dtype=torch.int32))
    x0, y0, x1, y1 = torch.split(box.float(), 1, dim=1)
    img_y = torch.arange(y0_int, y1_int, device=mask.device).to(torch.float32) + 0.5
    img_x = torch.arange(x0_int, x1_int, device=mask.device).to(torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    # A zero-width box gives inf coordinates; mmdet sets them to 0.
    img_x = torch.where(torch.isinf(img_x), torch.zeros_like(img_x), img_x)
    img_y = torch.where(torch.isinf(img_y), torch.zeros_like(img_y), img_y)
    gx = img_x[:, None, :].expand(1, img_y.size(1), img_x.size(1))
    gy = img_y[:, :, None].expand(1, img_y.size(1), img_x.size(1))
    grid = torch.stack([gx, gy], dim=3)
    if grid.numel() == 0:  # empty window (cannot happen for boxes clipped to the image)
        return mask.new_zeros((0, 0)), (slice(0, 0), slice(0, 0))
    res = F.grid_sample(mask[:, None].to(torch.float32), grid, align_corners=False)
    return res[0, 0], (slice(y0_int, y1_int), slice(x0_int, x1_int))
