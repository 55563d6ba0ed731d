"""mmdet state dicts, as tensors in memory: parse a checkpoint's structure, normalise keys, compare
with a model, load strictly with a readable report or partially (``load_from``, ImageNet backbones).

Pure dict and tensor manipulation: no file is read or written here (that is
:mod:`nuimcli.checkpoints`), so the model code depends on nothing above it.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch
from torch import nn

from nuimcli.errors import UserError

log = logging.getLogger(__name__)

_SHOW = 5  # keys listed per category in a mismatch report


class CheckpointMismatch(UserError):
    """A checkpoint's tensors do not match the model built from the expected preset."""


_OLD_DCN_OFFSET = re.compile(r"^(.*)\.conv2_offset\.(weight|bias)$")


def normalise_state_dict(state_dict: Mapping[str, Any]) -> "OrderedDict[str, torch.Tensor]":
    """Key clean-up every loader applies (order kept).

    - strips the ``module.`` prefix of DataParallel/DDP saves;
    - renames early-mmdet DCN offsets ``…conv2_offset.{weight,bias}`` to mmcv's
      ``…conv2.conv_offset.{weight,bias}`` (what ``DeformConv2dPack`` does on load);
    - drops non-tensor entries (never part of a model's state).
    """
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            continue
        k = k[len("module.") :] if k.startswith("module.") else k
        m = _OLD_DCN_OFFSET.match(k)
        if m:
            k = f"{m.group(1)}.conv2.conv_offset.{m.group(2)}"
        out[k] = v
    return out


def parse_checkpoint(ckpt: Any, source: str = "<checkpoint dict>") -> dict[str, Any]:
    """A loaded checkpoint object (mmdet dict, bare state dict, or a ``{'model': ...}`` training
    file) as ``{'state_dict', 'meta', ...}``.

    ``state_dict`` is normalised (:func:`normalise_state_dict`); ``meta`` is ``{}`` when the file
    has none. Other top-level entries (``optimizer``, training state) are passed through
    untouched for resuming. Anything else is a one-line :class:`UserError` naming ``source``.
    """
    if not isinstance(ckpt, Mapping):
        raise UserError(f"{source}: not a checkpoint (holds a {type(ckpt).__name__}, expected a dict of tensors)")
    if "state_dict" in ckpt and isinstance(ckpt["state_dict"], Mapping):
        raw_sd = ckpt["state_dict"]
        rest = {k: v for k, v in ckpt.items() if k not in ("state_dict", "meta")}
        meta = ckpt.get("meta") or {}
    elif isinstance(ckpt.get("model"), Mapping):  # torchvision / detectron2 training-script files
        raw_sd = ckpt["model"]
        rest = {k: v for k, v in ckpt.items() if k not in ("model", "meta")}
        meta = ckpt.get("meta") or {}
    elif ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raw_sd, rest, meta = ckpt, {}, {}
    else:
        keys = ", ".join(list(map(str, ckpt.keys()))[:6])
        raise UserError(f"{source}: not an mmdet checkpoint (no 'state_dict'; top-level keys: {keys or 'none'})")
    if not isinstance(meta, Mapping):
        meta = {}
    state_dict = normalise_state_dict(raw_sd)
    if not state_dict:
        raise UserError(f"{source}: the checkpoint holds no tensors")
    return {"state_dict": state_dict, "meta": dict(meta), **rest}


