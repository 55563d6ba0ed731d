"""GPU check (issue 14 item 9), run by hand on a machine with CUDA: one script, JSON + a summary.

1. Parity fixtures (``tests/fixtures/parity``, made by real mmdet): every architecture's calibrated
   model predicts the fixture image on the CPU (exact mode: the reference) and on CUDA in the
   default fast mode (float32) and in ``--half`` (float16); each CUDA run is compared with the CPU
   one (``nuimcli.testing.prediction_diff``: detection counts, matched pairs, largest box and
   score differences, smallest mask IoU).
2. ``nuim benchmark`` for the three R-50 families at 1600x900, float32 and float16, on CUDA.
3. ``nuim export --half`` (float16 TorchScript, traced on the device) of the three R-50 families
   at ``--size``: the export check's figures against the float32 PyTorch model on the device,
   whatever they are (the float16 tolerances of ``nuimcli.export.verify.FLOAT16`` are to be set
   from these), plus whether the current ``FLOAT16`` tolerances pass.

    python bench/gpu_check.py                       # everything, writes gpu_check.json
    python bench/gpu_check.py --skip-benchmark --archs mask-rcnn_r50_fpn_1x_nuim
    python bench/gpu_check.py --device cpu --half-dtype bfloat16 --skip-benchmark   # CPU bf16 parity
    python bench/gpu_check.py --device cpu --skip-parity --skip-benchmark --size 384x216   # the export part, CPU

Without CUDA (and without ``--device cpu``) it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "parity"
FAMILIES = ["mask-rcnn-r50-1x", "cascade-mask-rcnn-r50-1x", "htc-r50-1x"]


def parity(archs: list[str], device: str, half_dtype: str) -> dict:
    """CPU exact vs ``device`` fast float32 and fast reduced precision, per architecture."""
    import cv2
    import torch

    from nuimcli.models.inference_mode import prepare_for_inference
    from nuimcli.testing import inference_parity as P
    from nuimcli.testing.prediction_diff import prediction_diff

    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    image = cv2.imread(str(FIXTURES / manifest["image"]), cv2.IMREAD_COLOR)
    dtype = getattr(torch, half_dtype)
    out = {}
    for arch in archs or list(manifest["archs"]):
        a = manifest["archs"][arch]
        regen = P.calibrated_model(a["preset"], image, seed=manifest["seed"], test_scale=manifest["test_scale"],
                                   dcn_offset_std=manifest["dcn_offset_std"])
        ref = prepare_for_inference(regen.model, exact=True).predict([image])[0]  # CPU, bit-exact path
        on_dev = regen.model.to(device)
        rows = {}
        for name, kw in [("exact_fp32", dict(exact=True)), ("fast_fp32", {}), (f"fast_{half_dtype}", dict(half=dtype))]:
            model = prepare_for_inference(on_dev, **kw)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            pred = model.predict([image])[0]
            rows[name] = prediction_diff(ref, pred) | {"seconds": round(time.perf_counter() - t0, 4)}
        out[arch] = rows
        print(f"{arch}: " + "; ".join(f"{k}: {v['matched']}/{v['detections_ref']} matched, box {v['box_max_abs_px']:.2e}px, "
                                      f"score {v['score_max_abs']:.1e}, mask IoU min {v['mask_iou_min']}"
                                      for k, v in rows.items()), flush=True)
    return out


def benchmarks(device: str, size: str, repeat: int) -> list[dict]:
    """``nuim benchmark --json`` for each R-50 family, float32 then float16 (separate processes:
    each one's peak memory is its own)."""
    rows = []
    for preset in FAMILIES:
        for half in (False, True):
            cmd = [sys.executable, "-m", "nuimcli", "benchmark", "--random-weights", preset, "--size", size,
                   "--device", device, "--repeat", str(repeat), "--json"] + (["--half"] if half else [])
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{preset} half={half}: failed\n{r.stderr[-2000:]}", file=sys.stderr, flush=True)
                rows.append(dict(preset=preset, half=half, error=r.stderr[-2000:]))
                continue
            doc = json.loads(r.stdout)
            rows.append(doc)
            print(f"{preset:28s} {doc['dtype']:9s} {doc['latency_ms_median']:8.1f} ms  {doc['images_per_s']:6.2f} img/s  "
                  f"{doc['flops'] / 1e9:7.1f} GFLOPs  peak {doc['peak_memory_mb']} MiB  dets {doc['detections']}",
                  flush=True)
    return rows


def half_exports(device: str, size: str) -> list[dict]:
    """Section 3: per R-50 family, a float16 TorchScript export's figures against float32."""
    import copy
    import tempfile
    from types import SimpleNamespace

    import numpy as np

    import torch

    from nuimcli.engine.export import _prepare_for_export, _run_exported, build_source_model, export_meta, sample_image
    from nuimcli.export.graph import ExportGraph
    from nuimcli.export.verify import FLOAT16, compare
    from nuimcli.export.writers import write_torchscript
    from nuimcli.testing.prediction_diff import prediction_diff

    w, h = (int(v) for v in size.lower().split("x"))
    dev = torch.device(device)
    image = sample_image(w, h, None)
    rows = []
    for preset in FAMILIES:
        det = _prepare_for_export(build_source_model(None, None, preset, calib_size=(w, h))).to(dev)
        with torch.no_grad():
            ref = tuple(o.cpu().numpy() for o in ExportGraph(det).eval()(torch.from_numpy(image).to(dev)))
        graph = ExportGraph(copy.deepcopy(det).half()).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "half.pt"
            write_torchscript(graph, torch.from_numpy(image).to(dev), export_meta(det, w, h, half=True), path)
            got = _run_exported(path, "torchscript", image, dev, None)
        c = compare(ref, got, h, w, float(det.roi_head.test_cfg.mask_thr_binary), FLOAT16)
        # the check stops at the first failure; the matched pairs say how far float16 is
        pairs = prediction_diff(*(SimpleNamespace(boxes=o[0].astype(np.float32), scores=o[1].astype(np.float32),
                                                  labels=o[2]) for o in (ref, got)))
        rows.append(dict(preset=preset, size=[w, h], check=c.to_dict(), pairs=pairs))
        print(f"{preset:28s} float16 export: {pairs['matched']}/{pairs['detections_ref']} matched (IoU >= 0.5, same "
              f"label), box {pairs['box_max_abs_px']:.3g} px, score {pairs['score_max_abs']:.2g} over them; check: "
              f"{c.detections_exported}/{c.detections_ref} dets, box {c.max_box_diff_px:.3g} px, min mask IoU "
              f"{c.min_mask_iou:.4f}; FLOAT16 tolerances {'pass' if c.ok else 'FAIL'}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--half-dtype", default=None, help="float16 (CUDA default) or bfloat16 (CPU)")
    ap.add_argument("--archs", nargs="*", default=[], help="parity fixture architectures (default: all)")
    ap.add_argument("--size", default="1600x900")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--skip-benchmark", action="store_true")
    ap.add_argument("--skip-export", action="store_true")
    ap.add_argument("--json", type=Path, default=Path("gpu_check.json"))
    args = ap.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); "
              "run it on a machine with a GPU, or pass --device cpu", file=sys.stderr)
        sys.exit(2)
    half_dtype = args.half_dtype or ("float16" if args.device.startswith("cuda") else "bfloat16")
    doc = dict(device=args.device, torch=torch.__version__,
               gpu=torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None)
    if not args.skip_parity:
        doc["parity_vs_cpu_exact"] = parity(args.archs, args.device, half_dtype)
    if not args.skip_benchmark:
        doc["benchmark"] = benchmarks(args.device, args.size, args.repeat)
    if not args.skip_export:
        doc["half_exports"] = half_exports(args.device, args.size)
    args.json.write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
