"""The fixed batch, small models and sampling rule of the training-parity fixture.

``tests/models/test_training_parity.py`` compares every training loss of the three detector
families with values that real mmdet computed (``tests/fixtures/training_parity.json``, written
by ``bench/training_parity.py``). Both sides must see the same model, the same batch and the
same sampled anchors / RoIs, so all three are defined here, once, as pure functions of seeds:

* :func:`parity_preset`: the family's R-50 preset shrunk to a ResNet-18 with narrow heads
  (the loss code paths are the recipe's; only channel counts change, to keep the test fast);
* :func:`parity_batch`: two synthetic street images of different sizes (so per-image padding
  and the batch padding differ) with boxes, masks, labels and a semantic map, through the real
  train pipeline (:func:`~nuimcli.data.augment.train_transform` at scale 1, no flip) and
  :func:`~nuimcli.data.augment.collate`;
* :func:`parity_model`: seeded weights, BN statistics and head scales calibrated on the batch;
* :func:`even_choice`: the deterministic stand-in for the samplers' random draw, to be used with
  :func:`nuimcli.models.targets.fixed_sampling` (the oracle patches mmdet's
  ``RandomSampler.random_choice`` with the same rule).

Model and images are float64. A training step is full of discrete decisions (proposal top-k
and NMS, IoU thresholds, the argmax behind ``acc``) and random weights put some of them within
1e-6 of flipping: in float32, running on one thread instead of two already moved a loss term by
2e-4, and weights regenerated on another machine differ at the 1e-7 level. Float64 noise
(~1e-15) flips none of them. The loss formulas do not depend on the dtype.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from nuimcli.data.augment import collate, train_transform
from nuimcli.data.structures import Batch
from nuimcli.presets import Preset, load_preset
from nuimcli.testing.random_weights import calibrate_bn, calibrate_heads, randomize, synthetic_image

if TYPE_CHECKING:
    from nuimcli.models.detector import Detector

#: family -> (our preset, the oracle's architecture in nuim_configs.ARCHS)
FAMILIES: dict[str, tuple[str, str]] = {
    "mask_rcnn": ("mask-rcnn-r50-1x", "mask-rcnn_r50_fpn_1x_nuim"),
    "cascade_mask_rcnn": ("cascade-mask-rcnn-r50-1x", "cascade-mask-rcnn_r50_fpn_1x_nuim"),
    "htc": ("htc-r50-1x", "htc_r50_fpn_1x_nuim"),
}

#: Channel sizes of the small models; the oracle config is shrunk to the same numbers.
DEPTH = 18
FPN_CHANNELS = 64
FC_CHANNELS = 128
OVERRIDES = [
    f"model.backbone.depth={DEPTH}",
    f"model.fpn_channels={FPN_CHANNELS}",
    f"model.rpn.feat_channels={FPN_CHANNELS}",
    f"model.roi.fc_out_channels={FC_CHANNELS}",
    # Test-time limits only (training never reads them): a cheaper calibration forward.
    "model.rpn.test_max_per_img=300",
    "model.roi.max_per_img=20",
]

#: (height, width) of the two images: not multiples of 32, and padded to different sizes.
IMAGE_SIZES = ((184, 248), (150, 214))
OBJECTS_PER_IMAGE = 16  # crowded enough that the first R-CNN stage has more positives than it keeps

# nuImages devkit semantic index of each detection class (car, truck, trailer, bus,
# construction_vehicle, bicycle, motorcycle, pedestrian, traffic_cone, barrier); 24 = road.
_SEMANTIC_IDS = (17, 23, 22, 16, 18, 14, 21, 2, 12, 9)
_ROAD = 24


def even_choice(gallery: Tensor, num: int) -> Tensor:
    """``num`` evenly spaced members of ``gallery`` (indices ``floor(i * K / num)``), in order.

    The samplers' random subset replaced by a rule that both nuimcli and the oracle apply, so
    that they sample the same anchors and RoIs. Spread over the whole gallery (every pyramid
    level and image region), unlike "the first ``num``".
    """
    k = gallery.numel()
    idx = torch.div(torch.arange(num, dtype=torch.int64) * k, num, rounding_mode="floor")
    return gallery[idx.to(gallery.device)]


def parity_preset(family: str) -> Preset:
    """The family's preset with the small channel sizes of :data:`OVERRIDES`."""
    return load_preset(FAMILIES[family][0], OVERRIDES)


