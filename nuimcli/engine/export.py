"""``nuim export``: a model (zoo name, checkpoint or random weights) → a verified ONNX or
TorchScript file.

The order is fixed: build the model, :func:`_prepare_for_export`, trace/export at the input
size into a temporary file next to the output, run that file on a sample image and compare
with the PyTorch model (:mod:`nuimcli.export.verify`), and only then rename it to its final
name. A comparison out of tolerance raises :class:`~nuimcli.errors.RunFailed` (exit 1) and
leaves no file.

``--dynamic``: the graph is traced at one size but computes its padding, anchors and clip
windows from the size of the image it is given (the model code never turns a traced size into
a Python int), and ONNX marks the image's height and width as dynamic axes. The check then runs
at the traced size and at a second one of another aspect ratio (:func:`second_check_size`): a
size frozen into the graph anywhere would show there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nuimcli import CLASSES
from nuimcli.errors import RunFailed, UserError
from nuimcli.export.formats import ONNX, TORCHSCRIPT, ExportMeta, require_onnx
from nuimcli.export.graph import OUTPUT_NAMES, SEMANTIC_OUTPUT, ExportGraph
from nuimcli.export.verify import FLOAT16, FLOAT32, Comparison, compare
from nuimcli.utils.io import atomic_path

FORMATS = (ONNX, TORCHSCRIPT)
SUFFIXES = {ONNX: ".onnx", TORCHSCRIPT: ".torchscript.pt"}


@dataclass
class ExportResult:
    """What :func:`export_model` did: the file, its metadata, the check's figures and timings (s)."""

    path: Path
    format: str
    meta: ExportMeta
    #: one per checked input size ``(W, H)``, the traced size first (two with ``--dynamic``)
    checks: list[tuple[tuple[int, int], Comparison]]
    export_s: float
    verify_s: float
    extra: dict = field(default_factory=dict)

    @property
    def comparison(self) -> Comparison:
        """The check at the traced input size."""
        return self.checks[0][1]

    def to_dict(self) -> dict:
        """JSON-ready summary (``comparison``: at the traced size; ``checks``: every checked size)."""
        return {"path": str(self.path), "format": self.format, "preset": self.meta.preset,
                "input_size": self.meta.input_size, "dynamic": self.meta.dynamic, "precision": self.meta.precision,
                "export_s": round(self.export_s, 3), "verify_s": round(self.verify_s, 3),
                "comparison": self.comparison.to_dict(),
                "checks": [{"input_size": list(size), **c.to_dict()} for size, c in self.checks]}


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` → ``(W, H)``; a one-line :class:`UserError` naming ``--input-size`` otherwise."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--input-size {text!r}: expected WIDTHxHEIGHT, e.g. 1600x900") from None
    if w <= 0 or h <= 0:
        raise UserError(f"--input-size {text!r}: both sides must be positive")
    return w, h


def build_source_model(model: Optional[str], preset: Optional[str], random_weights: Optional[str],
                       trust: bool = False, seed: int = 0,
                       calib_size: Optional[tuple[int, int]] = None, exact: bool = False) -> torch.nn.Module:
    """The model to export: ``model`` (zoo name / checkpoint file, through the one resolver) or,
    with ``random_weights``, that preset built with seeded, calibrated random weights
    (:mod:`nuimcli.testing.random_weights`: realistic detections for tests), calibrated on a
    synthetic image of ``calib_size`` ``(W, H)`` (default the preset's test scale). Eval mode, CPU;
    a loaded file comes prepared by :func:`~nuimcli.engine.resolve.load_detector` (``exact``)."""
    if (model is None) == (random_weights is None):
        raise UserError("give MODEL (a zoo name or checkpoint file) or --random-weights PRESET, not both")
    if model is not None:
        from nuimcli.engine.resolve import load_detector

        return load_detector(model, preset=preset, device="cpu", trust=trust, exact=exact)
    from nuimcli.presets import load_preset
    from nuimcli.testing.random_weights import calibrated_model

    p = load_preset(random_weights)
    cw, ch = calib_size or (int(max(p.data.test_scale)), int(min(p.data.test_scale)))
    return calibrated_model(p, cw, ch, seed)


def _prepare_for_export(model: torch.nn.Module, exact: bool = False) -> torch.nn.Module:
    """Make the model ready for export: what predict and eval run, through the one
    :func:`~nuimcli.models.inference_mode.prepare_for_inference` (BatchNorm folded into the
    convolutions, channels-last; ``exact``: mmdet's unfolded computation), eval mode, no gradients.

    The graph is traced from, and verified against, this same prepared model, so the check
    compares the exported file with what ``nuim predict`` computes by default. float32 here:
    ``--half`` converts the whole model afterwards (autocast does not survive tracing as a policy).
    """
    from nuimcli.models.inference_mode import prepare_for_inference

    # in place: the model was built or loaded for this export alone
    model = prepare_for_inference(model, exact=exact, half=None, copy_model=False)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def sample_image(width: int, height: int, sample: Optional[Path], any_aspect: bool = False) -> np.ndarray:
    """The image the export is traced and verified on, BGR uint8: ``sample`` resized (keep-ratio,
    the shared :func:`~nuimcli.data.transforms.resize_keep_ratio`) for ``width`` x ``height``,
    else the synthetic street picture at that size. A fixed-size export (``any_aspect`` false)
    needs the resized sample to fill the input size exactly; a ``--dynamic`` one takes whatever
    size the resize gives."""
    from nuimcli.data.transforms import load_image, resize_keep_ratio
    from nuimcli.testing.random_weights import synthetic_image

    if sample is None:
        return synthetic_image(width, height, 0)
    resized, _ = resize_keep_ratio(load_image(sample), (max(width, height), min(width, height)))
    if not any_aspect and resized.shape[:2] != (height, width):
        raise UserError(f"--sample {sample}: resizes to {resized.shape[1]}x{resized.shape[0]}, "
                        f"not the input size {width}x{height} (its aspect ratio differs)")
    return resized


def second_check_size(test_scale: tuple[int, int], width: int, height: int) -> tuple[int, int]:
    """The second input size a ``--dynamic`` export is checked at: where ``resize_keep_ratio``
    puts a 4:3 camera image (a 16:9 one when the traced size is already 4:3) for ``test_scale``,
    e.g. 1200x900 next to nuImages' 1600x900 — another width, and a height that needs padding."""
    from nuimcli.data.transforms import rescale_size

    aspect = (16, 9) if abs(width * 3 - height * 4) <= max(width, height) // 100 else (4, 3)
    size, _ = rescale_size(aspect[0] * 40, aspect[1] * 40, (max(test_scale), min(test_scale)))
    return size


def _run_exported(path: Path, fmt: str, image: np.ndarray, device: torch.device, threads: Optional[int]) -> tuple:
    """Run a freshly written file (not yet under its final name) on one resized image."""
    if fmt == TORCHSCRIPT:
        from nuimcli.export.runtime import load_torchscript

        module = load_torchscript(path, device)
        with torch.no_grad():
            out = module(torch.from_numpy(image).to(device))
        return tuple(o.float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy() for o in out)
    from nuimcli.export.runtime import onnx_session

    return tuple(onnx_session(path, threads).run(None, {"image": image}))


def export_meta(det: torch.nn.Module, width: int, height: int, half: bool = False,
                dynamic: bool = False) -> ExportMeta:
    """What an exported file of the prepared detector ``det`` traced at ``width`` x ``height``
    carries. A fixed-size file resizes images for its input size; a ``dynamic`` one for the
    model's own test scale."""
    test_cfg = det.roi_head.test_cfg
    outputs = list(OUTPUT_NAMES) + ([SEMANTIC_OUTPUT] if det.has_semantic_head else [])
    scale = det.test_scale if dynamic else (width, height)
    return ExportMeta(preset=det.preset.name, classes=list(getattr(det, "classes", CLASSES)),
                      score_thr=float(test_cfg.score_thr), mask_thr_binary=float(test_cfg.mask_thr_binary),
                      test_scale=[int(max(scale)), int(min(scale))], input_size=[width, height],
                      size_divisor=int(det.size_divisor), outputs=outputs, precision="float16" if half else "float32",
                      dynamic=dynamic)


def export_model(*, fmt: str, out: Optional[Path] = None, model: Optional[str] = None,
                 preset: Optional[str] = None, random_weights: Optional[str] = None,
                 input_size: Optional[tuple[int, int]] = None, dynamic: bool = False, half: bool = False,
                 device: str = "cpu", sample: Optional[Path] = None, threads: Optional[int] = None,
                 trust: bool = False, exact: bool = False) -> ExportResult:
    """Export, verify, then write ``out`` (default ``<preset><suffix>`` in the working folder).

    Raises :class:`UserError` (exit 2) for bad input or an unsupported combination and
    :class:`RunFailed` (exit 1) when the exported file does not predict what the model does.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if dynamic and input_size is not None:
        raise UserError("--input-size and --dynamic exclude each other")
    from nuimcli.utils.device import resolve_device

    dev = torch.device(resolve_device(str(device), what="device"))
    if half and dev.type != "cuda":
        raise UserError("--half exports float16, which needs a CUDA device (--device cuda); on the CPU "
                        "float16 kernels are missing or slow, so float32 is the CPU format")
    if half and fmt == ONNX:
        raise UserError("--half: only --format torchscript is exported in float16 (onnxruntime here runs "
                        "the CPU provider, which lacks float16 kernels for this graph)")
    if fmt == ONNX:
        require_onnx("--format onnx")
    if threads:
        torch.set_num_threads(int(threads))

    det = _prepare_for_export(build_source_model(model, preset, random_weights, trust=trust, calib_size=input_size,
                                                 exact=exact), exact=exact)
    p = det.preset
    if dynamic:
        from nuimcli.testing.random_weights import synthetic_image

        image = sample_image(int(max(det.test_scale)), int(min(det.test_scale)), sample, any_aspect=True)
        h, w = image.shape[:2]
        # seed 1: another picture than the traced one, at another size
        images = [image, synthetic_image(*second_check_size(det.test_scale, w, h), 1)]
    else:
        w, h = input_size or (int(max(det.test_scale)), int(min(det.test_scale)))
        images = [sample_image(w, h, sample)]
    x = torch.from_numpy(images[0])
    ref_graph = ExportGraph(det).eval()
    with torch.no_grad():
        refs = [tuple(o.cpu().numpy() for o in ref_graph(torch.from_numpy(im))) for im in images]
    meta = export_meta(det, w, h, half, dynamic)
    meta.extra["checked_sizes"] = [[im.shape[1], im.shape[0]] for im in images]
    graph = ref_graph
    if half:
        graph = ExportGraph(det.to(dev).half()).to(dev).eval()
    out = Path(out) if out is not None else Path(f"{p.name}{SUFFIXES[fmt]}")
    from nuimcli.export.writers import write_onnx, write_torchscript

    with atomic_path(out) as tmp:
        t0 = time.perf_counter()
        if fmt == TORCHSCRIPT:
            write_torchscript(graph, x.to(dev), meta, tmp)
        else:
            write_onnx(graph, x, meta, tmp, dynamic=dynamic)
        t1 = time.perf_counter()
        checks = []
        for im, ref in zip(images, refs):
            ih, iw = im.shape[:2]
            cmp = compare(ref, _run_exported(tmp, fmt, im, dev, threads), ih, iw, meta.mask_thr_binary,
                          FLOAT16 if half else FLOAT32)
            if not cmp.ok:
                where = f" at {iw}x{ih}" if dynamic else ""
                raise RunFailed(f"{out}: the exported {fmt} file does not predict what the model does{where} "
                                f"({cmp.failure()}); nothing written")
            checks.append(((iw, ih), cmp))
        t2 = time.perf_counter()
    return ExportResult(path=out, format=fmt, meta=meta, checks=checks, export_s=t1 - t0, verify_s=t2 - t1)

