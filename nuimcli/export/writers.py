"""Writing an :class:`~nuimcli.export.graph.ExportGraph` to a file of one format.

TorchScript: ``torch.jit.trace`` on one example image, saved with the metadata as the extra
file ``nuimcli.json``. ONNX: the TorchScript-based exporter (``torch.onnx.export(...,
dynamo=False)``), whose symbolics map torchvision's ``nms`` and ``roi_align`` to ONNX
``NonMaxSuppression`` / ``RoiAlign``; the metadata goes into ``metadata_props``.

The traced graph computes its padding, anchors and clip windows from the input's size (the
model code keeps sizes symbolic while tracing), so the TorchScript file follows any size; an
ONNX file does only when exported with ``dynamic`` (height and width as dynamic axes), else
onnxruntime holds it to the traced size. Which sizes a file is *checked* at is the exporter's
business (:mod:`nuimcli.engine.export`).
"""

from __future__ import annotations

import io
import os
import warnings

import torch

from nuimcli.errors import UserError
from nuimcli.export.formats import META_KEY, TORCHSCRIPT_EXTRA, ExportMeta
from nuimcli.export.graph import INPUT_NAME

#: ONNX opset: 17 has everything the graph uses (RoiAlign with half_pixel, NonMaxSuppression).
OPSET = 17


def trace(graph: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of the graph on one example image (no gradient)."""
    # the tracer warns about every Python value frozen into the graph (branches on detection
    # counts, constants): every export is verified afterwards, at each size it promises
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.trace(graph, (example,), check_trace=False)


def write_torchscript(graph: torch.nn.Module, example: torch.Tensor, meta: ExportMeta,
                      path: str | os.PathLike) -> None:
    """Trace ``graph`` on ``example`` and save it with ``meta`` to ``path``."""
    traced = trace(graph, example)
    with warnings.catch_warnings():
        # torch >= 2.10 marks torch.jit deprecated; torch.export cannot capture this graph (NMS's
        # data-dependent detection count), so TorchScript stays the format that works
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_EXTRA: meta.to_json()})


def _uses_deform_conv(graph: torch.nn.Module) -> bool:
    from nuimcli.models.backbones import DeformConv2d

    return any(isinstance(m, DeformConv2d) for m in graph.modules())


def write_onnx(graph: torch.nn.Module, example: torch.Tensor, meta: ExportMeta, path: str | os.PathLike,
               dynamic: bool = False) -> None:
    """Export ``graph`` to ONNX at ``example``'s size (any size with ``dynamic``: the image's
    height and width become the dynamic axes ``height`` / ``width``), with ``meta`` in
    ``metadata_props``."""
    import onnx

    if _uses_deform_conv(graph):
        # checked up front: the exporter would fail deep inside with a long graph dump
        raise UserError(f"preset '{meta.preset}': its deformable convolutions (torchvision deform_conv2d) cannot "
                        "be exported to ONNX (torch.onnx has no symbolic for it); use --format torchscript")
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # as in trace()
        axes = {INPUT_NAME: {0: "height", 1: "width"}} if dynamic else None
        torch.onnx.export(graph, (example,), buf, input_names=[INPUT_NAME], output_names=list(meta.outputs),
                          opset_version=OPSET, dynamo=False, dynamic_axes=axes)
    model = onnx.load_from_string(buf.getvalue())
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, meta.to_json()
    onnx.save(model, str(path))
