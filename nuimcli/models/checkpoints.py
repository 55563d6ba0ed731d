"""mmdet-format checkpoints: read, load strictly with a readable report, write, recognise.

File format (mmcv ``save_checkpoint``): ``{'meta': {...}, 'state_dict': OrderedDict, ['optimizer']}``;
a bare state dict is accepted on reading. Our files add ``meta['nuim_preset']`` (the preset name)
and ``meta['nuim_preset_config']`` (the resolved preset as a plain dict), so a checkpoint alone is
enough to rebuild its model; mmdet still loads them (it only reads ``state_dict`` and
``meta['CLASSES']``).

Which preset a file needs (:func:`preset_for_checkpoint`): an explicit name wins; else our own
meta; else a released file recognised by the first 8 hex digits of its SHA-256; else the user must
say (pytorch- and caffe-style R-50 have identical keys, so keys never decide).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

import torch
from torch import nn

from nuimcli.errors import UserError
from nuimcli.presets import Preset, list_presets, load_preset, preset_from_dict
from nuimcli.utils.io import atomic_path

if TYPE_CHECKING:
    from nuimcli.models.detector import Detector

log = logging.getLogger(__name__)

PathOrDict = Union[str, os.PathLike, Mapping[str, Any]]

_SHOW = 5  # keys listed per category in a mismatch report


class CheckpointMismatch(UserError):
    """A checkpoint's tensors do not match the model built from the expected preset."""


# --------------------------------------------------------------------------- reading


TRUST_FLAG = "--trust-checkpoint"


