"""CPU inference benchmark (run by hand): nuimcli's detectors vs torchvision's Mask R-CNN.

Baseline: ``torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None,
weights_backbone=None, num_classes=11, min_size=900, max_size=1600)`` on the same image, with
the same thread count, measured in the same run. Both sides get seeded random weights with BN
statistics calibrated on the image (bench/_model_init.py) so they produce realistic numbers of
proposals and detections; both are timed from a decoded image in memory to final outputs at
the original size (boxes, scores, labels, masks).

Each measurement runs in a fresh subprocess so its peak RSS is its own.

    /work/venv/bin/python bench/infer.py                       # R-50 Mask R-CNN vs torchvision, + cascade, HTC
    /work/venv/bin/python bench/infer.py --threads 2 --repeat 5 --presets mask-rcnn-r50-1x

Target (issue 4): mask-rcnn-r50-1x latency / torchvision latency <= 1.0.
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

HERE = Path(__file__).resolve().parent
BASELINE = "torchvision-maskrcnn_resnet50_fpn"


def _worker(name: str, width: int, height: int, threads: int, repeat: int, seed: int) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    from _model_init import calibrate_bn, randomize, synthetic_image

    torch.set_num_threads(threads)
    img = synthetic_image(width, height, seed)
    img2 = np.ascontiguousarray(img[:, ::-1])  # a second, different image for batch 2
    torch.manual_seed(seed)
    if name == BASELINE:
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=11, min_size=900, max_size=1600).eval()
        randomize(model, seed)

        def to_input(a):
            return torch.from_numpy(np.ascontiguousarray(a[:, :, ::-1].transpose(2, 0, 1))).float().div_(255)

        with torch.no_grad():
            images, _ = model.transform([to_input(img)])
            calibrate_bn(model.backbone.body, images.tensors)

        def run(batch):
            with torch.no_grad():
                out = model([to_input(a) for a in batch])
            return [len(o["boxes"]) for o in out]

    else:
        from nuimcli.data.transforms import normalize, pad_batch, resize_keep_ratio, to_chw_tensor
        from nuimcli.models.build import build_model
        from nuimcli.presets import load_preset

        preset = load_preset(name)
        model = build_model(preset).eval()
        randomize(model, seed)
        d = preset.data
        resized, _ = resize_keep_ratio(img, d.test_scale)
        calibrate_bn(model.backbone, pad_batch([to_chw_tensor(normalize(resized, d.mean, d.std, d.to_rgb))], d.size_divisor))

        def run(batch):
            with torch.no_grad():
                out = model.predict(list(batch), batch_size=len(batch))
            return [len(p.scores) for p in out]

    run([img])  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        dets = run([img])
        times.append(time.perf_counter() - t0)
    run([img, img2])
    t2 = []
    for _ in range(max(1, repeat // 2)):
        t0 = time.perf_counter()
        dets2 = run([img, img2])
        t2.append(time.perf_counter() - t0)
    return dict(
        name=name,
        latency_s=statistics.median(times),
        latency_min_s=min(times),
        batch2_img_per_s=2 / statistics.median(t2),
        detections=dets[0],
        detections_batch2=dets2,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        threads=threads,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="*", default=["mask-rcnn-r50-1x", "cascade-mask-rcnn-r50-1x", "htc-r50-1x"])
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads is None:
        import torch

        args.threads = torch.get_num_threads()
    if args._worker:
        print(json.dumps(_worker(args._worker, args.width, args.height, args.threads, args.repeat, args.seed)))
        return

    results = {}
    for name in [BASELINE] + list(args.presets):
        cmd = [sys.executable, __file__, "--_worker", name, "--width", str(args.width), "--height", str(args.height),
               "--threads", str(args.threads), "--repeat", str(args.repeat), "--seed", str(args.seed)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{name}: failed\n{r.stderr[-2000:]}", file=sys.stderr)
            continue
        results[name] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"measured {name}", file=sys.stderr, flush=True)

    base = results.get(BASELINE)
    print(f"\nCPU inference, {args.width}x{args.height} image, {args.threads} threads, median of {args.repeat}")
    print(f"{'model':38s} {'latency s':>10s} {'vs tv':>7s} {'batch-2 img/s':>14s} {'vs tv':>7s} {'peak RSS MB':>12s} {'dets':>5s}")
    for name, r in results.items():
        ratio = r["latency_s"] / base["latency_s"] if base else float("nan")
        tratio = r["batch2_img_per_s"] / base["batch2_img_per_s"] if base else float("nan")
        print(f"{name:38s} {r['latency_s']:10.3f} {ratio:7.2f} {r['batch2_img_per_s']:14.3f} {tratio:7.2f} {r['peak_rss_mb']:12.0f} {r['detections']:5d}")
    print("(latency ratio = ours / torchvision: <= 1.0 means ours is no slower; throughput ratio > 1 = ours faster)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