@dataclass
class LoadReport:
    """Differences between a state dict and a model (keys in the model's / file's order)."""

    missing: list[str] = field(default_factory=list)  #: in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  #: in the file, not in the model
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  #: (key, file shape, model shape)
    ignored: list[str] = field(default_factory=list)  #: dropped on purpose (e.g. a classifier ``fc.*``)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def skipped(self) -> list[str]:
        """Model keys left at their current values: missing ones plus shape-mismatched ones."""
        return self.missing + [k for k, _, _ in self.mismatched]

    def counts(self) -> str:
        return f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, {len(self.mismatched)} shape-mismatched"

    def summary(self, show: int = _SHOW) -> str:
        """A few lines: the first ``show`` keys of each kind with the totals."""
        lines = []

        def more(n: int) -> str:
            return f", ... (+{n - show} more)" if n > show else ""

        if self.missing:
            lines.append(f"  missing in file ({len(self.missing)}): {', '.join(self.missing[:show])}{more(len(self.missing))}")
        if self.unexpected:
            lines.append(f"  unexpected in file ({len(self.unexpected)}): {', '.join(self.unexpected[:show])}{more(len(self.unexpected))}")
        if self.mismatched:
            items = [f"{k} file {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched[:show]]
            lines.append(f"  shape mismatch ({len(self.mismatched)}): {'; '.join(items)}{more(len(self.mismatched))}")
        return "\n".join(lines)


def _is_optional_key(key: str) -> bool:
    # torch's BatchNorm fills a missing num_batches_tracked itself (pre-1.0 files lack it).
    return key.endswith("num_batches_tracked")


def compare_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> LoadReport:
    """Compare keys and shapes of ``state_dict`` against ``model.state_dict()``."""
    expected = model.state_dict()
    report = LoadReport()
    for k, v in expected.items():
        if k not in state_dict:
            if not _is_optional_key(k):
                report.missing.append(k)
        elif tuple(state_dict[k].shape) != tuple(v.shape):
            report.mismatched.append((k, tuple(state_dict[k].shape), tuple(v.shape)))
    report.unexpected = [k for k in state_dict if k not in expected]
    return report


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], preset_name: str, source: Optional[str] = None
) -> None:
    """Load every tensor of ``state_dict`` into ``model``; any difference raises :class:`CheckpointMismatch`.

    The message names the file (``source``), the preset the model was built from, the counts and
    the first few missing / unexpected / shape-mismatched keys.
    """
    model = _unwrap(model)
    sd = normalise_state_dict(state_dict)
    report = compare_state_dict(model, sd)
    if not report.ok:
        manifest = getattr(getattr(model, "preset", None), "state_dict_manifest", None)
        what = f"preset '{preset_name}'" + (f" (architecture {manifest})" if manifest else "")
        where = f"{source}: " if source else ""
        raise CheckpointMismatch(
            f"{where}checkpoint does not match {what}: {report.counts()} keys\n{report.summary()}\n"
            f"  (is this file for another preset? pass the right one with --preset)"
        )
    model.load_state_dict(sd, strict=True)


def class_dependent_keys(model: nn.Module) -> list[str]:
    """State-dict keys of ``model`` whose rows belong to its classes (box classifier and regressor,
    mask logits of every stage), as each head declares them with ``class_dependent_params()``.

    HTC's semantic head is not among them: its 32 outputs are nuImages stuff categories, not the
    detection classes.
    """
    model = _unwrap(model)
    keys: list[str] = []
    for name, module in model.named_modules():
        declare = getattr(module, "class_dependent_params", None)
        if declare is None:
            continue
        for sub in declare():
            keys.extend(f"{name}.{sub}.{k}" if name else f"{sub}.{k}" for k in getattr(module, sub).state_dict())
    return keys


def load_partial(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: Optional[str] = None,
                 warn: bool = True) -> LoadReport:
    """Non-strict load, as mmcv's ``load_checkpoint(strict=False)`` (for ``load_from`` weights).

    Tensors whose shape differs from the model's (e.g. 81-class COCO classifiers) are skipped
    and left at their current values; missing and unexpected keys are tolerated. Logs one
    warning with the report (unless ``warn`` is False: the caller reports) and returns it
    (``report.skipped`` = model keys not loaded).
    """
    model = _unwrap(model)
    sd = normalise_state_dict(state_dict)
    report = compare_state_dict(model, sd)
    bad = {k for k, _, _ in report.mismatched}
    model.load_state_dict(OrderedDict((k, v) for k, v in sd.items() if k not in bad and k not in report.unexpected), strict=False)
    if warn and not report.ok:
        log.warning("%spartial load: %s keys\n%s", f"{source}: " if source else "", report.counts(), report.summary())
    return report


def load_backbone_weights(backbone: nn.Module, state_dict: Mapping[str, torch.Tensor], source: Optional[str] = None) -> LoadReport:
    """Load ImageNet weights into a :class:`~nuimcli.models.backbones.ResNet`, non-strictly.

    Accepts torchvision / open-mmlab ResNet keys (``conv1.weight``, ``layer1.0.conv1.weight``, ...;
    the classifier ``fc.*`` is ignored) and whole-detector state dicts (the ``backbone.`` keys
    are used). Returns the report (``ignored`` lists the dropped classifier keys).
    """
    sd: Mapping[str, torch.Tensor] = state_dict
    if any(k.startswith("backbone.") for k in sd):
        sd = OrderedDict((k[len("backbone.") :], v) for k, v in sd.items() if k.startswith("backbone."))
    ignored = [k for k in sd if k.startswith("fc.")]
    sd = OrderedDict((k, v) for k, v in sd.items() if not k.startswith("fc."))
    report = load_partial(backbone, sd, source=source)
    report.ignored = ignored
    return report
