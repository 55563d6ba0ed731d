"""``nuim benchmark``: parameters, FLOPs, latency and peak memory of one detector at one input size.

FLOPs come from torch's own counter (``torch.utils.flop_counter.FlopCounterMode``): it counts a
multiply-add as 2 FLOPs and counts only the ops it knows (convolutions, matmuls, ...): torchvision's
``roi_align``, ``nms`` and ``deform_conv2d`` are not counted, nor element-wise ops (ReLU, add,
grid_sample). ``multiply_adds`` = FLOPs / 2 is what mmcv's and fvcore's counters call "FLOPs".
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from nuimcli.errors import UserError

FLOP_NOTE = ("torch.utils.flop_counter: a multiply-add counts 2; roi_align, nms, deform_conv2d and "
             "element-wise ops are not counted")


@dataclass
class BenchmarkResult:
    """What ``nuim benchmark`` reports (``to_dict`` is its ``--json`` document)."""

    model: str
    preset: str
    device: str
    mode: str  # "fast" (folded BN, channels-last) or "exact"
    dtype: str  # float32, float16 or bfloat16
    width: int
    height: int
    threads: int
    parameters: int
    flops: int
    multiply_adds: int
    flop_note: str
    latency_ms: list[float]
    latency_ms_median: float
    images_per_s: float
    peak_memory_mb: Optional[float]
    peak_memory_kind: str  # "cuda_max_allocated" or "cpu_peak_rss_delta"
    detections: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (plain types only)."""
        return asdict(self)


def parse_size(text: str) -> tuple[int, int]:
    """``"1600x900"`` → ``(1600, 900)``; anything else is a one-line :class:`UserError`."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or min(int(p) for p in parts) < 32:
        raise UserError(f"--size {text!r}: give WIDTHxHEIGHT in pixels, each at least 32, e.g. 1600x900")
    return int(parts[0]), int(parts[1])


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs torch's ``FlopCounterMode`` counts while ``fn()`` runs (multiply-add = 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return int(counter.get_total_flops())


def _rss_mb(field: str) -> Optional[float]:
    """This process's ``VmRSS`` / ``VmHWM`` in MiB (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_cpu_peak() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS; False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def random_weights_model(preset_name: str, image):
    """An untrained model of ``preset_name`` with seeded random weights calibrated on ``image``
    (BN statistics and head scales: realistic proposal and detection counts, as ``bench/infer.py``)."""
    from nuimcli.data.transforms import normalize, pad_batch, resize_keep_ratio, to_chw_tensor
    from nuimcli.models.build import build_model
    from nuimcli.presets import load_preset
    from nuimcli.testing.random_weights import calibrate_bn, calibrate_heads, randomize

    preset = load_preset(preset_name)
    model = build_model(preset).eval()
    randomize(model, 0)
    d = preset.data
    resized, _ = resize_keep_ratio(image, d.test_scale)
    calibrate_bn(model.backbone, pad_batch([to_chw_tensor(normalize(resized, d.mean, d.std, d.to_rgb))],
                                           d.size_divisor))
    calibrate_heads(model, lambda: model.predict([image]))
    return model


def benchmark(model_spec: Optional[str] = None, random_weights: Optional[str] = None, size: str = "1600x900",
              device: str = "cpu", repeat: int = 5, warmup: int = 1, exact: bool = False, half: bool = False,
              threads: Optional[int] = None, preset: Optional[str] = None,
              trust_checkpoint: bool = False) -> BenchmarkResult:
    """Measure one model on one synthetic street-like image of ``size`` (``WxH``).

    Args:
        model_spec: a checkpoint file, URL or zoo name (as ``predict``); or None with ``random_weights``.
        random_weights: a preset name: an untrained model with calibrated random weights.
        size: input image ``WIDTHxHEIGHT``; the model resizes it to its test scale as ``predict`` does.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        repeat, warmup: timed and untimed ``predict`` calls; latency is their median.
        exact, half: the inference mode (:func:`~nuimcli.models.inference_mode.prepare_for_inference`).
        threads: torch CPU threads (default: torch's).

    Returns:
        a :class:`BenchmarkResult`. Latency covers ``predict`` on a decoded image in memory:
        resize, normalise, network, NMS, mask pasting at the original size.
    """
    import torch

    from nuimcli.models.inference_mode import prepare_for_inference
    from nuimcli.testing.random_weights import synthetic_image
    from nuimcli.utils.device import resolve_device

    if (model_spec is None) == (random_weights is None):
        raise UserError("give MODEL (a checkpoint file or zoo name) or --random-weights PRESET, not both or neither")
    if repeat < 1 or warmup < 0:
        raise UserError("--repeat must be at least 1 and --warmup at least 0")
    width, height = parse_size(size)
    dev = torch.device(resolve_device(str(device), what="device"))
    if threads is not None:
        torch.set_num_threads(int(threads))
    image = synthetic_image(width, height, 0)
    if random_weights is not None:
        model = random_weights_model(random_weights, image).to(dev)
        model = prepare_for_inference(model, exact=exact, half=half, copy_model=False)
        name = f"random weights ({random_weights})"
    else:
        import nuimcli

        model = nuimcli.load(model_spec, preset=preset, device=str(dev), trust_checkpoint=trust_checkpoint,
                             exact=exact, half=half)
        name = str(model_spec)
    parameters = sum(p.numel() for p in model.parameters())
    flops = count_flops(lambda: model.predict([image]))
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    # Peak memory over warm-up and timed runs, above what the loaded model already holds: the
    # first run allocates the most (caches warm up), later ones reuse it.
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        can_reset = _reset_cpu_peak()
        base = _rss_mb("VmRSS")
    for _ in range(warmup):
        model.predict([image])
    sync()
    times = []
    detections = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        preds = model.predict([image])
        sync()
        times.append((time.perf_counter() - t0) * 1000)
        detections = len(preds[0])
    if cuda:
        peak: Optional[float] = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    else:
        hwm = _rss_mb("VmHWM")
        peak = hwm - base if (can_reset and hwm is not None and base is not None) else None
    median = statistics.median(times)
    dtype = str(model.autocast_dtype or torch.float32).replace("torch.", "")
    return BenchmarkResult(model=name, preset=model.preset.name, device=str(dev), mode="exact" if exact else "fast",
                           dtype=dtype, width=width, height=height, threads=torch.get_num_threads(),
                           parameters=int(parameters), flops=flops, multiply_adds=flops // 2, flop_note=FLOP_NOTE,
                           latency_ms=[round(t, 2) for t in times], latency_ms_median=round(median, 2),
                           images_per_s=round(1000.0 / median, 3), peak_memory_mb=None if peak is None else round(peak, 1),
                           peak_memory_kind="cuda_max_allocated" if cuda else "cpu_peak_rss_delta",
                           detections=int(detections))
