"""`nuimcli.engine.export.export_model` on tiny random-weights versions of the three families:
every family to every format passes its own check, the exported file predicts what the
PyTorch model predicts through `load_detector`, carries its metadata, is recognised by content;
a corrupted export is exit 1 with no file; bad input and missing onnxruntime are one-line errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from nuimcli import CLASSES
from nuimcli.checkpoints import save_checkpoint
from nuimcli.engine.export import export_model, parse_size, second_check_size
from nuimcli.errors import RunFailed, UserError
from nuimcli.export.formats import ONNX, TORCHSCRIPT, detect_format, require_onnx
from nuimcli.export.verify import FLOAT32
from nuimcli.models.build import build_model
from nuimcli.presets import load_preset
from nuimcli.testing.random_weights import calibrated_model, synthetic_image

# Tiny versions of the three detectors (as tests/models/test_detector.py), small input.
TINY = ["model.backbone.depth=18", "model.fpn_channels=64", "model.rpn.feat_channels=64",
        "model.roi.fc_out_channels=128", "model.rpn.test_nms_pre=300", "model.rpn.test_max_per_img=200",
        "data.test_scale=[256,144]"]
PRESETS = {"mask": "mask-rcnn-r50-1x", "cascade": "cascade-mask-rcnn-r50-1x", "htc": "htc-r50-1x",
           "dcn": "htc-x101-64x4d-dcn-coco20e-20e"}
# the DCN row needs Bottleneck blocks: a plain ResNet-50 with DCN in c3-c5
EXTRA = {"dcn": ["model.backbone.depth=50", "model.backbone.groups=1", "model.backbone.base_width=64"]}
SIZE = (256, 144)


def tiny_checkpoint(kind: str, path) -> str:
    """A calibrated random-weights tiny model of ``kind`` saved as a self-describing checkpoint."""
    p = load_preset(PRESETS[kind], TINY + EXTRA.get(kind, []))
    save_checkpoint(path, calibrated_model(p, *SIZE), p)
    return str(path)


class _Checkpoints(dict):
    """kind -> checkpoint path, each built on first use (the DCN one only by its slow test)."""

    def __init__(self, root) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, kind: str) -> str:
        self[kind] = tiny_checkpoint(kind, self.root / f"{kind}.pth")
        return self[kind]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return _Checkpoints(tmp_path_factory.mktemp("ckpt"))


def _same(a, b) -> None:
    """Two Prediction lists agree within the export tolerances (after one-to-one matching)."""
    from nuimcli.export.verify import _match

    for p, q in zip(a, b):
        assert len(p) == len(q) > 0
        idx = _match(p.boxes, p.labels, q.boxes, q.labels)
        assert (idx >= 0).all()
        assert np.abs(q.boxes[idx] - p.boxes).max() <= FLOAT32.box_px
        assert np.abs(q.scores[idx] - p.scores).max() <= FLOAT32.score
        inter = (p.masks & q.masks[idx]).reshape(len(p), -1).sum(1)
        union = (p.masks | q.masks[idx]).reshape(len(p), -1).sum(1)
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        assert iou.min() >= FLOAT32.mask_iou
        if p.semantic is not None:
            assert q.semantic is not None and (p.semantic == q.semantic).mean() > 0.99


@pytest.mark.parametrize("kind, fmt", [(k, f) for k in ("mask", "cascade", "htc") for f in (TORCHSCRIPT, ONNX)]
                         + [pytest.param("dcn", TORCHSCRIPT, marks=pytest.mark.slow)])
def test_export_verifies_and_predicts_like_pytorch(kind, fmt, checkpoints, tmp_path):
    out = tmp_path / "model.bin"  # recognised by content, not suffix
    res = export_model(fmt=fmt, out=out, model=checkpoints[kind], input_size=SIZE, threads=2)
    c = res.comparison
    assert c.ok and c.detections_ref == c.detections_exported > 0, c
    assert out.is_file() and detect_format(out) == fmt
    assert detect_format(checkpoints[kind]) is None
    m = res.meta
    assert m.preset == PRESETS[kind] and m.classes == list(CLASSES) and m.input_size == list(SIZE)
    cfg = load_preset(PRESETS[kind]).model.roi
    assert (m.score_thr, m.mask_thr_binary) == (cfg.score_thr, cfg.mask_thr_binary) and m.score_thr > 0
    assert ("semantic_logits" in m.outputs) == (kind in ("htc", "dcn"))
    from nuimcli.engine.resolve import load_detector

    exported = load_detector(str(out))
    assert exported.meta == m  # read back from the file itself
    img = synthetic_image(384, 216, 1)  # resized to the input size outside the graph
    _same(load_detector(checkpoints[kind]).predict([img]), exported.predict([img]))


@pytest.mark.parametrize("kind, fmt", [(k, ONNX) for k in ("mask", "cascade", "htc")] + [("mask", TORCHSCRIPT)])
def test_dynamic_export_is_checked_at_two_sizes_and_predicts_any_aspect_ratio(kind, fmt, checkpoints, tmp_path):
    out = tmp_path / "model.bin"
    res = export_model(fmt=fmt, out=out, model=checkpoints[kind], dynamic=True, threads=2)
    sizes = [size for size, _ in res.checks]
    # traced at the test scale, checked there and where a 4:3 image lands
    assert sizes == [SIZE, (192, 144)] and all(c.ok and c.detections_ref > 0 for _, c in res.checks)
    m = res.meta
    assert m.dynamic and m.test_scale == [256, 144] and m.extra["checked_sizes"] == [[256, 144], [192, 144]]
    assert res.to_dict()["dynamic"] and len(res.to_dict()["checks"]) == 2
    from nuimcli.engine.resolve import load_detector

    exported = load_detector(str(out))
    assert exported.meta.dynamic
    # portrait, 4:3 and a height that needs padding: resized for the test scale, run as they come
    images = [synthetic_image(216, 384, 2), synthetic_image(400, 300, 4), synthetic_image(500, 170, 5)]
    _same(load_detector(checkpoints[kind]).predict(images), exported.predict(images))


def test_a_fixed_size_file_refuses_another_size_and_says_how_to_get_one(checkpoints, tmp_path):
    out = tmp_path / "m.onnx"
    export_model(fmt=ONNX, out=out, model=checkpoints["mask"], input_size=SIZE, threads=2)
    from nuimcli.engine.resolve import load_detector

    with pytest.raises(UserError, match=r"exported for 256x144 input, got an image resized to 192x144 .*--dynamic"):
        load_detector(str(out)).predict([synthetic_image(400, 300, 4)])


def test_mismatch_is_exit_1_and_writes_nothing(checkpoints, tmp_path, monkeypatch):
    import nuimcli.engine.export as ex

    real = ex._run_exported

    def corrupt(*a, **k):
        boxes, *rest = real(*a, **k)
        return (boxes + 0.5, *rest)

    monkeypatch.setattr(ex, "_run_exported", corrupt)
    out = tmp_path / "m.pt"
    with pytest.raises(RunFailed, match="boxes differ by 0.5"):
        export_model(fmt=TORCHSCRIPT, out=out, model=checkpoints["mask"], input_size=SIZE, threads=2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(fmt="tensorrt"), "--format 'tensorrt'"),
    (dict(fmt=TORCHSCRIPT, dynamic=True, input_size=SIZE), "exclude each other"),
    (dict(fmt=TORCHSCRIPT, half=True), "needs a CUDA device"),
    (dict(fmt=TORCHSCRIPT), "give MODEL"),
])
def test_bad_input_is_one_line(kwargs, message, tmp_path):
    with pytest.raises(UserError, match=message) as e:
        export_model(out=tmp_path / "x", **kwargs)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_the_second_check_size_has_another_aspect_ratio():
    assert second_check_size((1600, 900), 1600, 900) == (1200, 900)  # a 4:3 camera image
    assert second_check_size((1600, 900), 1200, 900) == (1600, 900)  # traced at 4:3: then 16:9
    assert second_check_size((256, 144), 256, 144) == (192, 144)


@pytest.mark.parametrize("text", ["320", "axb", "0x10", "-3x4"])
def test_parse_size(text):
    assert parse_size("1600X900") == (1600, 900)
    with pytest.raises(UserError, match="--input-size"):
        parse_size(text)


def test_dcn_to_onnx_is_a_one_line_error(tmp_path):
    """Checked before tracing: torch.onnx has no symbolic for torchvision's deform_conv2d."""
    from nuimcli.export.formats import ExportMeta
    from nuimcli.export.writers import write_onnx

    p = load_preset(PRESETS["dcn"], TINY + EXTRA["dcn"])
    det = build_model(p).eval()
    meta = ExportMeta(preset=p.name, classes=list(CLASSES), score_thr=0.05, mask_thr_binary=0.5, test_scale=[64, 64],
                      input_size=[64, 64], size_divisor=32, outputs=["boxes"])
    with pytest.raises(UserError, match="deformable convolutions .* cannot be exported to ONNX") as e:
        write_onnx(det, torch.zeros(64, 64, 3, dtype=torch.uint8), meta, tmp_path / "x")
    assert "\n" not in str(e.value) and not (tmp_path / "x").exists()


def test_missing_onnxruntime_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r'onnxruntime is missing.*pip install "nuimcli\[export\]"'):
        require_onnx("--format onnx")
    with pytest.raises(UserError, match="nuimcli\\[export\\]"):
        export_model(fmt=ONNX, out=tmp_path / "x", random_weights="mask-rcnn-r18-tiny")
