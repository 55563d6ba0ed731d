"""The exported graph in float16 (``nuim export --half``), run on the CPU.

The float16 file is only written on CUDA (``--half`` is refused on the CPU), but the graph itself
runs anywhere: these tests keep the float16 path free of dtype mismatches (a float32 input into
float16 convolutions, float16 scores with float32 boxes into NMS), which no GPU-less CI would
otherwise see. How close float16 comes to float32 is a GPU measurement (bench/gpu_check.py).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from nuimcli.engine.export import _prepare_for_export, build_source_model, sample_image
from nuimcli.export.graph import ExportGraph
from nuimcli.export.writers import trace


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
