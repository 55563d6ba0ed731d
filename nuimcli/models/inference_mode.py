"""Prepare a detector for inference: the one place that decides how predict, eval and
``nuimcli.load()`` (and export) run a model.

Default (fast): every frozen BatchNorm of the backbone is folded into the convolution before it
(one conv with a bias instead of conv + BN: a whole pass over each feature map less) and the
backbone runs channels-last (oneDNN's preferred layout on CPU, cuDNN's with float16). Folding
changes float rounding only: the parity fixtures hold within their tolerances
(``tests/models/test_parity.py``). ``exact=True`` leaves the model as mmdet computes it, bit for bit.

A folded model is inference-only: its BN modules are gone, so its ``state_dict`` no longer matches
the checkpoint layout. ``train()`` and ``save_checkpoint`` refuse it with a one-line reason
instead of silently writing a file mmdet (and we) cannot load.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from nuimcli.errors import UserError
from nuimcli.models.roi_heads.mask_heads import FCNMaskHead

#: attribute set on a prepared model; read by Detector.train, save_checkpoint and predict.
INFERENCE_ONLY = "inference_only"


#: bfloat16 autocast on CPU measured 2.3x faster than float32 (fast mode) on this project's
#: AVX512-BF16/AMX CPU (bench/infer.py, mask-rcnn-r50-1x, 1600x900, 2 threads: 0.29x vs 0.66x of
#: torchvision), so ``--half`` is offered on CPU; its accuracy cost is in the README (set False to refuse it).
CPU_HALF_OFFERED = True


def half_dtype(device: torch.device | str) -> torch.dtype:
    """The reduced precision for ``device``: float16 on CUDA, bfloat16 on CPU (float16
    convolutions have no fast CPU kernels; bfloat16 ones do on CPUs with AVX512-BF16/AMX)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


def _autocast_dtype(half: bool | torch.dtype | None, device: torch.device) -> Optional[torch.dtype]:
    """``half`` (False/None, True, or an explicit dtype) → the autocast dtype on ``device``, or None."""
    if isinstance(half, torch.dtype):
        return None if half == torch.float32 else half
    if not half:
        return None
    if device.type == "cpu" and not CPU_HALF_OFFERED:
        raise UserError("--half needs a CUDA device (float16): bfloat16 on this CPU measured no faster than "
                        "float32 (see the README's inference section); drop --half or use --device cuda")
    return half_dtype(device)


def fold_conv_bn(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode ``bn`` into ``conv`` in place: ``bn(conv(x)) == conv'(x)`` with
    ``w' = w * g / sqrt(v + eps)`` per output channel and ``b' = (b - m) * g / sqrt(v + eps) + beta``.

    ``conv`` is an ``nn.Conv2d`` or our ``DeformConv2d`` (both keep ``weight [out, in/g, k, k]``);
    a conv without a bias gets one. Computed in float64 so the fold adds no rounding of its own.
    """
    w = conv.weight.detach().double()
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    old_b = conv.bias.detach().double() if getattr(conv, "bias", None) is not None else torch.zeros_like(scale)
    new_b = (old_b - bn.running_mean.detach().double()) * scale + bn.bias.detach().double()
    conv.weight = nn.Parameter((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype), requires_grad=False)
    conv.bias = nn.Parameter(new_b.to(conv.weight.dtype), requires_grad=False)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every ``conv -> BatchNorm2d`` pair of ``module`` (in place) and replace each folded BN
    with ``nn.Identity``; returns how many were folded.

    Pairs are found by the ResNet naming mmdet uses (``convN`` then ``bnN`` in a block or the stem)
    and by ``nn.Sequential`` order (the ``downsample`` branch: conv, BN).
    """
    folded = 0
    for parent in list(module.modules()):
        if isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            for (_, a), (bn_name, b) in zip(children, children[1:]):
                if isinstance(b, nn.BatchNorm2d) and hasattr(a, "weight") and a.weight.dim() == 4:
                    fold_conv_bn(a, b)
                    setattr(parent, bn_name, nn.Identity())
                    folded += 1
            continue
        for i in range(1, 10):
            conv, bn = getattr(parent, f"conv{i}", None), getattr(parent, f"bn{i}", None)
            if conv is None or not isinstance(bn, nn.BatchNorm2d):
                continue
            if getattr(conv, "weight", None) is None or conv.weight.dim() != 4:
                continue
            fold_conv_bn(conv, bn)
            setattr(parent, f"bn{i}", nn.Identity())
            folded += 1
    return folded


def prepare_for_inference(model: nn.Module, exact: bool = False, half: bool | torch.dtype | None = None,
                          copy_model: bool = True) -> nn.Module:
    """Return ``model`` ready for inference on its current device, in eval mode.

    Args:
        model: a :class:`~nuimcli.models.detector.Detector` (eval or train mode).
        exact: keep mmdet's bit-exact path (no folding, NCHW). Default: folded BN + channels-last.
        half: True: run under autocast in float16 on CUDA (on CPU a :class:`UserError` while
            :data:`CPU_HALF_OFFERED` is False); a ``torch.dtype``: autocast to that dtype on any
            device (``torch.bfloat16`` on CPU, for benchmarks); None or False: float32. Weights
            stay float32 (autocast casts per op), so NMS and box decoding keep float32 where
            autocast says so.
        copy_model: fold into a deep copy (the caller's model, and any state_dict saved from it,
            stay unchanged). Pass False when the caller owns a freshly loaded model (``load``).

    Returns:
        the prepared model (a copy unless ``copy_model`` is False). A folded model is marked
        ``inference_only``: ``train()`` and ``save_checkpoint`` refuse it.
    """
    already = getattr(model, INFERENCE_ONLY, False)
    if already and exact:
        raise UserError("exact=True needs the unprepared model: this one has its BatchNorm folded already")
    device = next(model.parameters()).device
    dtype = _autocast_dtype(half, device)  # before the copy: a refused --half costs nothing
    if copy_model:
        model = copy.deepcopy(model)
    model.eval()
    model.autocast_dtype = dtype
    if already:
        return model  # folded once: the BN statistics are gone, only the precision changes
    if exact:
        model.backbone.channels_last = False
        return model
    fold_batchnorm(model.backbone)
    model.backbone.channels_last = True
    for module in model.modules():
        if isinstance(module, FCNMaskHead):
            module.fast_inference = True
    setattr(model, INFERENCE_ONLY, True)
    return model


def refuse_inference_only(model: nn.Module, action: str) -> None:
    """Raise a one-line :class:`UserError` when ``model`` was folded by :func:`prepare_for_inference`."""
    if getattr(model, INFERENCE_ONLY, False):
        raise UserError(f"cannot {action} a model prepared for inference (BatchNorm folded into the convolutions): "
                        "use the model from nuimcli.load(..., exact=True) or build_model + load_state_dict")
