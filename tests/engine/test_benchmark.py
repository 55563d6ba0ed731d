"""nuim benchmark's engine: FLOP counting against hand-computed values, the result document."""

from __future__ import annotations

import pytest
import torch

from nuimcli.engine.benchmark import benchmark, count_flops, parse_size
from nuimcli.errors import UserError
from nuimcli.models.build import build_model
from nuimcli.presets import load_preset


def test_flops_of_the_tiny_stem_conv_match_the_hand_count():
    model = build_model(load_preset("mask-rcnn-r18-tiny")).eval()
    conv = model.backbone.conv1  # 7x7, stride 2, padding 3, 3 -> 64 channels, no bias
    x = torch.randn(1, 3, 64, 96)
    # output 32 x 48; each output value: 3*7*7 multiply-adds = 2 FLOPs each
    want = 2 * (64 * 32 * 48) * (3 * 7 * 7)
    assert count_flops(lambda: conv(x)) == want


def test_flops_of_a_linear_layer_and_what_is_not_counted():
    fc = torch.nn.Linear(10, 5)
    assert count_flops(lambda: fc(torch.randn(4, 10))) == 2 * 4 * 10 * 5
    from torchvision.ops import nms, roi_align

    boxes = torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 5]])
    # torchvision's ops are invisible to torch's counter: the help and the output say so
    assert count_flops(lambda: nms(boxes, torch.tensor([0.9, 0.8]), 0.5)) == 0
    assert count_flops(lambda: roi_align(torch.randn(1, 2, 8, 8), [boxes], 2)) == 0


@pytest.mark.parametrize("text, want", [("1600x900", (1600, 900)), ("64X48", (64, 48))])
def test_parse_size(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["1600", "axb", "16x900", "1600x900x3", "-64x48"])
def test_parse_size_rejects(text):
    with pytest.raises(UserError, match="WIDTHxHEIGHT"):
        parse_size(text)


def test_benchmark_of_the_tiny_preset():
    res = benchmark(random_weights="mask-rcnn-r18-tiny", size="160x96", device="cpu", repeat=2, warmup=1, threads=1)
    doc = res.to_dict()
    assert doc["preset"] == "mask-rcnn-r18-tiny" and doc["mode"] == "fast" and doc["dtype"] == "float32"
    assert (doc["width"], doc["height"], doc["threads"]) == (160, 96, 1)
    model = build_model(load_preset("mask-rcnn-r18-tiny"))
    assert doc["parameters"] == sum(p.numel() for p in model.parameters()) + _folded_biases(model)
    assert doc["flops"] > count_flops(lambda: model.backbone(torch.zeros(1, 3, 96, 160))) > 0
    assert doc["multiply_adds"] * 2 == doc["flops"]
    assert len(doc["latency_ms"]) == 2 and doc["latency_ms_median"] > 0
    assert doc["images_per_s"] == pytest.approx(1000 / doc["latency_ms_median"], rel=1e-2)
    assert doc["peak_memory_kind"] == "cpu_peak_rss_delta" and "roi_align" in doc["flop_note"]


def _folded_biases(model) -> int:
    """Each folded BatchNorm leaves a bias of its width on the conv before it (and drops 2 x width)."""
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return -sum(m.num_features for m in bns)


def test_benchmark_needs_exactly_one_model():
    with pytest.raises(UserError, match="not both or neither"):
        benchmark()
    with pytest.raises(UserError, match="not both or neither"):
        benchmark("some.pth", random_weights="mask-rcnn-r18-tiny")
