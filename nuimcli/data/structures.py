"""The typed currency between data and models: :class:`ImageMeta`, :class:`TrainSample`, :class:`Batch`.

* :class:`RawSample` — one image and its annotations as read from disk
  (:meth:`nuimcli.data.dataset.TrainDataset.load_raw`), before augmentation;
* :class:`ImageMeta` — where one image sits in the network input (made by the train pipeline,
  :func:`nuimcli.data.augment.train_transform`, and by the test-time
  :meth:`nuimcli.models.detector.Detector.preprocess`; read by the RPN, the RoI heads and the
  post-processing);
* :class:`TrainSample` — one augmented training image and its targets (``TrainDataset[i]``);
* :class:`Batch` — collated samples (:func:`nuimcli.data.augment.collate`), what
  ``Detector.loss`` takes.

Shapes are ``(h, w)`` everywhere, as in mmdet's ``img_meta``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, TypedDict, Union

import numpy as np
import torch
from torch import Tensor


class RawSample(TypedDict, total=False):
    """One un-augmented training image (a dict, as the benchmarks and painters build it too).

    ``img`` BGR uint8 ``[H, W, 3]``, ``bboxes`` float32 ``[N, 4]`` (x1, y1, x2, y2, original
    pixels), ``labels`` int64 ``[N]``, ``masks`` uint8 ``[N, H, W]`` (optional), ``semantic``
    uint8 ``[H, W]`` devkit category indices (optional, HTC), ``file_name``, ``image_id``.
    """

    img: np.ndarray
    bboxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    semantic: np.ndarray
    file_name: str
    image_id: Union[int, str, None]


@dataclass(frozen=True)
class ImageMeta:
    """One image's geometry in the network input (mmdet's ``img_meta``).

    Args:
        ori_shape: ``(h, w)`` of the original image.
        img_shape: ``(h, w)`` after the keep-ratio resize, before padding: the clip window of
            proposals and boxes.
        pad_shape: ``(h, w)`` of this image padded to the size divisor (not the batch's
            padded size): the area where anchors are valid.
        scale_factor: ``(w_s, h_s, w_s, h_s)``, resized / original per axis (float32 values);
            boxes in the original frame = network boxes / scale_factor.
        flip: whether the image was flipped horizontally (training only).
        file_name, image_id: where the image came from (training only; for logs and checks).
        seed: the seed of this sample's random draws; the R-CNN and RPN samplers draw from a
            generator seeded with it, so a training step replays exactly. None at test time.
    """

    ori_shape: tuple[int, int]
    img_shape: tuple[int, int]
    pad_shape: tuple[int, int]
    scale_factor: tuple[float, float, float, float]
    flip: bool = False
    file_name: str = ""
    image_id: Optional[Union[int, str]] = None
    seed: Optional[int] = None

    def with_seed(self, seed: int) -> "ImageMeta":
        """The same meta with ``seed`` set (the dataset sets it after the augmentation)."""
        return dataclasses.replace(self, seed=int(seed))


@dataclass
class TrainSample:
    """One augmented training image (:func:`~nuimcli.data.augment.train_transform`).

    ``img`` float32 ``[3, h, w]`` (normalised, unpadded; ``(h, w) = img_meta.img_shape``),
    ``gt_bboxes`` float32 ``[G, 4]`` (x1, y1, x2, y2 in the resized frame), ``gt_labels`` int64
    ``[G]``, ``gt_masks`` uint8 ``[G, H_pad, W_pad]`` (``img_meta.pad_shape``) or None,
    ``gt_semantic_seg`` int64 ``[H_pad * r, W_pad * r]`` (HTC, ``r = semantic_scale``) or None.
    """

    img: Tensor
    img_meta: ImageMeta
    gt_bboxes: Tensor
    gt_labels: Tensor
    gt_masks: Optional[Tensor] = None
    gt_semantic_seg: Optional[Tensor] = None


@dataclass
class Batch:
    """Collated training samples (:func:`~nuimcli.data.augment.collate`); ``Detector.loss`` input.

    ``images`` ``[B, 3, H, W]`` zero-padded to the batch maximum (a multiple of the size
    divisor); ``img_metas``, ``gt_bboxes`` (B x ``[G_i, 4]``), ``gt_labels`` (B x ``[G_i]``) and
    ``gt_masks`` (B x ``[G_i, H_pad_i, W_pad_i]``, or None without masks) one per image;
    ``gt_semantic_seg`` int64 ``[B, 1, hs, ws]`` zero-padded (0 = ignore), HTC only, else None.
    """

    images: Tensor
    img_metas: list[ImageMeta]
    gt_bboxes: list[Tensor]
    gt_labels: list[Tensor]
    gt_masks: Optional[list[Tensor]] = None
    gt_semantic_seg: Optional[Tensor] = None

    def __len__(self) -> int:
        return len(self.img_metas)

    def _map(self, fn) -> "Batch":
        return Batch(
            images=fn(self.images),
            img_metas=list(self.img_metas),
            gt_bboxes=[fn(t) for t in self.gt_bboxes],
            gt_labels=[fn(t) for t in self.gt_labels],
            gt_masks=None if self.gt_masks is None else [fn(t) for t in self.gt_masks],
            gt_semantic_seg=None if self.gt_semantic_seg is None else fn(self.gt_semantic_seg),
        )

    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> "Batch":
        """Every tensor on ``device`` (a new Batch; the metas are shared)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """Every tensor in pinned memory (called by the DataLoader with ``pin_memory=True``)."""
        return self._map(lambda t: t.pin_memory())
