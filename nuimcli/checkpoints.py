"""mmdet-format checkpoint files: read safely, write atomically, recognise, build the model they need.

File format (mmcv ``save_checkpoint``): ``{'meta': {...}, 'state_dict': OrderedDict, ['optimizer']}``;
a bare state dict is accepted on reading. Our files add ``meta['nuim_preset']`` (the preset name)
and ``meta['nuim_preset_config']`` (the resolved preset as a plain dict), so a checkpoint alone is
enough to rebuild its model; mmdet still loads them (it only reads ``state_dict`` and
``meta['CLASSES']``).

Which preset a file needs (:func:`preset_for_checkpoint`): an explicit name wins; else our own
meta; else a released file recognised by the first 8 hex digits of its SHA-256; else the user must
say (pytorch- and caffe-style R-50 have identical keys, so keys never decide).

This module does the file I/O; the tensor side (key clean-up, comparing, strict and partial
loading) is :mod:`nuimcli.models.state_dict`. Turning a path, URL or zoo name into a file is
:func:`nuimcli.engine.resolve.resolve`.
"""

from __future__ import annotations

import os
import pickle
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

import torch
from torch import nn

from nuimcli.errors import UserError
from nuimcli.models.state_dict import (
    LoadReport,
    load_backbone_weights,
    load_state_dict_strict,
    parse_checkpoint,
)
from nuimcli.models.state_dict import load_partial as _load_partial_state_dict
from nuimcli.presets import Preset, list_presets, load_preset, preset_from_dict
from nuimcli.utils.hashing import sha256_file
from nuimcli.utils.io import atomic_path

if TYPE_CHECKING:
    from nuimcli.models.detector import Detector

PathOrDict = Union[str, os.PathLike, Mapping[str, Any]]

TRUST_FLAG = "--trust-checkpoint"


# --------------------------------------------------------------------------- reading


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


def load_checkpoint(path_or_dict: PathOrDict, map_location: Any = "cpu", trust: bool = False) -> dict[str, Any]:
    """Read an mmdet checkpoint (or a bare state dict, or a ``{'model': ...}`` training file)
    into ``{'state_dict', 'meta', ...}`` (see :func:`~nuimcli.models.state_dict.parse_checkpoint`).

    A missing, damaged or non-checkpoint file raises a one-line :class:`UserError` naming it. A
    file holding Python objects besides tensors is read only when the presets name it or
    ``trust`` is set (see :func:`_torch_load`). A dict is parsed as if read from a file.
    """
    if isinstance(path_or_dict, Mapping):
        return parse_checkpoint(path_or_dict)
    path = Path(path_or_dict)
    return parse_checkpoint(_torch_load(path, map_location, trust=trust), str(path))


def load_partial(model: nn.Module, checkpoint: PathOrDict, source: Optional[str] = None, trust: bool = False) -> LoadReport:
    """Non-strict load of a file or checkpoint dict (``load_from``): tensors of another shape are
    skipped, see :func:`nuimcli.models.state_dict.load_partial`."""
    if not isinstance(checkpoint, Mapping) and source is None:
        source = str(checkpoint)
    return _load_partial_state_dict(model, load_checkpoint(checkpoint, trust=trust)["state_dict"], source=source)


def load_backbone_pretrained(backbone: nn.Module, path: PathOrDict, trust: bool = False) -> LoadReport:
    """Load an ImageNet weights file (torchvision, open-mmlab or whole-detector) into a ResNet,
    non-strictly; see :func:`nuimcli.models.state_dict.load_backbone_weights`."""
    source = None if isinstance(path, Mapping) else str(path)
    return load_backbone_weights(backbone, load_checkpoint(path, trust=trust)["state_dict"], source=source)


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

    if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP / DataParallel
        model = model.module
    from nuimcli.models.inference_mode import refuse_inference_only

    refuse_inference_only(model, "save")  # its folded state_dict would not load as a checkpoint
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
    h8 = sha256_file(path)[:8]
    preset = released_preset_for_hash(h8)
    if preset is not None:
        return preset
    raise UserError(
        f"{path}: not a nuimcli checkpoint and not a released file (sha256 {h8}...); "
        f"pass --preset NAME to say which model it holds (`nuim presets` lists them)"
    )


def build_from_checkpoint(
    path: Union[str, os.PathLike], preset_name: Optional[str] = None, trust: bool = False,
    checkpoint: Optional[Mapping[str, Any]] = None,
) -> "Detector":
    """Build the model a checkpoint file needs (:func:`preset_for_checkpoint`) and load it strictly.

    The one build-then-load path: ``nuimcli.load``, ``nuim eval``, ``nuim predict`` and
    ``nuim zoo check`` all come here. Returns the model on the CPU in training mode (as built);
    a mismatch raises :class:`~nuimcli.models.state_dict.CheckpointMismatch`. ``checkpoint``
    (already read) avoids reading the file twice.
    """
    from nuimcli.models.build import build_model

    ckpt = checkpoint if checkpoint is not None else load_checkpoint(path, trust=trust)
    preset = preset_for_checkpoint(path, preset_name, checkpoint=ckpt)
    model = build_model(preset)
    load_state_dict_strict(model, ckpt["state_dict"], preset.name, source=str(path))
    return model
