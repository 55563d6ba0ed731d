"""CPU inference benchmark (run by hand): nuimcli's detectors vs torchvision's Mask R-CNN.

Baseline: ``torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None,
weights_backbone=None, num_classes=11, min_size=900, max_size=1600)`` on the same image, with
the same thread count, measured in the same run. Both sides get seeded random weights with BN
statistics and head scales calibrated on the image (nuimcli/testing/random_weights.py), so they produce
realistic numbers of proposals and detections; both are timed from a decoded BGR image in memory
to final outputs at the original size (boxes, scores, labels, masks). Calibration treats both alike:
BN statistics of the ResNet body, then every layer after it (FPN and heads) rescaled to the same
target output scales; the table prints each model's detection count, so a model that finds far
fewer (cheaper) detections shows.

Latency and batch-2 throughput are measured in one process with the models interleaved round by
round (so load from other processes hits every model alike); peak RSS is measured per model in
a fresh subprocess (one single-image and one batch-2 prediction).

    python bench/infer.py                       # R-50 Mask R-CNN vs torchvision, + cascade, HTC
    python bench/infer.py --threads 2 --repeat 5 --presets mask-rcnn-r50-1x mask-rcnn-r50-1x:exact

A preset name alone runs our default (fast) inference mode, as ``nuim predict`` / ``nuimcli.load()``
do (``prepare_for_inference``: BatchNorm folded into the convolutions, channels-last); ``:exact``
runs the bit-exact path (``--exact``); ``:bf16`` the fast mode under bfloat16 autocast (measures
whether ``--half`` is worth offering on CPU). Targets (issue 14), latency / torchvision's Mask R-CNN
in the same run: mask-rcnn-r50-1x <= 0.75, cascade-mask-rcnn-r50-1x <= 1.05, htc-r50-1x <= 1.45.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
BASELINE = "torchvision-maskrcnn_resnet50_fpn"
#: issue 14: our default mode's median latency / torchvision's Mask R-CNN, same run
TARGETS = {"mask-rcnn-r50-1x": 0.75, "cascade-mask-rcnn-r50-1x": 1.05, "htc-r50-1x": 1.45}


def _make_runner(name: str, img, seed: int) -> Callable[[list], list[int]]:
    """Build + randomise + calibrate one model; return ``run(list_of_bgr_images) -> detections per image``."""
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    from nuimcli.testing.random_weights import calibrate_bn, calibrate_heads, randomize

    torch.manual_seed(seed)
    if name == BASELINE:
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=11, min_size=900, max_size=1600).eval()
        randomize(model, seed)

        def to_input(a):  # torchvision takes RGB float in [0, 1]
            return torch.from_numpy(np.ascontiguousarray(a[:, :, ::-1].transpose(2, 0, 1))).float().div_(255)

        with torch.no_grad():
            images, _ = model.transform([to_input(img)])
            calibrate_bn(model.backbone.body, images.tensors)
            # its FPN lives under backbone.fpn: calibrated like ours (neck.*), only the ResNet body is skipped
            calibrate_heads(model, lambda: model([to_input(img)]), skip_prefix="backbone.body.")

        def run(batch):
            with torch.no_grad():
                out = model([to_input(a) for a in batch])
            return [len(o["boxes"]) for o in out]

        return run

    from nuimcli.data.transforms import normalize, pad_batch, resize_keep_ratio, to_chw_tensor
    from nuimcli.models.build import build_model
    from nuimcli.presets import load_preset

    from nuimcli.models.inference_mode import prepare_for_inference

    preset_name, _, variant = name.partition(":")
    if variant not in ("", "exact", "bf16"):
        raise SystemExit(f"{name}: unknown variant :{variant} (use :exact or :bf16)")
    preset = load_preset(preset_name)
    model = build_model(preset).eval()
    randomize(model, seed)
    d = preset.data
    resized, _ = resize_keep_ratio(img, d.test_scale)
    calibrate_bn(model.backbone, pad_batch([to_chw_tensor(normalize(resized, d.mean, d.std, d.to_rgb))], d.size_divisor))
    calibrate_heads(model, lambda: model.predict([img]))
    # calibrated as the exact model, then prepared as predict does (the same weights for every variant)
    model = prepare_for_inference(model, exact=variant == "exact",
                                  half=torch.bfloat16 if variant == "bf16" else None, copy_model=False)

    def run(batch):
        out = model.predict(list(batch), batch_size=len(batch))
        return [len(p.scores) for p in out]

    return run


def _images(width: int, height: int, seed: int):
    import numpy as np

    sys.path.insert(0, str(HERE))
    from nuimcli.testing.random_weights import synthetic_image

    img = synthetic_image(width, height, seed)
    return img, np.ascontiguousarray(img[:, ::-1])  # a second, different image for batch 2


def _rss_worker(name: str, args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    img, img2 = _images(args.width, args.height, args.seed)
    run = _make_runner(name, img, args.seed)
    run([img])
    run([img, img2])
    return dict(name=name, peak_rss_mb=_peak_rss_mb())


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not getrusage: Linux carries ru_maxrss over exec from the
    parent, which here holds every model."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="*", default=["mask-rcnn-r50-1x", "mask-rcnn-r50-1x:exact",
                                                     "cascade-mask-rcnn-r50-1x", "cascade-mask-rcnn-r50-1x:exact",
                                                     "htc-r50-1x", "htc-r50-1x:exact"])
    ap.add_argument("--no-batch2", action="store_true", help="skip the batch-2 throughput runs (faster)")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds (each: every model, batch 1 then batch 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-rss", action="store_true", help="skip the per-model peak-RSS subprocesses")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--_rss", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    if args.threads is None:
        args.threads = torch.get_num_threads()
    if args._rss:
        print(json.dumps(_rss_worker(args._rss, args)))
        return
    torch.set_num_threads(args.threads)

    names = [BASELINE] + list(args.presets)
    img, img2 = _images(args.width, args.height, args.seed)
    runners = {}
    for n in names:
        runners[n] = _make_runner(n, img, args.seed)
        runners[n]([img])  # warm-up (allocator, oneDNN primitives)
        if not args.no_batch2:
            runners[n]([img, img2])
        print(f"built {n}", file=sys.stderr, flush=True)
    single: dict[str, list[float]] = {n: [] for n in names}
    batch2: dict[str, list[float]] = {n: [] for n in names}
    dets: dict[str, list[int]] = {}
    for r in range(args.repeat):
        for n in names:
            t0 = time.perf_counter()
            dets[n] = runners[n]([img])
            single[n].append(time.perf_counter() - t0)
            if not args.no_batch2:
                t0 = time.perf_counter()
                runners[n]([img, img2])
                batch2[n].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.repeat} done", file=sys.stderr, flush=True)

    rss = {}
    if not args.no_rss:
        for n in names:
            cmd = [sys.executable, __file__, "--_rss", n, "--width", str(args.width), "--height", str(args.height),
                   "--threads", str(args.threads), "--seed", str(args.seed)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode == 0:
                rss[n] = json.loads(r.stdout.strip().splitlines()[-1])["peak_rss_mb"]
            else:
                print(f"{n}: RSS worker failed\n{r.stderr[-1500:]}", file=sys.stderr)

    results = {
        n: dict(
            latency_median_s=statistics.median(single[n]),
            latency_min_s=min(single[n]),
            batch2_img_per_s=2 / statistics.median(batch2[n]) if batch2[n] else float("nan"),
            batch2_best_img_per_s=2 / min(batch2[n]) if batch2[n] else float("nan"),
            detections=dets[n][0],
            peak_rss_mb=rss.get(n),
        )
        for n in names
    }
    base = results[BASELINE]
    print(f"\nCPU inference, {args.width}x{args.height} image, {args.threads} threads, {args.repeat} interleaved rounds")
    print(f"{'model':34s} {'median s':>9s} {'ratio':>6s} {'best s':>7s} {'ratio':>6s} {'b2 img/s':>9s} {'ratio':>6s} {'RSS MB':>7s} {'dets':>5s}")
    for n, r in results.items():
        rss_txt = f"{r['peak_rss_mb']:7.0f}" if r["peak_rss_mb"] else "      -"
        print(
            f"{n:34s} {r['latency_median_s']:9.3f} {r['latency_median_s'] / base['latency_median_s']:6.2f}"
            f" {r['latency_min_s']:7.3f} {r['latency_min_s'] / base['latency_min_s']:6.2f}"
            f" {r['batch2_img_per_s']:9.3f} {r['batch2_img_per_s'] / base['batch2_img_per_s']:6.2f} {rss_txt} {r['detections']:5d}"
        )
    print("latency ratio = ours / torchvision (<= 1.0: ours no slower); batch-2 ratio = ours / torchvision images/s (> 1: ours faster)")
    for n, target in TARGETS.items():
        if n in results:
            ratio = results[n]["latency_median_s"] / base["latency_median_s"]
            print(f"target {n} (default mode): {ratio:.2f}x <= {target:.2f}x  {'met' if ratio <= target else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(dict(args=vars(args) | {"json": str(args.json)}, results=results), indent=1))


if __name__ == "__main__":
    main()
