"""`nuim zoo extract`: a detector's backbone / neck as files that a separately built part loads strictly."""

from __future__ import annotations

import json

import pytest
import torch

from nuimcli.checkpoints import save_checkpoint
from nuimcli.cli import main
from nuimcli.models.build import build_backbone, build_model, build_neck
from nuimcli.presets import load_preset


def nuim(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code or 0, out, err


@pytest.fixture
def trained(tmp_path):
    """A tiny-preset checkpoint with random (seeded) weights, as `nuim train` writes it."""
    preset = load_preset("mask-rcnn-r18-tiny")
    torch.manual_seed(3)
    model = build_model(preset)
    with torch.no_grad():  # BN statistics too: they must travel with the weights
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_()
    return preset, model, save_checkpoint(tmp_path / "ckpt.pth", model, preset)


def _standalone_parts(preset):
    """Backbone and neck built on their own, as another program would (not from the detector)."""
    backbone = build_backbone(preset.model.backbone)
    neck = build_neck(backbone.out_channels, preset.model.fpn_channels, num_outs=len(preset.model.rpn.anchor_strides))
    return backbone, neck


def test_default_backbone_file_loads_strictly_into_a_backbone(capsys, tmp_path, trained):
    preset, model, ckpt = trained
    out = tmp_path / "backbone.pth"
    code, stdout, err = nuim(capsys, "zoo", "extract", str(ckpt), "--out", str(out), "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["parts"] == ["backbone"] and doc["preset"] == "mask-rcnn-r18-tiny"
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {"meta", "state_dict"}
    sd = saved["state_dict"]
    assert "conv1.weight" in sd and "layer1.0.conv1.weight" in sd
    assert not any(k.startswith("backbone.") or k.startswith("neck.") for k in sd)
    backbone, _ = _standalone_parts(preset)
    backbone.load_state_dict(sd, strict=True)  # raises on any missing or unexpected key
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(backbone.state_dict()[k], v), k
    assert saved["meta"]["nuim_extract"]["std"] == list(preset.data.std)


def test_backbone_and_neck_keep_their_names_and_a_prefix_is_added(capsys, tmp_path, trained):
    preset, model, ckpt = trained
    out = tmp_path / "bn.pth"
    code, _, err = nuim(capsys, "zoo", "extract", str(ckpt), "--parts", "backbone,neck", "--out", str(out))
    assert code == 0, err
    sd = torch.load(out, weights_only=True)["state_dict"]
    backbone, neck = _standalone_parts(preset)
    # what mmcv's Pretrained init with prefix='backbone.' / 'neck.' does: take the keys, strip the prefix
    for part, module in (("backbone", backbone), ("neck", neck)):
        module.load_state_dict({k[len(part) + 1:]: v for k, v in sd.items() if k.startswith(part + ".")}, strict=True)
    assert torch.equal(neck.lateral_convs[0].conv.weight, model.neck.lateral_convs[0].conv.weight)

    out = tmp_path / "img.pth"
    code, _, err = nuim(capsys, "zoo", "extract", str(ckpt), "--prefix", "img_backbone.", "--out", str(out))
    assert code == 0, err
    sd = torch.load(out, weights_only=True)["state_dict"]
    assert list(sd) == ["img_backbone." + k for k in model.backbone.state_dict()]


def test_bad_parts_and_bad_checkpoints_are_one_line_errors(capsys, tmp_path, trained):
    _, _, ckpt = trained
    code, _, err = nuim(capsys, "zoo", "extract", str(ckpt), "--parts", "backbone,rpn", "--out", str(tmp_path / "x.pth"))
    assert code == 2 and "unknown part 'rpn'" in err and len(err.strip().splitlines()) == 1
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}}, tmp_path / "foreign.pth")
    code, _, err = nuim(capsys, "zoo", "extract", str(tmp_path / "foreign.pth"), "--preset", "mask-rcnn-r18-tiny",
                        "--out", str(tmp_path / "y.pth"))
    assert code == 2 and not (tmp_path / "y.pth").exists()
