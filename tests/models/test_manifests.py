"""Every row preset builds a model whose state dict equals its architecture's mmdet manifest.

The manifests (``tests/fixtures/manifests/<arch>.json``: ``[key, shape, dtype]`` in mmdet's
order) are what the released checkpoints hold; equality (keys, order, shapes, dtypes) is what
lets them load with ``strict=True`` and lets mmdet load our files. Models are built on the
``meta`` device: shapes without memory or init time.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from nuimcli.models.build import build_backbone, build_model, build_neck
from nuimcli.presets import load_preset, presets_by_manifest

MANIFESTS = Path(__file__).resolve().parents[1] / "fixtures" / "manifests"
ARCHS = sorted(p.stem for p in MANIFESTS.glob("*.json"))


@lru_cache(maxsize=None)
def _arch_presets() -> dict[str, list[str]]:
    return presets_by_manifest()


def _manifest(arch: str) -> list[tuple[str, tuple[int, ...], str]]:
    return [(k, tuple(s), d) for k, s, d in json.loads((MANIFESTS / f"{arch}.json").read_text())]


def _entries(state_dict, prefix: str = "") -> list[tuple[str, tuple[int, ...], str]]:
    return [(prefix + k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state_dict.items()]


def _diff(ours, manifest) -> str:
    """A readable first difference (for the assertion message)."""
    for i, (a, b) in enumerate(zip(ours, manifest)):
        if a != b:
            return f"first difference at #{i}: ours {a} vs manifest {b}"
    return f"lengths differ: ours {len(ours)} vs manifest {len(manifest)}"


def test_all_ten_architectures_are_named_by_row_presets():
    assert len(ARCHS) == 10
    assert sorted(_arch_presets()) == ARCHS


@pytest.mark.parametrize("arch", ARCHS)
def test_backbone_and_neck_match_manifest(arch):
    preset = load_preset(_arch_presets()[arch][0])
    with torch.device("meta"):
        backbone = build_backbone(preset.model.backbone)
        neck = build_neck(backbone.out_channels, preset.model.fpn_channels)
    ours = _entries(backbone.state_dict(), "backbone.") + _entries(neck.state_dict(), "neck.")
    manifest = [e for e in _manifest(arch) if e[0].startswith(("backbone.", "neck."))]
    assert ours == manifest, _diff(ours, manifest)


@pytest.mark.parametrize("arch", ARCHS)
def test_full_model_matches_manifest(arch):
    for name in _arch_presets()[arch]:  # every row sharing the architecture
        preset = load_preset(name)
        with torch.device("meta"):
            model = build_model(preset)
        ours = _entries(model.state_dict())
        manifest = _manifest(arch)
        assert ours == manifest, f"{name}: {_diff(ours, manifest)}"


def _with_num_classes(entry: tuple[str, tuple[int, ...], str], n: int) -> tuple[str, tuple[int, ...], str]:
    """mmdet's shape for a class-dependent tensor when ``num_classes=n``: ``fc_cls`` n+1 rows
    (background last), class-specific ``fc_reg`` 4n, the RoI mask head's ``conv_logits`` n.
    (Checked against mmdet 3.3.0 built from each architecture's config with ``num_classes=3``.)"""
    key, shape, dtype = entry
    layer = key.split(".")[-2]
    if layer == "fc_cls":
        shape = (n + 1, *shape[1:])
    elif layer == "fc_reg" and shape[0] == 40:  # class-specific regression; the cascade stages are agnostic (4)
        shape = (4 * n, *shape[1:])
    elif layer == "conv_logits" and key.startswith("roi_head.mask_head"):  # not the 32-class semantic head
        shape = (n, *shape[1:])
    return key, shape, dtype


@pytest.mark.parametrize("arch", ARCHS)
def test_own_class_list_keeps_mmdets_layout_for_that_num_classes(arch):
    """A model trained on 3 classes writes the state dict mmdet builds with ``num_classes=3``
    (same keys and order, class-dependent shapes resized), so it loads strictly into mmdet."""
    from nuimcli.data.classes import with_classes

    preset = with_classes(load_preset(_arch_presets()[arch][0]), ["vehicle", "person", "cone"])
    with torch.device("meta"):
        model = build_model(preset)
    ours = _entries(model.state_dict())
    expected = [_with_num_classes(e, 3) for e in _manifest(arch)]
    assert ours == expected, _diff(ours, expected)
    assert ours != _manifest(arch)  # the class-dependent tensors did change
