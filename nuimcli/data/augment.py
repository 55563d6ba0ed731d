"""Train-time augmentation and batching (mmdet 2.x train pipeline of the nuImages configs).

``Resize(img_scale=[(1280, 720), (1920, 1080)], multiscale_mode='range', keep_ratio=True)`` →
``RandomFlip(0.5)`` → ``Normalize`` → ``Pad(32)`` → (HTC) ``SegRescale(1/8)``, then collate.

* Range sampling: long edge L and short edge S are independent uniform integers in the ranges
  spanned by the scales; the image is rescaled keeping its ratio with
  ``s = min(L / max(h, w), S / min(h, w))`` to ``int(w * s + 0.5)`` (cv2 bilinear) — the same
  :func:`~nuimcli.data.transforms.resize_keep_ratio` that inference uses.
* Boxes are multiplied by the realised per-axis factor and clipped to the resized image; masks
  and the semantic map are resized with nearest neighbour to the same size.
* Flip is horizontal: ``x' = W - x`` on boxes (x1 and x2 swap), masks and semantic mirrored.
* Each image is padded bottom/right to a multiple of 32 (its ``pad_shape``); masks to that
  shape with 0; the semantic map too (0 = ignore) before the 1/8 nearest rescale.

Every random draw comes from the ``numpy.random.Generator`` passed in. The results are the typed
structures of :mod:`nuimcli.data.structures` (:class:`TrainSample`, :class:`Batch`, :class:`ImageMeta`).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from nuimcli.data.structures import Batch, ImageMeta, RawSample, TrainSample
from nuimcli.data.transforms import normalize, pad_batch, padded_size, resize_keep_ratio, to_chw_tensor
from nuimcli.presets import DataConfig


def sample_scale(scales: Sequence[Sequence[int]], mode: str, rng: np.random.Generator) -> tuple[int, int]:
    """mmdet ``Resize.random_sample`` / ``random_select``: a (long, short) bound for this image.

    ``range``: long edge uniform integer in [min longs, max longs], short edge likewise, drawn
    independently (long first). ``value``: one of the scales, uniformly.
    """
    if len(scales) == 1:
        return max(scales[0]), min(scales[0])
    if mode == "value":
        s = scales[int(rng.integers(0, len(scales)))]
        return max(s), min(s)
    longs = [max(s) for s in scales]
    shorts = [min(s) for s in scales]
    long_edge = int(rng.integers(min(longs), max(longs) + 1))
    short_edge = int(rng.integers(min(shorts), max(shorts) + 1))
    return long_edge, short_edge


def _resize_stack(masks: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    if masks.shape[0] == 0:
        return np.zeros((0, size_wh[1], size_wh[0]), dtype=masks.dtype)
    if masks.shape[1:] == (size_wh[1], size_wh[0]):
        return masks
    return np.stack([cv2.resize(m, size_wh, interpolation=cv2.INTER_NEAREST) for m in masks])


def _pad_hw(arr: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
    h, w = arr.shape[-2:]
    if (h, w) == (pad_h, pad_w):
        return arr
    out = np.zeros(arr.shape[:-2] + (pad_h, pad_w), dtype=arr.dtype)
    out[..., :h, :w] = arr
    return out


def train_transform(sample: RawSample, data_cfg: DataConfig, rng: np.random.Generator) -> TrainSample:
    """Augment one raw sample (see :meth:`TrainDataset.load_raw`) into a model-ready sample.

    Returns a :class:`~nuimcli.data.structures.TrainSample`: ``img`` float32 [3, h, w]
    (normalised, unpadded), its :class:`ImageMeta` (no seed yet), ``gt_bboxes`` float32 [N, 4],
    ``gt_labels`` int64 [N], ``gt_masks`` uint8 [N, Hpad, Wpad] (if masks), ``gt_semantic_seg``
    int64 [Hpad*r, Wpad*r] (if semantic) where (h, w) = ``img_shape`` and (Hpad, Wpad) =
    ``pad_shape`` (multiples of ``size_divisor``).
    """
    img = sample["img"]
    ori_h, ori_w = img.shape[:2]
    scale = sample_scale(data_cfg.train_scales, data_cfg.multiscale_mode, rng)
    img, scale_factor = resize_keep_ratio(img, scale)
    h, w = img.shape[:2]
    bboxes = sample["bboxes"].astype(np.float32) * scale_factor[None, :]
    bboxes[:, 0::2] = np.clip(bboxes[:, 0::2], 0, w)
    bboxes[:, 1::2] = np.clip(bboxes[:, 1::2], 0, h)
    masks = _resize_stack(sample["masks"], (w, h)) if "masks" in sample else None
    semantic = None
    if "semantic" in sample:
        semantic = sample["semantic"]
        if semantic.shape[:2] != (h, w):
            semantic = cv2.resize(semantic, (w, h), interpolation=cv2.INTER_NEAREST)

    flip = bool(rng.random() < data_cfg.flip_ratio)
    if flip:
        img = img[:, ::-1]
        x1 = w - bboxes[:, 2]
        x2 = w - bboxes[:, 0]
        bboxes = np.stack([x1, bboxes[:, 1], x2, bboxes[:, 3]], axis=1).astype(np.float32)
        if masks is not None:
            masks = masks[:, :, ::-1]
        if semantic is not None:
            semantic = semantic[:, ::-1]

    img = normalize(np.ascontiguousarray(img), data_cfg.mean, data_cfg.std, data_cfg.to_rgb)
    pad_h, pad_w = padded_size(h, w, data_cfg.size_divisor)
    meta = ImageMeta(
        ori_shape=(ori_h, ori_w),
        img_shape=(h, w),
        pad_shape=(pad_h, pad_w),
        scale_factor=tuple(float(x) for x in scale_factor),
        flip=flip,
        file_name=sample.get("file_name", ""),
        image_id=sample.get("image_id"),
    )
    out = TrainSample(
        img=to_chw_tensor(img),
        img_meta=meta,
        gt_bboxes=torch.from_numpy(np.ascontiguousarray(bboxes, dtype=np.float32)).reshape(-1, 4),
        gt_labels=torch.from_numpy(np.asarray(sample["labels"], dtype=np.int64)),
    )
    if masks is not None:
        out.gt_masks = torch.from_numpy(np.ascontiguousarray(_pad_hw(masks, pad_h, pad_w)))
    if semantic is not None:
        seg = _pad_hw(np.ascontiguousarray(semantic), pad_h, pad_w)
        r = data_cfg.semantic_scale
        size = (int(pad_w * r + 0.5), int(pad_h * r + 0.5))
        seg = cv2.resize(seg, size, interpolation=cv2.INTER_NEAREST)
        out.gt_semantic_seg = torch.from_numpy(seg.astype(np.int64))
    return out


def collate(samples: list[TrainSample], size_divisor: int = 32) -> Batch:
    """Batch augmented samples into the :class:`~nuimcli.data.structures.Batch` ``Detector.loss`` takes.

    ``images`` [B, 3, Hb, Wb] zero-padded to the batch maximum (a multiple of ``size_divisor``),
    ``img_metas``, ``gt_bboxes`` / ``gt_labels`` / ``gt_masks`` lists (``gt_masks`` None unless
    every sample has masks), and, for HTC, ``gt_semantic_seg`` [B, 1, hs, ws] int64
    zero-padded (0 = ignore) to the batch maximum (None unless every sample has one).
    """
    gt_masks = None
    if all(s.gt_masks is not None for s in samples):
        gt_masks = [s.gt_masks for s in samples]
    gt_semantic_seg = None
    if all(s.gt_semantic_seg is not None for s in samples):
        segs = [s.gt_semantic_seg for s in samples]
        hs = max(int(t.shape[0]) for t in segs)
        ws = max(int(t.shape[1]) for t in segs)
        gt_semantic_seg = torch.zeros((len(segs), 1, hs, ws), dtype=torch.int64)
        for i, t in enumerate(segs):
            gt_semantic_seg[i, 0, : t.shape[0], : t.shape[1]] = t
    return Batch(
        images=pad_batch([s.img for s in samples], size_divisor),
        img_metas=[s.img_meta for s in samples],
        gt_bboxes=[s.gt_bboxes for s in samples],
        gt_labels=[s.gt_labels for s in samples],
        gt_masks=gt_masks,
        gt_semantic_seg=gt_semantic_seg,
    )
