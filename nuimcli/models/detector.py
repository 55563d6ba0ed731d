"""The detector: backbone → FPN → RPN → RoI head, with mmdet 2.x test-time pre/post-processing.

:class:`Detector` has the submodules ``backbone``, ``neck``, ``rpn_head``, ``roi_head`` (the
mmdet state-dict prefixes). :meth:`Detector.predict` takes BGR uint8 images or paths and
returns one :class:`Prediction` per image in original pixels.

Batching: images are grouped by their padded network-input size and each group runs in
batches of ``batch_size``. Only same-size images share a forward, because a batch padded to a
larger size changes the features near the padding (and adds anchors there), so mmdet's own
batched results depend on the batch. Grouping keeps every image's result identical to a
one-image call (all nuImages images are 1600x900, so they always batch).
"""

from __future__ import annotations

import contextlib

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nuimcli.data.structures import Batch, ImageMeta
from nuimcli.data.transforms import (ImageLike, load_image, normalize, pad_batch, padded_size,
                                     resize_keep_ratio, to_chw_tensor)
from nuimcli.models.roi_heads import RoIDetections, RoIHead, paste_masks
from nuimcli.models.rpn import RPNHead
from nuimcli.models.targets import seeded_generators

if TYPE_CHECKING:
    from nuimcli.presets import Preset


