"""The exported graph: traced at one size, it follows the size of the image it is given
(``nuim export --dynamic``), and in float16 (``nuim export --half``) it runs on the CPU.

The float16 file is only written on CUDA (``--half`` is refused on the CPU), but the graph itself
runs anywhere: these tests keep the float16 path free of dtype mismatches (a float32 input into
float16 convolutions, float16 scores with float32 boxes into NMS), which no GPU-less CI would
otherwise see. How close float16 comes to float32 is a GPU measurement (bench/gpu_check.py).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nuimcli.engine.export import _prepare_for_export, build_source_model, sample_image
from nuimcli.export.graph import ExportGraph
from nuimcli.export.writers import trace
from nuimcli.models.roi_heads.base import per_image
from nuimcli.presets import load_preset
from nuimcli.testing.random_weights import calibrated_model, synthetic_image

# small versions of the three families (as tests/engine/test_export.py); nms_pre 500: P4 has
# 432 anchors at 256x144 (all kept) and 720 at 300x170 (the top 500), so the traced RPN must not
# freeze the traced size's "keep all"
SMALL = ["model.backbone.depth=18", "model.fpn_channels=64", "model.rpn.feat_channels=64",
         "model.roi.fc_out_channels=128", "model.rpn.test_nms_pre=500", "data.test_scale=[256,144]"]


@pytest.mark.parametrize("preset", ["mask-rcnn-r50-1x", "cascade-mask-rcnn-r50-1x", "htc-r50-1x"])
def test_a_graph_traced_at_one_size_predicts_at_others_exactly_as_the_model(preset):
    """Padding, anchors, the RPN's top-k and the clip windows follow the input's size in the
    traced graph: at sizes it was not traced at (other aspect ratios, heights needing padding,
    portrait) TorchScript gives the PyTorch model's outputs bit for bit."""
    det = _prepare_for_export(calibrated_model(load_preset(preset, SMALL), 256, 144))
    graph = ExportGraph(det).eval()
    traced = trace(graph, torch.from_numpy(synthetic_image(256, 144, 0)))
    for w, h in [(192, 144), (300, 170), (144, 256)]:
        image = torch.from_numpy(synthetic_image(w, h, 3))
        with torch.no_grad():
            ref, got = graph(image), traced(image)
        assert len(ref[0]) > 0
        # clipped to this size, not the traced one
        assert float(got[0][:, 0::2].max()) <= w and float(got[0][:, 1::2].max()) <= h
        for a, b in zip(ref, got):
            assert a.shape == b.shape
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        if graph.with_semantic:  # stride 8 of the padded size
            assert tuple(got[4].shape[1:]) == (-(-h // 32) * 4, -(-w // 32) * 4)


def test_per_image_keeps_a_traced_graph_free_of_the_example_rows_count():
    """One image takes all its rows without a split: a traced ``split([n])`` would freeze the
    example's proposal count, and an image with another count would fail."""
    def rows_times_two(t):
        rows = t[t > 0]
        return per_image(rows, [int(rows.size(0))])[0] * 2

    with torch.no_grad():
        traced = trace(rows_times_two, torch.tensor([1.0, -1.0, 2.0]))
    assert traced(torch.tensor([1.0, 2.0, 3.0, -4.0])).tolist() == [2.0, 4.0, 6.0]
    a, b = per_image(torch.arange(5), [2, 3])
    assert a.tolist() == [0, 1] and b.tolist() == [2, 3, 4]


def test_a_float16_graph_runs_and_traces_with_the_outputs_of_the_float32_one():
    w, h = 192, 108
    det = _prepare_for_export(build_source_model(None, None, "mask-rcnn-r18-tiny", calib_size=(w, h)))
    image = torch.from_numpy(sample_image(w, h, None))
    with torch.no_grad():
        ref = ExportGraph(det).eval()(image)
        half_graph = ExportGraph(copy.deepcopy(det).half()).eval()
        got = half_graph(image)
        traced = trace(half_graph, image)(image)
    assert len(got) == len(ref) == 4
    boxes, scores, labels, masks = got
    assert labels.dtype == torch.int64 and boxes.shape[1] == 4 and masks.shape[1:] == (28, 28)
    assert len(boxes) == len(scores) == len(labels) == len(masks) > 0
    assert torch.isfinite(boxes.float()).all() and torch.isfinite(scores.float()).all()
    for a, b in zip(got, traced):
        np.testing.assert_array_equal(a.float().numpy() if a.is_floating_point() else a.numpy(),
                                      b.float().numpy() if b.is_floating_point() else b.numpy())
