"""Seeded random weights with sane BatchNorm statistics, for parity tests and benchmarks.

A randomly initialised ResNet gives degenerate activations unless its BN running statistics
fit the data, so after drawing weights every BN's running mean/var is set, in forward order,
to the batch statistics of its input on a real-looking image. Then the network behaves like
a trained one numerically (normalised activations, spread-out scores), which is what latency
and parity measurements need. Used by the parity tests and ``bench/``; no command uses it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch import nn

from nuimcli.models.backbones import DeformConv2d


def synthetic_image(width: int = 1600, height: int = 900, seed: int = 0) -> np.ndarray:
    """A BGR uint8 street-like picture: sky/road gradient, textured boxes and ellipses."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 200 - 120 * y  # B
    img[..., 1] = 180 - 100 * y
    img[..., 2] = 150 - 60 * y
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(40):
        x1, y1 = int(rng.integers(0, width - 40)), int(rng.integers(height // 4, height - 30))
        w, h = int(rng.integers(20, width // 5)), int(rng.integers(15, height // 4))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x1, y1), (min(x1 + w, width - 1), min(y1 + h, height - 1)), color, -1)
            # windows / stripes give texture at several scales
            for k in range(int(rng.integers(0, 6))):
                yy = y1 + (k + 1) * h // 7
                cv2.line(img, (x1, yy), (min(x1 + w, width - 1), yy), tuple(255 - c for c in color), 2)
        else:
            cv2.ellipse(img, (x1 + w // 2, y1 + h // 2), (w // 2, h // 2), float(rng.uniform(0, 180)), 0, 360, color, -1)
    return cv2.GaussianBlur(img, (3, 3), 0)


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0, dcn_offset_std: float = 0.02) -> None:
    """Draw every weight from a seeded generator (order = parameter order, so it is reproducible).

    Convs/linears: N(0, 2/fan_in) (He), biases U(-0.1, 0.1); BN affine: weight U(0.5, 1.5),
    bias U(-0.2, 0.2); DCN offset convs: N(0, ``dcn_offset_std``) so offsets are non-zero.
    """
    g = torch.Generator().manual_seed(seed)
    offset_params = {id(p) for m in model.modules() if isinstance(m, DeformConv2d) for p in m.conv_offset.parameters()}
    bn_params = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    for name, p in model.named_parameters():
        if id(p) in offset_params:
            p.copy_(torch.randn(p.shape, generator=g) * dcn_offset_std)
        elif id(p) in bn_params:
            lo, hi = (0.5, 1.5) if name.endswith("weight") else (-0.2, 0.2)
            p.copy_(torch.rand(p.shape, generator=g) * (hi - lo) + lo)
        elif p.dim() > 1:
            fan_in = p[0].numel()  # conv [out, in/g, k, k] and linear [out, in]
            if "upsample" in name and p.dim() == 4:  # ConvTranspose2d weight is [in, out, k, k]
                fan_in = p.shape[0]
            p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(2.0 / fan_in))
        else:
            p.copy_(torch.rand(p.shape, generator=g) * 0.2 - 0.1)
    from torchvision.ops.misc import FrozenBatchNorm2d

    for m in model.modules():  # torchvision's frozen BN keeps its affine as buffers
        if isinstance(m, FrozenBatchNorm2d):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)


@torch.no_grad()
def calibrate_bn(module: nn.Module, x: torch.Tensor):
    """Set every BN's running mean/var to the batch statistics of its input on ``x`` (in forward order).

    Returns the module's output on ``x``, which is already the calibrated module's output (each
    BN's statistics are set just before it runs, in eval mode).
    """
    from torchvision.ops.misc import FrozenBatchNorm2d  # torchvision's detectors use it

    hooks = []

    def pre(m: nn.Module, inputs):
        t = inputs[0]
        m.running_mean.copy_(t.mean((0, 2, 3)))
        m.running_var.copy_(t.var((0, 2, 3), unbiased=False) + 1e-3)

    for m in module.modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)):
            hooks.append(m.register_forward_pre_hook(pre))
    was_training = module.training
    module.eval()
    try:
        return module(x)
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)


_TARGET_STD = (
    # (name suffix, target output std): logits spread enough to rank clearly but not saturate;
    # box deltas small enough to give plausible boxes. Both nuimcli/mmdet and torchvision names.
    ("fc_cls", 2.0), ("cls_score", 2.0), ("rpn_cls", 2.0), ("cls_logits", 2.0),
    ("conv_logits", 2.0), ("mask_fcn_logits", 2.0),
    ("fc_reg", 1.0), ("bbox_pred", 1.0), ("rpn_reg", 0.3),
)


@torch.no_grad()
def calibrate_heads(model: nn.Module, run, skip_prefix: str = "backbone.") -> int:
    """Rescale every conv/linear outside the backbone so its output std on real data is a target.

    One pass: a forward hook on each layer, on its first call, measures the output std and
    multiplies the layer's weight and bias by ``target / std`` (which scales the output
    exactly), returning the rescaled output so later layers see calibrated inputs. ``run()``
    performs the forward (e.g. ``lambda: model.predict([img])``). Returns the layer count.
    """
    done: set[int] = set()
    hooks = []

    def hook(name):
        target = next((t for suffix, t in _TARGET_STD if name.endswith(suffix)), 1.0)

        def fn(m, inputs, out):
            if id(m) in done or not isinstance(out, torch.Tensor) or out.numel() < 2:
                return None
            done.add(id(m))
            std = float(out.float().std())
            if not math.isfinite(std) or std == 0:
                return None
            a = target / std
            m.weight.mul_(a)
            if m.bias is not None:
                m.bias.mul_(a)
            return out * a

        return fn

    for name, m in model.named_modules():
        if name.startswith(skip_prefix) or name == skip_prefix.rstrip("."):
            continue
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            hooks.append(m.register_forward_hook(hook(name)))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return len(done)


def calibrated_model(preset, width: int, height: int, seed: int = 0) -> nn.Module:
    """``preset`` (a :class:`~nuimcli.presets.Preset`) built with seeded weights
    (:func:`randomize`), BN calibrated on a synthetic ``width`` x ``height`` picture resized to
    the test scale and heads calibrated on its predictions: an eval-mode model whose detections
    look like a trained one's (``nuim export --random-weights``, the export tests)."""
    from nuimcli.data.transforms import normalize, pad_batch, resize_keep_ratio, to_chw_tensor
    from nuimcli.models.build import build_model

    torch.manual_seed(seed)
    det = build_model(preset).eval()
    randomize(det, seed)
    d = preset.data
    img = synthetic_image(width, height, seed)
    resized, _ = resize_keep_ratio(img, d.test_scale)
    with torch.no_grad():
        calibrate_bn(det.backbone, pad_batch([to_chw_tensor(normalize(resized, d.mean, d.std, d.to_rgb))],
                                             d.size_divisor))
        calibrate_heads(det, lambda: det.predict([img]))
    return det.eval()