@dataclass
class Prediction:
    """Detections of one image, in original-image pixels.

    ``boxes`` float32 ``[N, 4]`` (x1, y1, x2, y2), ``scores`` float32 ``[N]`` (descending),
    ``labels`` int64 ``[N]`` (0..9), ``masks`` bool ``[N, H, W]`` (None for a model without a
    mask head), ``semantic`` uint8 ``[H, W]`` (HTC with a semantic head: argmax of the
    semantic logits, bilinearly resampled to the original image) or None.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: Optional[np.ndarray] = None
    semantic: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


class Detector(nn.Module):
    """Two-stage detector (Mask R-CNN, Cascade Mask R-CNN or HTC, decided by ``roi_head``).

    Args:
        backbone: ``images [B, 3, H, W]`` → C2..C5.
        neck: C2..C5 → P2..P6.
        rpn_head: :class:`~nuimcli.models.rpn.RPNHead`.
        roi_head: a :class:`~nuimcli.models.roi_heads.RoIHead` (standard, cascade or HTC).
        num_classes: foreground classes (10).
        preset: the :class:`~nuimcli.presets.Preset` the model was built from (kept as an
            attribute for checkpoints; not read here).
        test_scale: ``(long, short)`` test resize bound, e.g. ``(1600, 900)``.
        mean, std, to_rgb: normalisation (pytorch- or caffe-style).
        size_divisor: padding multiple (32).
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, rpn_head: RPNHead, roi_head: RoIHead,
                 num_classes: int = 10, preset: Optional["Preset"] = None, test_scale: Sequence[int] = (1600, 900),
                 mean: Sequence[float] = (123.675, 116.28, 103.53),
                 std: Sequence[float] = (58.395, 57.12, 57.375), to_rgb: bool = True,
                 size_divisor: int = 32) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.rpn_head = rpn_head
        self.roi_head = roi_head
        self.num_classes = int(num_classes)
        self.preset = preset
        self.test_scale = tuple(test_scale)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.to_rgb = bool(to_rgb)
        self.size_divisor = int(size_divisor)
        #: reduced precision for inference (``prepare_for_inference(half=True)``); None: float32.
        self.autocast_dtype: Optional[torch.dtype] = None

    def train(self, mode: bool = True) -> "Detector":
        """Switch mode; a model folded for inference (``inference_only``) refuses training mode."""
        if mode and getattr(self, "inference_only", False):
            from nuimcli.models.inference_mode import refuse_inference_only

            refuse_inference_only(self, "train")
        return super().train(mode)

    @property
    def classes(self) -> tuple[str, ...]:
        """Label ``i``'s name: the preset's ``data.classes`` (a checkpoint's meta restores them);
        without a preset, the 10 nuImages names for a 10-class model, else ``"0"``, ``"1"``, ..."""
        if self.preset is not None:
            return tuple(self.preset.data.classes)
        from nuimcli import CLASSES

        return tuple(CLASSES) if self.num_classes == len(CLASSES) else tuple(str(i) for i in range(self.num_classes))

    # ------------------------------------------------------------------ network pieces
    @property
    def has_semantic_head(self) -> bool:
        """True when predictions carry a semantic map (HTC with its semantic head)."""
        return self.roi_head.with_semantic

    def extract_feat(self, images: Tensor) -> list[Tensor]:
        """Normalised, padded ``[B, 3, H, W]`` → FPN maps P2..P6 (``[B, C, H/s, W/s]``)."""
        return list(self.neck(self.backbone(images)))

    def simple_test(self, images: Tensor, img_metas: Sequence[ImageMeta]) -> list[RoIDetections]:
        """Test-time forward of one batch (no pasting): RPN proposals, then the RoI head.

        Args:
            images: ``[B, 3, H_pad, W_pad]``.
            img_metas: B metas (``img_shape`` and ``scale_factor`` are read).

        Returns:
            :class:`~nuimcli.models.roi_heads.RoIDetections` per image (original frame).
        """
        dtype = getattr(self, "autocast_dtype", None)
        amp = torch.autocast(images.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.no_grad(), amp:
            feats = self.extract_feat(images)
            cls_scores, bbox_preds = self.rpn_head(feats)
            proposals = self.rpn_head.get_proposals(cls_scores, bbox_preds, [m.img_shape for m in img_metas])
            return self.roi_head.simple_test(feats, proposals, img_metas)

    def forward(self, inputs: Union[Batch, Tensor],
                img_metas: Optional[Sequence[ImageMeta]] = None) -> Union[dict[str, Tensor], list[RoIDetections]]:
        """Training mode: ``model(batch)`` → :meth:`loss`; eval mode: ``model(images, img_metas)``
        → :meth:`simple_test`."""
        if self.training:
            if not isinstance(inputs, Batch):
                raise TypeError(f"a Detector in training mode takes a Batch, not {type(inputs).__name__}")
            return self.loss(inputs)
        if img_metas is None:
            raise ValueError("a Detector in eval mode takes (images, img_metas)")
        return self.simple_test(inputs, img_metas)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """Training losses of a collated batch (mmdet 2.x ``forward_train``).

        Backbone + FPN, then :meth:`RPNHead.loss <nuimcli.models.rpn.RPNHead.loss>` (its losses
        and train-time proposals), then :meth:`RoIHead.loss <nuimcli.models.roi_heads.RoIHead.loss>`.
        Every sampler draws from its image's generator, seeded with ``img_meta.seed``.

        Returns:
            mmdet's loss names (``loss_rpn_cls``, ``loss_rpn_bbox``, ``loss_semantic_seg``,
            ``loss_cls``, ``loss_bbox``, ``loss_mask`` or ``s{i}.loss_…``) plus the accuracies
            (``acc`` / ``s{i}.acc``, not losses), each a scalar.
        """
        generators = seeded_generators(batch.img_metas)
        feats = self.extract_feat(batch.images)
        losses, proposals = self.rpn_head.loss(feats, batch, generators)
        losses.update(self.roi_head.loss(feats, proposals, batch, generators))
        return losses

    # ------------------------------------------------------------------ pre/post-processing
    def preprocess(self, image: np.ndarray) -> tuple[Tensor, ImageMeta]:
        """BGR uint8 ``[H, W, 3]`` → (normalised ``[3, h, w]`` tensor, its :class:`ImageMeta`) as
        mmdet's test pipeline: keep-ratio resize to ``test_scale`` (cv2 bilinear), normalise;
        ``scale_factor`` holds the float32 factors ``(w_s, h_s, w_s, h_s)``."""
        resized, scale_factor = resize_keep_ratio(image, self.test_scale)
        tensor = to_chw_tensor(normalize(resized, self.mean, self.std, self.to_rgb))
        h, w = resized.shape[:2]
        meta = ImageMeta(ori_shape=(int(image.shape[0]), int(image.shape[1])), img_shape=(h, w),
                         pad_shape=padded_size(h, w, self.size_divisor),
                         scale_factor=tuple(float(x) for x in scale_factor))
        return tensor, meta

    def postprocess(self, det: RoIDetections, meta: ImageMeta) -> Prediction:
        """RoI-head output of one image → :class:`Prediction` (masks pasted at ``ori_shape``)."""
        h, w = meta.ori_shape
        masks = None
        if self.roi_head.with_mask:
            if det.mask_probs is not None and det.mask_probs.size(0) > 0:
                masks = paste_masks(det.mask_probs, det.mask_boxes, h, w,
                                    self.roi_head.test_cfg.mask_thr_binary).cpu().numpy()
            else:
                masks = np.zeros((0, h, w), dtype=bool)
        semantic = None
        if det.semantic_logits is not None:
            semantic = semantic_map(det.semantic_logits, meta)
        # .float() first: numpy has no bfloat16 (a --half model on CPU)
        return Prediction(boxes=det.boxes.detach().float().cpu().numpy(),
                          scores=det.scores.detach().float().cpu().numpy(),
                          labels=det.labels.detach().cpu().numpy().astype(np.int64),
                          masks=masks, semantic=semantic)

    def predict_video(self, path: str, batch_size: int = 2, every: int = 1,
                      max_frames: Optional[int] = None) -> "Iterator[tuple[int, float, Prediction]]":
        """Detect objects in every frame of a video file (every ``every``-th, at most
        ``max_frames``), yielding ``(frame index, seconds, Prediction)`` as frames are done —
        decoding runs in a thread ahead of the model, memory stays a few frames. Writing an
        annotated video is :func:`nuimcli.engine.sequences.predict_video_file` (``nuim predict
        clip.mp4``)."""
        from nuimcli.engine.video import predict_video

        return predict_video(self, path, batch_size=batch_size, every=every, max_frames=max_frames)

    def predict(self, images: Union[ImageLike, Sequence[ImageLike]], batch_size: int = 2) -> list[Prediction]:
        """Detect objects in images.

        Args:
            images: a BGR uint8 ``[H, W, 3]`` array or an image path, or a list of them.
            batch_size: images per forward (only images of the same padded size share one).

        Returns:
            one :class:`Prediction` per image, in input order.
        """
        if isinstance(images, (np.ndarray, str)) or hasattr(images, "__fspath__"):
            images = [images]
        images = list(images)
        batch_size = max(1, int(batch_size))
        was_training = self.training
        self.eval()  # (restored below; an inference-only model was never training)
        device = next(self.parameters()).device
        try:
            inputs = [self.preprocess(load_image(im)) for im in images]
            groups: dict[tuple[int, int], list[int]] = {}
            for i, (_, meta) in enumerate(inputs):
                groups.setdefault(meta.pad_shape, []).append(i)
            results: list[Optional[Prediction]] = [None] * len(inputs)
            for idxs in groups.values():
                for start in range(0, len(idxs), batch_size):
                    chunk = idxs[start: start + batch_size]
                    batch = pad_batch([inputs[i][0] for i in chunk], self.size_divisor).to(device)
                    metas = [inputs[i][1] for i in chunk]
                    dets = self.simple_test(batch, metas)
                    for i, det, meta in zip(chunk, dets, metas):
                        results[i] = self.postprocess(det, meta)
            return results  # type: ignore[return-value]
        finally:
            self.train(was_training)


def semantic_map(logits: Tensor, meta: ImageMeta, band: int = 128) -> np.ndarray:
    """Semantic logits ``[S, H_f, W_f]`` (stride 8 over the padded input) → uint8 label map at
    ``ori_shape``: each original pixel centre is mapped into the resized image and the logits
    are bilinearly sampled there (``align_corners=False``), then argmax. Done in row bands to
    bound memory."""
    h, w = meta.ori_shape
    sf = meta.scale_factor
    s, hf, wf = logits.shape
    stride_w = float(meta.pad_shape[1]) / wf
    stride_h = float(meta.pad_shape[0]) / hf
    xs = (torch.arange(w, dtype=torch.float32, device=logits.device) + 0.5) * float(sf[0])
    gx = xs / (wf * stride_w) * 2 - 1
    out = np.empty((h, w), dtype=np.uint8)
    inp = logits[None].float()
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        ys = (torch.arange(y0, y1, dtype=torch.float32, device=logits.device) + 0.5) * float(sf[1])
        gy = ys / (hf * stride_h) * 2 - 1
        grid = torch.stack([gx[None, :].expand(y1 - y0, w), gy[:, None].expand(y1 - y0, w)], dim=-1)
        sampled = F.grid_sample(inp, grid[None], mode="bilinear", align_corners=False)
        # max(0).indices: argmax's result (the first maximum too), ~5x faster than argmax over the
        # outer dimension here (0.27 s -> 0.05 s per 1600x900 image)
        out[y0:y1] = sampled[0].max(dim=0).indices.to(torch.uint8).cpu().numpy()
    return out
