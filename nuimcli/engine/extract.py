"""``nuim zoo extract``: a detector's backbone (and neck) weights as a file other models load.

The main reason people train on nuImages is to pretrain the camera backbone of a BEV model
(BEVFusion, DeepInteraction, ...). Those load it one of two ways:

* ``backbone=dict(..., init_cfg=dict(type='Pretrained', checkpoint=FILE))``: mmcv reads
  ``FILE['state_dict']`` into the backbone module itself, so the keys must be the part's own
  (``conv1.weight``, ``layer1.0.conv1.weight``, ...): the default here;
* ``load_from = FILE`` on the whole model: the keys need the model's attribute path
  (``img_backbone.conv1.weight``): ``prefix='img_backbone.'``.

The weights come from the model after a strict load of the checkpoint (:func:`build_from_checkpoint`),
not from a key filter over the file, so a file that does not hold what its preset says is refused
before anything is written.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from nuimcli.errors import UserError
from nuimcli.utils.io import atomic_path

#: The parts that can be extracted: the detector attribute each names.
PARTS = ("backbone", "neck")


@dataclass
class ExtractResult:
    """What :func:`extract_parts` wrote."""

    out: Path
    source: str
    preset: str
    parts: list[str]
    prefix: str
    num_tensors: int
    num_params: int
    first_keys: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {"out": str(self.out), "source": self.source, "preset": self.preset, "parts": self.parts,
                "prefix": self.prefix, "num_tensors": self.num_tensors, "num_params": self.num_params,
                "first_keys": self.first_keys}


def parse_parts(text: str) -> list[str]:
    """``"backbone,neck"`` → ``["backbone", "neck"]`` (order kept, duplicates dropped); unknown → UserError."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UserError(f"--parts: name at least one of {', '.join(PARTS)}")
    for p in parts:
        if p not in PARTS:
            raise UserError(f"--parts: unknown part {p!r}; choose from {', '.join(PARTS)}")
    return list(dict.fromkeys(parts))


def part_state_dict(model: torch.nn.Module, parts: Sequence[str], prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """The tensors of ``parts`` of ``model``, keyed ``prefix + <key inside the part>``.

    With one part the keys are the part's own (what ``part.load_state_dict`` takes). Several parts
    keep their attribute name (``prefix + 'backbone.conv1.weight'``, ``... 'neck.lateral_convs...'``):
    merged without it, no loader could tell which key belongs to which part; mmcv's
    ``init_cfg=dict(type='Pretrained', checkpoint=FILE, prefix='backbone.')`` takes one part back out.
    """
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for part in parts:
        inner = f"{part}." if len(parts) > 1 else ""
        for k, v in getattr(model, part).state_dict().items():
            out[f"{prefix}{inner}{k}"] = v.detach().cpu().clone()
    return out


def extract_parts(
    spec: str | os.PathLike,
    parts: Sequence[str],
    out: str | os.PathLike,
    prefix: str = "",
    preset: Optional[str] = None,
    trust: bool = False,
) -> ExtractResult:
    """Write ``{'meta', 'state_dict'}`` holding ``parts`` of the model in ``spec`` (a path, URL or zoo name).

    ``meta['nuim_extract']`` records the source, preset, parts, prefix and the backbone's input
    normalisation (mean / std / RGB order: a caffe-style R-50 expects BGR and no std scaling, which
    the receiving model must know). The file is written atomically.
    """
    from nuimcli.checkpoints import build_from_checkpoint, load_checkpoint, preset_for_checkpoint
    from nuimcli.engine.resolve import resolve

    parts = list(parts)
    for p in parts:
        if p not in PARTS:
            raise UserError(f"unknown part {p!r}; choose from {', '.join(PARTS)}")
    out_path = Path(out)
    if out_path.is_dir():
        raise UserError(f"--out {out_path}: is a folder, expected a file name (e.g. backbone.pth)")
    found = resolve(spec)
    ckpt = load_checkpoint(found.path, trust=trust)
    name = preset or found.preset
    p = preset_for_checkpoint(found.path, name, checkpoint=ckpt)
    model = build_from_checkpoint(found.path, name, checkpoint=ckpt)  # strict: refuses a file its preset does not fit
    state = part_state_dict(model, parts, prefix)
    data = p.data
    meta = {
        "nuim_extract": {
            "source": str(spec),
            "preset": p.name,
            "parts": parts,
            "prefix": prefix,
            "backbone": dict(depth=p.model.backbone.depth, style=p.model.backbone.style,
                             groups=p.model.backbone.groups, base_width=p.model.backbone.base_width),
            "mean": list(data.mean), "std": list(data.std), "to_rgb": bool(data.to_rgb),
        },
    }
    with atomic_path(out_path) as tmp:
        torch.save({"meta": meta, "state_dict": state}, tmp)
    return ExtractResult(out=out_path, source=str(spec), preset=p.name, parts=parts, prefix=prefix,
                         num_tensors=len(state), num_params=int(sum(v.numel() for v in state.values())),
                         first_keys=list(state)[:3])
