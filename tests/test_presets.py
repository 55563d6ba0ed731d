"""Presets: every results-table row is there, validated, and names its state-dict manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nuimcli import CLASSES
from nuimcli.errors import UserError
from nuimcli.presets import list_presets, load_preset, presets_dir

FIXTURES = Path(__file__).parent / "fixtures"

ROWS = {
    1: "mask-rcnn-r50-1x", 2: "mask-rcnn-r50-coco2x-1x", 3: "mask-rcnn-r50-caffe-1x",
    4: "mask-rcnn-r50-caffe-coco3x-1x", 5: "mask-rcnn-r50-caffe-coco3x-20e", 6: "mask-rcnn-r101-1x",
    7: "mask-rcnn-x101-32x4d-1x", 8: "cascade-mask-rcnn-r50-1x", 9: "cascade-mask-rcnn-r50-coco20e-1x",
    10: "cascade-mask-rcnn-r50-coco20e-20e", 11: "cascade-mask-rcnn-r101-1x",
    12: "cascade-mask-rcnn-x101-32x4d-1x", 13: "htc-r50-nosemantic-1x", 14: "htc-r50-1x",
    15: "htc-r50-coco20e-1x", 16: "htc-r50-coco20e-20e", 17: "htc-x101-64x4d-dcn-coco20e-20e",
}


def test_every_row_has_a_preset_in_table_order():
    names = list_presets()
    assert names[:17] == [ROWS[i] for i in range(1, 18)]
    assert any("tiny" in n for n in names[17:])
    for row, name in ROWS.items():
        p = load_preset(name)
        assert p.release is not None and p.release.row == row


@pytest.mark.parametrize("name", list(ROWS.values()))
def test_row_names_an_existing_manifest(name):
    p = load_preset(name)
    assert p.state_dict_manifest is not None
    assert (FIXTURES / "manifests" / f"{p.state_dict_manifest}.json").exists()


def test_manifests_are_all_used():
    used = {load_preset(n).state_dict_manifest for n in ROWS.values()}
    on_disk = {p.stem for p in (FIXTURES / "manifests").glob("*.json")}
    assert used == on_disk


def test_released_rows_have_consistent_urls_and_hashes():
    for name in ROWS.values():
        r = load_preset(name).release
        if r.checkpoint_url is None:
            assert r.row in (3, 13, 14)
            assert r.hash8 is None
            continue
        assert r.checkpoint_url.startswith(
            "https://download.openmmlab.com/mmdetection3d/v0.1.0_models/nuimages_semseg/" + r.config + "/" + r.config + "_"
        )
        assert r.checkpoint_url.endswith(f"-{r.hash8}.pth")
        assert len(r.hash8) == 8 and int(r.hash8, 16) >= 0
        assert r.log_url == r.checkpoint_url.replace(f"-{r.hash8}.pth", ".log.json")
        assert r.box_ap is not None and r.mask_ap is not None and r.mem_gb is not None


def test_row_specific_settings_from_the_reference_configs():
    caffe = load_preset("mask-rcnn-r50-caffe-coco3x-20e")
    assert caffe.model.backbone.style == "caffe"
    assert caffe.model.backbone.norm_requires_grad is False
    assert caffe.data.to_rgb is False and caffe.data.std == [1.0, 1.0, 1.0]
    assert caffe.schedule.epochs == 20 and caffe.schedule.lr_steps == [16, 19]
    assert caffe.init.load_from and "mstrain-poly_3x_coco" in caffe.init.load_from

    cascade = load_preset("cascade-mask-rcnn-r50-1x")
    assert cascade.model.roi.num_stages == 3 and cascade.model.roi.reg_class_agnostic
    assert cascade.model.rpn.allowed_border == 0 and cascade.model.rpn.loss_bbox == "smooth_l1"
    assert cascade.model.roi.match_low_quality is False
    assert cascade.model.roi.target_stds[2] == [0.033, 0.033, 0.067, 0.067]

    htc = load_preset("htc-r50-coco20e-20e")
    assert htc.model.detector == "htc" and htc.model.semantic.enabled
    assert htc.model.roi.score_thr == 0.001 and htc.model.roi.match_low_quality is True
    assert load_preset("htc-r50-nosemantic-1x").model.semantic.enabled is False

    dcn = load_preset("htc-x101-64x4d-dcn-coco20e-20e")
    assert dcn.model.backbone.groups == 64 and dcn.model.backbone.dcn_stages == [False, True, True, True]
    assert dcn.data.samples_per_gpu == 1

    base = load_preset("mask-rcnn-r50-1x")
    assert base.data.classes == list(CLASSES)
    assert base.model.rpn.allowed_border == -1 and base.model.roi.score_thr == 0.05
    assert base.init.pretrained == "torchvision://resnet50" and base.init.load_from is None


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(UserError, match="did you mean 'mask-rcnn-r50-1x'"):
        load_preset("mask-rcnn-r50-lx")


def test_unknown_key_and_wrong_type_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: _mask-rcnn\nmodel:\n  backbone:\n    depht: 50\n")
    with pytest.raises(UserError, match=r"bad\.yaml: model\.backbone\.depht: unknown key \(did you mean 'depth'\?\)"):
        load_preset(str(bad))
    bad.write_text("base: _mask-rcnn\nschedule:\n  lr: fast\n")
    with pytest.raises(UserError, match=r"bad\.yaml: schedule\.lr: expected a number"):
        load_preset(str(bad))
    bad.write_text("base: _mask-rcnn\nmodel:\n  detector: yolo\n")
    with pytest.raises(UserError, match=r"model\.detector"):
        load_preset(str(bad))


def test_overrides_apply_and_are_validated():
    p = load_preset("mask-rcnn-r50-1x", ["schedule.lr=0.01", "data.train_scales=[[640,360],[800,450]]"])
    assert p.schedule.lr == 0.01 and p.data.train_scales == [[640, 360], [800, 450]]
    with pytest.raises(UserError, match="unknown preset key 'schedule.lrr'"):
        load_preset("mask-rcnn-r50-1x", ["schedule.lrr=0.01"])
    with pytest.raises(UserError, match="expected an integer"):
        load_preset("mask-rcnn-r50-1x", ["schedule.epochs=many"])
    with pytest.raises(UserError, match="key=value"):
        load_preset("mask-rcnn-r50-1x", ["schedule.lr"])


def test_presets_round_trip_through_a_plain_dict():
    from nuimcli.presets import preset_from_dict

    p = load_preset("htc-r50-coco20e-1x")
    assert preset_from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_presets_are_found_after_a_non_editable_install(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(repo)],
        check=True, capture_output=True,
    )
    code = "import nuimcli.presets as p; print(p.presets_dir()); print(len(p.list_presets()))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": ""},
        check=True, capture_output=True, text=True,
    ).stdout.split()
    assert out[0].startswith(str(target))
    assert int(out[1]) == 18


@pytest.mark.parametrize("text, lr", [("1e-4", 1e-4), ("1e6", 1e6), ("1E-3", 1e-3), ("1.0e4", 1e4), ("2.5e-2", 0.025),
                                      ("0.01", 0.01), ("3", 3.0), ("+1e-4", 1e-4), ("1_0.5", 10.5), (".5", 0.5)])
def test_every_python_float_form_is_a_number(text, lr, tmp_path):
    # PyYAML (YAML 1.1) reads 1e-4, 1e6, 1E-3 and 1.0e4 as strings: they must still be numbers.
    p = load_preset("mask-rcnn-r18-tiny", [f"schedule.lr={text}", f"data.mean=[{text}, 1, 2]"])
    assert p.schedule.lr == lr and isinstance(p.schedule.lr, float) and p.data.mean == [lr, 1.0, 2.0]
    f = tmp_path / "p.yaml"
    f.write_text(f"base: mask-rcnn-r18-tiny\nschedule:\n  lr: {text}\n  grad_clip: {text}\n")
    q = load_preset(str(f))
    assert q.schedule.lr == lr and q.schedule.grad_clip == lr


def test_integer_fields_stay_integers():
    p = load_preset("mask-rcnn-r18-tiny", ["schedule.epochs=12", "schedule.warmup_iters=1e3", "model.roi.max_per_img=100"])
    assert p.schedule.epochs == 12 and p.schedule.warmup_iters == 1000 and p.model.roi.max_per_img == 100
    assert all(type(v) is int for v in (p.schedule.epochs, p.schedule.warmup_iters, p.model.roi.max_per_img))
    with pytest.raises(UserError, match=r"schedule\.epochs: expected an integer, got 12\.5"):
        load_preset("mask-rcnn-r18-tiny", ["schedule.epochs=12.5"])


@pytest.mark.parametrize("text, message", [("nan", "expected a finite number, got 'nan'"),
                                           ("inf", "expected a finite number, got 'inf'"),
                                           ("fast", "expected a number, got 'fast'"),
                                           ("true", "expected a number, got True")])
def test_what_is_not_a_number_is_named(text, message):
    with pytest.raises(UserError, match=rf"schedule\.lr: {message}"):
        load_preset("mask-rcnn-r18-tiny", [f"schedule.lr={text}"])


def _leaf_paths(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in d.items():
        out += _leaf_paths(v, prefix + (k,)) if isinstance(v, dict) and v else [prefix + (k,)]
    return out


def _without(d: dict, path: tuple) -> dict:
    import copy

    out = copy.deepcopy(d)
    node = out
    for k in path[:-1]:
        node = node[k]
    del node[path[-1]]
    return out


def _resolved_or_none(raw: dict):
    from nuimcli.presets import preset_from_dict

    try:
        return preset_from_dict(raw).to_dict()
    except UserError:
        return None


@pytest.mark.parametrize("stem", sorted(p.stem for p in Path(presets_dir()).glob("*.yaml")))
def test_no_preset_file_restates_what_it_inherits(stem):
    """Defaults live once: a key whose removal leaves the resolved preset unchanged is a copy of
    a dataclass default or of the base, and would hide a later change of either. (The release
    block is exempt: it is the row's data, written in full.)"""
    from nuimcli.presets import _deep_merge, _preset_files, _raw_preset, _read_yaml

    files = _preset_files()
    own = _read_yaml(files[stem])
    base = own.pop("base", None)
    inherited = {}
    if base is not None:
        inherited, _ = _raw_preset(base, files)
        inherited.pop("description", None)
    inherited["name"] = stem
    whole = _resolved_or_none(_deep_merge(inherited, own))
    assert whole is not None
    restated = [".".join(path) for path in _leaf_paths(own)
                if path[0] not in ("release", "name", "description")
                and _resolved_or_none(_deep_merge(inherited, _without(own, path))) == whole]
    assert not restated, f"presets/{stem}.yaml restates inherited values: {restated}"


def test_presets_saved_with_the_old_arch_key_still_load(tmp_path):
    """Checkpoints and work folders written before the rename store ``arch``: it reads as
    ``state_dict_manifest``."""
    from nuimcli.presets import preset_from_dict

    p = load_preset("mask-rcnn-r50-1x")
    old = p.to_dict()
    old["arch"] = old.pop("state_dict_manifest")
    assert preset_from_dict(old) == p
    saved = tmp_path / "preset.yaml"
    saved.write_text(yaml.safe_dump(old, sort_keys=False))
    assert load_preset(str(saved)).state_dict_manifest == "mask-rcnn_r50_fpn_1x_nuim"


def test_the_detector_table_drives_validation():
    from nuimcli.presets import DETECTORS

    assert list(DETECTORS) == ["mask_rcnn", "cascade_mask_rcnn", "htc"]
    with pytest.raises(UserError, match="must be one of mask_rcnn, cascade_mask_rcnn, htc, got 'yolo'"):
        load_preset("mask-rcnn-r50-1x", ["model.detector=yolo"])
    with pytest.raises(UserError, match="only HTC has a semantic head"):
        load_preset("cascade-mask-rcnn-r50-1x", ["model.semantic.enabled=true"])
    with pytest.raises(UserError, match="model.roi.num_stages: Mask R-CNN has one RoI stage, got 3"):
        load_preset("mask-rcnn-r50-1x", ["model.roi.num_stages=3", "model.roi.stage_iou_thrs=[0.5,0.6,0.7]",
                                         "model.roi.stage_loss_weights=[1,1,1]", "model.roi.target_stds=[[1,1,1,1],[1,1,1,1],[1,1,1,1]]"])
    for name in list_presets():
        assert load_preset(name).model.detector in DETECTORS


@pytest.mark.parametrize("name, backbone, model", [
    ("mask-rcnn-r50-1x", "R-50-FPN", "Mask R-CNN R-50-FPN"),
    ("mask-rcnn-r50-caffe-1x", "R-50-caffe-FPN", "Mask R-CNN R-50-caffe-FPN"),
    ("cascade-mask-rcnn-x101-32x4d-1x", "X-101-32x4d-FPN", "Cascade Mask R-CNN X-101-32x4d-FPN"),
    ("htc-r50-nosemantic-1x", "R-50-FPN", "HTC R-50-FPN (no semantic)"),
    ("htc-x101-64x4d-dcn-coco20e-20e", "X-101-64x4d-FPN DCN", "HTC X-101-64x4d-FPN DCN"),
])
def test_one_display_name_per_backbone_and_model(name, backbone, model):
    """The backbone's name is formatted in one place; ``nuim presets`` and the zoo both show it."""
    from nuimcli import zoo
    from nuimcli.cli.presets_cmd import preset_summary

    p = load_preset(name)
    assert p.model.backbone.display_name == backbone and p.model.display_name == model
    assert preset_summary(p)["backbone"] == backbone and zoo.architecture(p) == model