def _raw_sample(height: int, width: int, seed: int) -> dict:
    """A synthetic image with OBJECTS_PER_IMAGE elliptic objects painted on it.

    Boxes have fractional corners; each mask is the ellipse inscribed in its box (pixel centres
    inside); the semantic map is 0 (ignored) above the horizon, road below, objects on top.
    """
    rng = np.random.default_rng(seed)
    img = synthetic_image(width, height, seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    semantic = np.zeros((height, width), np.uint8)
    semantic[int(height * 0.55):] = _ROAD
    boxes, labels, masks = [], [], []
    for _ in range(OBJECTS_PER_IMAGE):
        w = float(rng.uniform(14, 0.55 * width))
        h = float(rng.uniform(14, 0.6 * height))
        x1 = float(rng.uniform(0, width - w))
        y1 = float(rng.uniform(0, height - h))
        label = int(rng.integers(0, 10))
        cx, cy, ax, ay = x1 + w / 2, y1 + h / 2, w / 2, h / 2
        mask = ((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2 <= 1.0
        img[mask] = rng.integers(0, 256, 3, dtype=np.uint8)
        semantic[mask] = _SEMANTIC_IDS[label]
        boxes.append([x1, y1, x1 + w, y1 + h])
        labels.append(label)
        masks.append(mask.astype(np.uint8))
    return {"img": img, "bboxes": np.asarray(boxes, np.float32), "labels": np.asarray(labels, np.int64),
            "masks": np.stack(masks), "semantic": semantic, "file_name": f"parity_{seed}.jpg", "image_id": seed}


def parity_batch(preset: Preset, seed: int = 0) -> tuple[Batch, np.ndarray]:
    """The fixed training batch of the fixture and, for the oracle, its full-size semantic map.

    Returns ``(batch, semantic)``: ``batch`` is what ``Detector.loss`` takes (``images``
    float64 ``[2, 3, 192, 256]``, ``img_metas``, ``gt_bboxes``, ``gt_labels``, ``gt_masks``, and
    ``gt_semantic_seg`` ``[2, 1, 24, 32]`` when the preset has a semantic head); ``semantic``
    is uint8 ``[2, 1, 192, 256]``, each image's map zero-padded to the batch size, which mmdet
    3.x rescales by 1/8 itself (nearest, the same pixels as the pipeline's 1/8 rescale).
    """
    samples, full = [], []
    for i, (h, w) in enumerate(IMAGE_SIZES):
        raw = _raw_sample(h, w, seed * 100 + i)
        # Scale (w, h) keeps the image as it is: no resampling, so no interpolation noise.
        data_cfg = dataclasses.replace(preset.data, train_scales=[[w, h]], flip_ratio=0.0)
        out = train_transform(raw, data_cfg, np.random.default_rng(seed * 100 + i))
        out.img_meta = out.img_meta.with_seed(seed * 100 + i)
        if not preset.model.semantic.enabled:
            out.gt_semantic_seg = None
        samples.append(out)
        full.append(raw["semantic"])
    batch = collate(samples, preset.data.size_divisor)
    batch.images = batch.images.double()
    hb, wb = batch.images.shape[-2:]
    semantic = np.zeros((len(full), 1, hb, wb), np.uint8)
    for i, s in enumerate(full):
        semantic[i, 0, : s.shape[0], : s.shape[1]] = s
    return batch, semantic


def parity_model(preset: Preset, batch: Batch, seed: int = 0) -> "Detector":
    """The float64 detector of ``preset`` with seeded weights calibrated on ``batch``, in train mode.

    Weights from :func:`~nuimcli.testing.random_weights.randomize`; BN statistics from the
    batch images; head scales so that logits and deltas are spread but not saturated on the
    batch's test-time forward (every box and mask head runs there), which gives loss terms far
    from both 0 and their chance values. The global torch RNG is left as it was.
    """
    from nuimcli.models.build import build_model

    with torch.random.fork_rng(devices=[]):  # build_model's own init draws from the global RNG
        model = build_model(preset)
    randomize(model, seed)
    model.double()
    images, metas = batch.images, batch.img_metas
    calibrate_bn(model.backbone, images)
    model.eval()
    calibrate_heads(model, lambda: model.simple_test(images, metas))
    model.train()
    return model
