"""mmdet-format checkpoints: file I/O (nuimcli.checkpoints: reading, writing, recognising) and the
state-dict side (nuimcli.models.state_dict: strict loading with a readable report, partial loading)."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from nuimcli.errors import UserError
from nuimcli import checkpoints as ck
from nuimcli.checkpoints import (
    load_backbone_pretrained,
    load_checkpoint,
    load_partial,
    preset_for_checkpoint,
    save_checkpoint,
)
from nuimcli.models.backbones import ResNet
from nuimcli.models.state_dict import CheckpointMismatch, load_state_dict_strict
from nuimcli.presets import load_preset


class Tiny(nn.Module):
    """A stand-in detector: mmdet-style prefixes, a BN, a parameter-free head."""

    def __init__(self, classes: int = 11) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.roi_head = nn.Linear(4, classes)

    def forward(self, x):
        return self.roi_head(self.backbone(x).mean((2, 3)))


@pytest.fixture
def preset():
    return load_preset("mask-rcnn-r18-tiny")


def _x():
    return torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- reading


def test_reads_mmdet_dict_and_passes_extras(tmp_path):
    m = Tiny()
    torch.save({"meta": {"epoch": 3, "CLASSES": ("a",)}, "state_dict": m.state_dict(), "optimizer": {"state": {}}}, tmp_path / "a.pth")
    c = load_checkpoint(tmp_path / "a.pth")
    assert list(c["state_dict"]) == list(m.state_dict())
    assert c["meta"]["epoch"] == 3 and "optimizer" in c


def test_reads_bare_state_dict_and_strips_module_prefix(tmp_path):
    m = Tiny()
    torch.save(OrderedDict((f"module.{k}", v) for k, v in m.state_dict().items()), tmp_path / "ddp.pth")
    c = load_checkpoint(tmp_path / "ddp.pth")
    assert list(c["state_dict"]) == list(m.state_dict()) and c["meta"] == {}


def test_reads_model_wrapper_of_training_scripts(tmp_path):
    m = Tiny()
    torch.save({"model": m.state_dict(), "epoch": 5}, tmp_path / "tv.pth")
    c = load_checkpoint(tmp_path / "tv.pth")
    assert list(c["state_dict"]) == list(m.state_dict()) and c["epoch"] == 5


def test_renames_old_dcn_offset_keys():
    sd = {"backbone.layer2.0.conv2_offset.weight": torch.zeros(18, 4, 3, 3), "backbone.layer2.0.conv2_offset.bias": torch.zeros(18)}
    keys = list(load_checkpoint({"state_dict": sd})["state_dict"])
    assert keys == ["backbone.layer2.0.conv2.conv_offset.weight", "backbone.layer2.0.conv2.conv_offset.bias"]


def test_meta_with_python_objects_needs_a_known_hash_or_trust(tmp_path, monkeypatch):
    from nuimcli.download import sha256_file

    m = Tiny()
    path = tmp_path / "np.pth"
    torch.save({"meta": {"seed": np.int64(3)}, "state_dict": m.state_dict()}, path)
    with pytest.raises(UserError, match=r"np\.pth: refused: .*Python objects.*--trust-checkpoint"):
        load_checkpoint(path)
    with pytest.warns(UserWarning, match="non-tensor"):
        c = load_checkpoint(path, trust=True)  # the user vouches for it
    assert int(c["meta"]["seed"]) == 3
    # a file the presets name (a released / load_from / backbone file: its SHA-256 prefix) is read as mmcv reads it
    monkeypatch.setattr(ck, "known_file_hashes", lambda: {sha256_file(path)[:8]})
    with pytest.warns(UserWarning, match="non-tensor"):
        assert int(load_checkpoint(path)["meta"]["seed"]) == 3


def test_known_file_hashes_cover_released_load_from_and_backbone_files():
    from nuimcli.checkpoints import known_file_hashes

    known = known_file_hashes()
    assert {"e99f5182", "3e542a40", "19c8e357", "5891d200"} <= known  # row 1, a COCO load_from, two backbones


def test_a_crafted_pickle_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))  # tests/evil_checkpoint.py
    from evil_checkpoint import write_evil_checkpoint

    marker = tmp_path / "pwned"
    evil = write_evil_checkpoint(tmp_path / "evil.pth", marker)
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(evil)
    assert not marker.exists()
    with pytest.warns(UserWarning):
        load_checkpoint(evil, trust=True)
    assert marker.exists()  # what --trust-checkpoint allows: the file's code ran


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "missing", "list", "no_state_dict"])
def test_bad_files_give_one_line_error_naming_the_file(tmp_path, kind):
    p = tmp_path / f"{kind}.pth"
    if kind == "garbage":
        p.write_bytes(b"this is not a checkpoint at all" * 10)
    elif kind == "truncated":
        torch.save({"state_dict": Tiny().state_dict()}, p)
        p.write_bytes(p.read_bytes()[: os.path.getsize(p) // 2])
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "list":
        torch.save([1, 2, 3], p)
    elif kind == "no_state_dict":
        torch.save({"model": 1, "epoch": 2}, p)
    with pytest.raises(UserError) as e:
        load_checkpoint(p)
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg and "Traceback" not in msg


# --------------------------------------------------------------------------- strict loading


def test_strict_load_reports_mismatch(tmp_path):
    src = Tiny(classes=81)
    sd = src.state_dict()
    sd["roi_head.extra.weight"] = torch.zeros(1)
    del sd["backbone.0.bias"]
    with pytest.raises(CheckpointMismatch) as e:
        load_state_dict_strict(Tiny(), sd, "mask-rcnn-r50-1x", source="x.pth")
    msg = str(e.value)
    assert isinstance(e.value, UserError)
    assert "x.pth" in msg and "mask-rcnn-r50-1x" in msg
    assert "1 missing, 1 unexpected, 2 shape-mismatched" in msg
    assert "backbone.0.bias" in msg and "roi_head.extra.weight" in msg
    assert "roi_head.weight file (81, 4) vs model (11, 4)" in msg
    assert len(msg.splitlines()) <= 6


def test_strict_report_lists_only_first_few_keys():
    big = nn.Sequential(*[nn.Linear(2, 2) for _ in range(20)])
    with pytest.raises(CheckpointMismatch) as e:
        load_state_dict_strict(big, {"other.weight": torch.zeros(1)}, "p")
    msg = str(e.value)
    assert "missing in file (40)" in msg and "(+35 more)" in msg


def test_strict_load_tolerates_missing_num_batches_tracked():
    src = Tiny()
    sd = {k: v for k, v in src.state_dict().items() if "num_batches_tracked" not in k}
    dst = Tiny()
    load_state_dict_strict(dst, sd, "p")
    assert torch.equal(dst.roi_head.weight, src.roi_head.weight)


# --------------------------------------------------------------------------- writing + round trip


def test_save_load_round_trip(tmp_path, preset):
    torch.manual_seed(0)
    m = Tiny().eval()
    m.backbone[1].running_mean.uniform_(-1, 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m(_x()).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "sub" / "e1.pth", m, preset, optimizer=opt, meta={"epoch": 1, "iter": 10})
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["e1.pth"]  # no temp file left
    raw = torch.load(path, weights_only=True)  # plain types only: mmdet and torch's safe loader read it
    assert set(raw) == {"meta", "state_dict", "optimizer"}
    assert raw["meta"]["nuim_preset"] == "mask-rcnn-r18-tiny" and raw["meta"]["epoch"] == 1
    assert raw["meta"]["nuim_preset_config"] == preset.to_dict()
    assert raw["meta"]["CLASSES"] == tuple(preset.data.classes)
    assert list(raw["state_dict"]) == list(m.state_dict())
    c = load_checkpoint(path)
    m2 = Tiny().eval()
    load_state_dict_strict(m2, c["state_dict"], preset.name, source=str(path))
    with torch.no_grad():
        assert torch.equal(m(_x()), m2(_x()))
    opt2 = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(c["optimizer"])


def test_save_extra_cannot_overwrite(tmp_path, preset):
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "x.pth", Tiny(), preset, extra={"state_dict": 1})


def test_save_is_atomic_on_failure(tmp_path, preset, monkeypatch):
    target = tmp_path / "c.pth"
    target.write_bytes(b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(target, Tiny(), preset)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["c.pth"]


# --------------------------------------------------------------------------- recognising


def test_preset_from_our_meta(tmp_path, preset):
    p = save_checkpoint(tmp_path / "ours.pth", Tiny(), preset)
    assert preset_for_checkpoint(p).to_dict() == preset.to_dict()


def test_preset_from_our_meta_keeps_overrides(tmp_path):
    custom = load_preset("mask-rcnn-r18-tiny", ["model.roi.score_thr=0.3"])
    p = save_checkpoint(tmp_path / "ours.pth", Tiny(), custom)
    assert preset_for_checkpoint(p).model.roi.score_thr == 0.3


def test_explicit_preset_wins(tmp_path, preset):
    p = save_checkpoint(tmp_path / "ours.pth", Tiny(), preset)
    assert preset_for_checkpoint(p, "mask-rcnn-r50-caffe-1x").name == "mask-rcnn-r50-caffe-1x"


def test_released_file_recognised_by_hash(tmp_path, monkeypatch):
    p = tmp_path / "some_name.pth"
    torch.save({"meta": {}, "state_dict": Tiny().state_dict()}, p)
    real = ck.sha256_file(p)
    import hashlib

    assert real == hashlib.sha256(p.read_bytes()).hexdigest()
    monkeypatch.setattr(ck, "sha256_file", lambda path: "e99f5182" + "0" * 56)  # row 1's released hash
    assert preset_for_checkpoint(p).name == "mask-rcnn-r50-1x"
    monkeypatch.setattr(ck, "sha256_file", lambda path: "661a992e" + "0" * 56)  # row 4: caffe, same keys as row 1
    assert preset_for_checkpoint(p).name == "mask-rcnn-r50-caffe-coco3x-1x"


def test_unknown_file_needs_preset(tmp_path):
    p = tmp_path / "foreign.pth"
    torch.save({"meta": {"CLASSES": ("car",)}, "state_dict": Tiny().state_dict()}, p)
    with pytest.raises(UserError, match="--preset"):
        preset_for_checkpoint(p)


# --------------------------------------------------------------------------- partial / pretrained


def test_load_partial_skips_shape_mismatches(caplog):
    src, dst = Tiny(classes=81), Tiny(classes=11)
    before = dst.roi_head.weight.clone()
    with caplog.at_level(logging.WARNING):
        report = load_partial(dst, {"state_dict": src.state_dict()})
    assert [k for k, _, _ in report.mismatched] == ["roi_head.weight", "roi_head.bias"]
    assert report.skipped == ["roi_head.weight", "roi_head.bias"]
    assert torch.equal(dst.roi_head.weight, before)
    assert torch.equal(dst.backbone[0].weight, src.backbone[0].weight)
    assert "shape-mismatched" in caplog.text


def test_load_partial_from_file_with_missing_and_unexpected(tmp_path):
    src = Tiny()
    sd = src.state_dict()
    sd.pop("roi_head.bias")
    sd["neck.x"] = torch.zeros(2)
    torch.save({"state_dict": sd}, tmp_path / "p.pth")
    report = load_partial(Tiny(), tmp_path / "p.pth")
    assert report.missing == ["roi_head.bias"] and report.unexpected == ["neck.x"] and not report.mismatched


@pytest.mark.parametrize("wrapped", [False, True])
def test_backbone_pretrained_from_torchvision_file(tmp_path, wrapped):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    sd = {k: v for k, v in tv.state_dict().items() if "num_batches_tracked" not in k}  # old torchvision files lack them
    torch.save({"state_dict": sd} if wrapped else sd, tmp_path / "r18.pth")
    net = ResNet(depth=18)
    report = load_backbone_pretrained(net, tmp_path / "r18.pth")
    assert report.ok and report.ignored == ["fc.weight", "fc.bias"]
    assert torch.equal(net.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)


def test_backbone_pretrained_from_detector_file_and_report(tmp_path):
    src = ResNet(depth=18)
    sd = OrderedDict((f"backbone.{k}", v) for k, v in src.state_dict().items())
    sd["neck.lateral_convs.0.conv.weight"] = torch.zeros(1)
    sd["backbone.layer4.1.bn2.weight"] = torch.zeros(3)  # wrong shape -> skipped
    net = ResNet(depth=18)
    report = load_backbone_pretrained(net, {"state_dict": sd})
    assert [k for k, _, _ in report.mismatched] == ["layer4.1.bn2.weight"]
    assert report.unexpected == [] and report.missing == []
    assert torch.equal(net.conv1.weight, src.conv1.weight)
