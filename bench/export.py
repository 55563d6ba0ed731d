"""Export benchmark (run by hand): full-size ONNX / TorchScript exports of the R-50 families,
their agreement with the PyTorch model, and their latency against our PyTorch default.

For each preset: the model with seeded, calibrated random weights (as ``nuim export
--random-weights``), prepared as ``nuim predict`` runs it by default (BatchNorm folded,
channels-last), exported at ``--size``, run (onnxruntime / torch.jit) on the synthetic street
image and compared with the PyTorch model by the export check's own figures (boxes px, scores,
mask IoU, pixels flipped clear of the threshold). The **noise floor** row compares the PyTorch
model with itself run on 1 thread instead of ``--threads``: a difference that large is float
summation order alone, so an exported file cannot be asked to agree more closely than that.
Latency: median of ``--repeat`` interleaved rounds, same threads; ratio = exported / PyTorch
default, measured in the same run.

The runner ``onnx-dynamic`` is ``nuim export --format onnx --dynamic``: the same graph with
dynamic height/width axes, checked at ``--size`` and at the second size the export checks
(where a 4:3 image lands), its latency measured at ``--size`` like the others.

    python bench/export.py                                   # 3 R-50 families, 1600x900, 2 threads
    python bench/export.py --size 384x216 --presets cascade-mask-rcnn-r50-1x --formats onnx
    python bench/export.py --formats onnx onnx-dynamic       # fixed-size vs dynamic ONNX
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _figures(c) -> str:
    return (f"{c.detections_exported}/{c.detections_ref} dets, box {c.max_box_diff_px:.3g} px, score {c.max_score_diff:.2g}, "
            f"min mask IoU {c.min_mask_iou:.4f}, clear flips {c.clear_pixels_flipped}: {'ok' if c.ok else 'FAIL'}")


def bench_preset(name: str, w: int, h: int, formats: list[str], threads: int, repeat: int, workdir: Path) -> list[dict]:
    """Rows (one per runner) for one preset: agreement figures and latency."""
    import torch

    from nuimcli.engine.export import (SUFFIXES, _prepare_for_export, _run_exported, build_source_model, export_meta,
                                       sample_image, second_check_size)
    from nuimcli.testing.random_weights import synthetic_image
    from nuimcli.export.formats import ONNX, TORCHSCRIPT
    from nuimcli.export.graph import ExportGraph
    from nuimcli.export.runtime import load_torchscript, onnx_session
    from nuimcli.export.verify import FLOAT32, compare
    from nuimcli.export.writers import write_onnx, write_torchscript

    torch.set_num_threads(threads)
    det = _prepare_for_export(build_source_model(None, None, name, calib_size=(w, h)))
    graph = ExportGraph(det).eval()
    image = sample_image(w, h, None)
    x = torch.from_numpy(image)
    thr = float(det.roi_head.test_cfg.mask_thr_binary)

    def run_torch():
        with torch.no_grad():
            return tuple(o.numpy() for o in graph(x))

    ref = run_torch()
    torch.set_num_threads(1)
    one_thread = run_torch()
    torch.set_num_threads(threads)
    rows = [dict(preset=name, runner="PyTorch, 1 thread (noise floor)", check=_figures(compare(ref, one_thread, h, w, thr, FLOAT32)))]
    runners = {"pytorch default": run_torch}
    meta = export_meta(det, w, h)
    for runner in formats:
        dynamic = runner == "onnx-dynamic"
        fmt = ONNX if dynamic else runner
        path = workdir / f"{name}-{runner}{SUFFIXES[fmt]}"
        t0 = time.perf_counter()
        if fmt == ONNX:
            write_onnx(copy.deepcopy(graph), x, meta, path, dynamic=dynamic)
        else:
            write_torchscript(copy.deepcopy(graph), x, meta, path)
        export_s = time.perf_counter() - t0
        got = _run_exported(path, fmt, image, torch.device("cpu"), threads)
        check = _figures(compare(ref, got, h, w, thr, FLOAT32))
        if dynamic:  # and at the export's second check size
            w2, h2 = second_check_size((w, h), w, h)
            image2 = synthetic_image(w2, h2, 1)
            with torch.no_grad():
                ref2 = tuple(o.numpy() for o in graph(torch.from_numpy(image2)))
            got2 = _run_exported(path, fmt, image2, torch.device("cpu"), threads)
            check += f" | at {w2}x{h2}: " + _figures(compare(ref2, got2, h2, w2, thr, FLOAT32))
        rows.append(dict(preset=name, runner=runner, check=check, export_s=export_s,
                         size_mb=path.stat().st_size / 2**20))
        if fmt == ONNX:
            session = onnx_session(path, threads)
            runners[runner] = lambda s=session: s.run(None, {"image": image})
        elif fmt == TORCHSCRIPT:
            module = load_torchscript(path, "cpu")

            def run_ts(m=module):
                with torch.no_grad():
                    return m(x)
            runners[runner] = run_ts
    times: dict[str, list[float]] = {k: [] for k in runners}
    for fn in runners.values():  # warm-up (oneDNN primitive and ORT arena creation)
        fn()
    for _ in range(repeat):
        for key, fn in runners.items():
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    base = statistics.median(times["pytorch default"])
    for key, ts in times.items():
        row = next((r for r in rows if r["runner"] == key), None)
        if row is None:
            row = dict(preset=name, runner=key, check="reference")
            rows.insert(0, row)
        row["median_s"] = statistics.median(ts)
        row["ratio"] = row["median_s"] / base
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="*", default=["mask-rcnn-r50-1x", "cascade-mask-rcnn-r50-1x", "htc-r50-1x"])
    ap.add_argument("--size", default="1600x900", help="network input WxH (default: the test scale)")
    ap.add_argument("--formats", nargs="*", default=["onnx", "torchscript"],
                    choices=["onnx", "onnx-dynamic", "torchscript"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="nuim-bench-export-") as tmp:
        for name in args.presets:
            rows += bench_preset(name, w, h, args.formats, args.threads, args.repeat, Path(tmp))
            print(f"done {name}", flush=True)
    print(f"\nExport, {w}x{h} input, {args.threads} threads, median of {args.repeat} interleaved rounds")
    print(f"{'preset':26s} {'runner':32s} {'median s':>8s} {'ratio':>6s} {'export s':>8s} {'MB':>6s}  check vs PyTorch default")
    for r in rows:
        med = f"{r['median_s']:.3f}" if "median_s" in r else "-"
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        exp = f"{r['export_s']:.1f}" if "export_s" in r else "-"
        mb = f"{r['size_mb']:.0f}" if "size_mb" in r else "-"
        print(f"{r['preset']:26s} {r['runner']:32s} {med:>8s} {ratio:>6s} {exp:>8s} {mb:>6s}  {r['check']}")
    print("ratio = latency / our PyTorch default (same run); the noise-floor row is PyTorch against itself on "
          "1 thread: agreement closer than that cannot be asked of an exported file")


if __name__ == "__main__":
    main()