def _torch_load(path: Path, map_location: Any, trust: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers, never code.

    Some published mmdet files pickle Python objects in ``meta`` (numpy scalars, ...) that the safe
    loader refuses. Unpickling those can run any code, so the full unpickler is used only for a
    file the presets name (its SHA-256 starts with a released, ``load_from`` or backbone file's
    hash, see :func:`known_file_hashes`) or when the user vouches for it (``trust``, the CLI's
    ``--trust-checkpoint``); otherwise a one-line :class:`UserError` says so.
    """
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a checkpoint file (.pth)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e):
            raise UserError(f"{path}: not a readable PyTorch checkpoint ({_first_line(e)})") from None
    except Exception as e:  # torch raises RuntimeError / EOFError / zipfile errors for damaged files
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({_first_line(e)})") from None
    if not trust:
        from nuimcli.download import sha256_file

        digest = sha256_file(path)
        if not any(digest.startswith(h) for h in known_file_hashes()):
            raise UserError(
                f"{path}: refused: besides tensors it holds Python objects, and loading those can run code; "
                f"it is not a file the presets name (sha256 {digest[:8]}…); pass {TRUST_FLAG} only if you trust "
                f"where it came from"
            )
    warnings.warn(f"{path}: checkpoint holds non-tensor Python objects; loading it with the full unpickler")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({_first_line(e)})") from None


def known_file_hashes() -> set[str]:
    """SHA-256 prefixes (lower-case hex) of every file a preset names: released checkpoints
    (``release.hash8``), COCO ``load_from`` detectors and ImageNet backbones (the hash in their
    published names, as mmdet's ``publish_model`` and torch.hub write them)."""
    from nuimcli.download import hash_prefix_from_name

    out: set[str] = set()
    for name in list_presets():
        p = load_preset(name)
        urls = [p.init.load_from, p.init.pretrained_url]
        if p.release is not None:
            urls.append(p.release.checkpoint_url)
            if p.release.hash8:
                out.add(p.release.hash8.lower())
        out.update(h.lower() for h in map(hash_prefix_from_name, filter(None, urls)) if h)
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


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


def load_checkpoint(path_or_dict: PathOrDict, map_location: Any = "cpu", trust: bool = False) -> dict[str, Any]:
    """Read an mmdet checkpoint (or a bare state dict, or a ``{'model': ...}`` training file)
    into ``{'state_dict', 'meta', ...}``.

    ``state_dict`` is normalised (:func:`normalise_state_dict`); ``meta`` is ``{}`` when the file
    has none. Other top-level entries (``optimizer``, training state) are passed through
    untouched for resuming; model loading ignores them. A missing, damaged or non-checkpoint
    file raises a one-line :class:`UserError` naming it. A file holding Python objects besides
    tensors is read only when the presets name it or ``trust`` is set (see :func:`_torch_load`).
    """
    source = "<checkpoint dict>"
    if isinstance(path_or_dict, Mapping):
        ckpt: Any = path_or_dict
    else:
        path = Path(path_or_dict)
        source = str(path)
        ckpt = _torch_load(path, map_location, trust=trust)
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


# --------------------------------------------------------------------------- comparing


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


def load_partial(model: nn.Module, checkpoint: PathOrDict, source: Optional[str] = None, trust: bool = False) -> LoadReport:
    """Non-strict load, as mmcv's ``load_checkpoint(strict=False)`` (for ``load_from`` files).

    Tensors whose shape differs from the model's (e.g. 81-class COCO classifiers) are skipped
    and left at their current values; missing and unexpected keys are tolerated. Logs one
    warning with the report and returns it (``report.skipped`` = model keys not loaded).
    """
    model = _unwrap(model)
    if not isinstance(checkpoint, Mapping) and source is None:
        source = str(checkpoint)
    sd = load_checkpoint(checkpoint, trust=trust)["state_dict"]
    report = compare_state_dict(model, sd)
    bad = {k for k, _, _ in report.mismatched}
    model.load_state_dict(OrderedDict((k, v) for k, v in sd.items() if k not in bad and k not in report.unexpected), strict=False)
    if not report.ok:
        log.warning("%spartial load: %s keys\n%s", f"{source}: " if source else "", report.counts(), report.summary())
    return report


def load_backbone_pretrained(backbone: nn.Module, path: PathOrDict, trust: bool = False) -> LoadReport:
    """Load ImageNet weights into a :class:`~nuimcli.models.backbones.ResNet`, non-strictly.

    Accepts torchvision ResNet files (``conv1.weight``, ``layer1.0.conv1.weight``, ...; the
    classifier ``fc.*`` is ignored), open-mmlab pretrain files (same keys, optionally inside a
    ``state_dict`` wrapper) and whole-detector files (the ``backbone.`` keys are used).
    Returns the report (``ignored`` lists the dropped classifier keys).
    """
    source = None if isinstance(path, Mapping) else str(path)
    sd = load_checkpoint(path, trust=trust)["state_dict"]
    if any(k.startswith("backbone.") for k in sd):
        sd = OrderedDict((k[len("backbone.") :], v) for k, v in sd.items() if k.startswith("backbone."))
    ignored = [k for k in sd if k.startswith("fc.")]
    sd = OrderedDict((k, v) for k, v in sd.items() if not k.startswith("fc."))
    report = load_partial(backbone, sd, source=source)
    report.ignored = ignored
    return report


# --------------------------------------------------------------------------- writing


def save_checkpoint(
    path: Union[str, os.PathLike],
    model: nn.Module,
    preset: Preset,
    optimizer: Optional[torch.optim.Optimizer] = None,
    meta: Optional[Mapping[str, Any]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write ``{'meta', 'state_dict'[, 'optimizer'][, **extra]}`` atomically (temp file + rename).

    ``meta`` gets mmdet's ``CLASSES`` (so mmdet names the labels), ``nuim_preset`` and
    ``nuim_preset_config`` (the resolved preset dict) on top of what the caller passes
    (e.g. ``epoch``, ``iter`` as mmcv writes them). ``extra`` adds top-level entries for
    resuming (scheduler, AMP scaler, ...). Tensors are moved to CPU. Returns the path.
    """
    from nuimcli import __version__

    model = _unwrap(model)
    full_meta: dict[str, Any] = {
        "nuimcli_version": __version__,
        "time": time.asctime(),
        "CLASSES": tuple(preset.data.classes),
    }
    full_meta.update(dict(meta or {}))
    full_meta["nuim_preset"] = preset.name
    full_meta["nuim_preset_config"] = preset.to_dict()
    state_dict = OrderedDict((k, v.detach().cpu()) for k, v in model.state_dict().items())
    ckpt: dict[str, Any] = {"meta": full_meta, "state_dict": state_dict}
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    for k, v in (extra or {}).items():
        if k in ckpt:
            raise ValueError(f"extra checkpoint entry {k!r} would overwrite {k!r}")
        ckpt[k] = v
    final = Path(path)
    with atomic_path(final) as tmp:
        torch.save(ckpt, tmp)
    return final


# --------------------------------------------------------------------------- recognising


def file_hash8(path: Union[str, os.PathLike]) -> str:
    """First 8 hex digits of the SHA-256 of the file's bytes (the released-file suffix)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:8]


def released_preset_for_hash(hash8: str) -> Optional[Preset]:
    """The preset whose released checkpoint has this hash prefix, or None."""
    for name in list_presets():
        p = load_preset(name)
        if p.release is not None and p.release.hash8 and p.release.hash8.lower() == hash8.lower():
            return p
    return None


def preset_for_checkpoint(
    path: Union[str, os.PathLike], preset_name: Optional[str] = None, checkpoint: Optional[Mapping[str, Any]] = None
) -> Preset:
    """The preset a checkpoint file needs.

    Order: ``preset_name`` if given; else ``meta['nuim_preset_config']`` of our own files; else the
    released preset whose ``release.hash8`` equals the file's SHA-256 prefix; else a
    :class:`UserError` asking for ``--preset`` (keys alone never decide: pytorch- and caffe-style
    R-50 are indistinguishable). ``checkpoint`` (already read) avoids reading the file twice.
    """
    if preset_name:
        return load_preset(preset_name)
    ckpt = checkpoint if checkpoint is not None else load_checkpoint(path)
    meta = ckpt.get("meta") or {}
    config = meta.get("nuim_preset_config")
    if isinstance(config, Mapping):
        return preset_from_dict(dict(config), f"{path} (meta.nuim_preset_config)")
    h8 = file_hash8(path)
    preset = released_preset_for_hash(h8)
    if preset is not None:
        return preset
    raise UserError(
        f"{path}: not a nuimcli checkpoint and not a released file (sha256 {h8}...); "
        f"pass --preset NAME to say which model it holds (`nuim presets` lists them)"
    )


def load_detector(
    name_or_path: Union[str, os.PathLike], preset_name: Optional[str] = None, device: Union[str, torch.device] = "cpu",
    trust: bool = False,
) -> "Detector":
    """Build the model a checkpoint needs, load it strictly, put it in eval mode on ``device``.

    ``name_or_path``: a checkpoint file, a zoo name (a preset with a released file, fetched
    and verified by :func:`nuimcli.zoo.resolve_checkpoint`; that preset is used) or a URL.
    ``trust``: read a file that holds Python objects besides tensors even when no preset names it.
    """
    from nuimcli.models.build import build_model

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"device {device!r}: {_first_line(e)}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r}: CUDA is not available on this machine (use device='cpu')")
    text = str(name_or_path)
    path = Path(text).expanduser()
    is_url = "://" in text
    if not path.exists() and not is_url and (path.suffix in (".pth", ".pt", ".ckpt") or os.sep in text):
        raise UserError(f"{path}: no such checkpoint file")
    if not path.exists():
        from nuimcli.zoo import resolve_checkpoint

        path = Path(resolve_checkpoint(text))  # zoo name or URL: downloaded and hash-checked
        if preset_name is None and text in list_presets():
            preset_name = text
    ckpt = load_checkpoint(path, trust=trust)
    preset = preset_for_checkpoint(path, preset_name, checkpoint=ckpt)
    model = build_model(preset)
    load_state_dict_strict(model, ckpt["state_dict"], preset.name, source=str(path))
    return model.to(dev).eval()
