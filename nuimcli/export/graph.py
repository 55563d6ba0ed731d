"""The exported graph: one resized uint8 BGR image in, detections in input pixels out.

:class:`ExportGraph` wraps a :class:`~nuimcli.models.detector.Detector` so that what is traced
is exactly what ``predict`` computes after its resize: normalisation and padding to the
size divisor happen inside the graph, the keep-ratio resize stays outside
(:func:`nuimcli.data.transforms.resize_keep_ratio`, the function ``Detector.preprocess`` uses), and the masks
leave the graph as 28x28 probabilities to be pasted with
:func:`nuimcli.models.roi_heads.paste_masks` (the pasted masks would be ``[N, H, W]`` bool
per image: large, and a paste inside the graph would have to be a dense ``grid_sample`` over
the whole image per detection instead of mmdet's per-box window).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nuimcli.data.structures import ImageMeta

#: Output names, in order (``semantic`` only for HTC with a semantic head).
OUTPUT_NAMES = ("boxes", "scores", "labels", "mask_probs")
SEMANTIC_OUTPUT = "semantic_logits"
INPUT_NAME = "image"


class ExportGraph(nn.Module):
    """``image`` uint8 ``[H, W, 3]`` BGR (already resized) → ``boxes`` float32 ``[N, 4]``
    (x1, y1, x2, y2 in input pixels), ``scores`` ``[N]``, ``labels`` int64 ``[N]``,
    ``mask_probs`` float32 ``[N, 28, 28]`` and, for HTC with a semantic head,
    ``semantic_logits`` ``[S, H_pad/8, W_pad/8]``.

    Args:
        detector: an eval-mode :class:`~nuimcli.models.detector.Detector`.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector
        self.size_divisor = int(detector.size_divisor)
        self.to_rgb = bool(detector.to_rgb)
        self.register_buffer("mean", torch.tensor(detector.mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(detector.std, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.with_semantic = bool(detector.has_semantic_head)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        """See the class docstring."""
        # no int(): traced, these are the graph's input size, which a --dynamic export keeps
        # symbolic all the way to the padding, the anchors and the clip windows
        h, w = image.shape[0], image.shape[1]
        x = image.permute(2, 0, 1).to(self.mean.dtype)
        if self.to_rgb:
            x = x.flip(0)
        # same arithmetic order as nuimcli.data.transforms.normalize (subtract, then divide)
        x = (x - self.mean) / self.std
        d = self.size_divisor
        pad_h, pad_w = (d - h % d) % d, (d - w % d) % d
        x = F.pad(x, (0, pad_w, 0, pad_h))[None]
        # normalised in float32, then in the weights' precision (float16 for a --half export)
        x = x.to(next(self.detector.parameters()).dtype)
        # scale factor 1: the graph reports boxes in the pixels of the image it was given
        meta = ImageMeta(ori_shape=(h, w), img_shape=(h, w), pad_shape=(h + pad_h, w + pad_w),
                         scale_factor=(1.0, 1.0, 1.0, 1.0))
        det = self.detector.simple_test(x, [meta])[0]
        mask_probs = det.mask_probs if det.mask_probs is not None else det.boxes.new_zeros((0, 28, 28))
        out = (det.boxes, det.scores, det.labels, mask_probs)
        if self.with_semantic:
            out = out + (det.semantic_logits,)
        return out
