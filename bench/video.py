"""Video throughput benchmark (run by hand): ``nuim predict clip.mp4`` vs ``nuim predict folder/``.

Issue 15's target: frames/s of the video path (decode → predict → draw → H.264 encode + JSONL,
engine/video.py's pipeline) >= 0.95x the image-folder throughput (read JPEG → predict → draw →
write JPEG + JSON, engine/predict.py) of the same model at the same size. Both run the same
frames — a synthetic street picture panned sideways, once saved as JPEGs (quality 95), once
encoded as H.264 — through the same model: seeded random weights with calibrated BatchNorm and
head scales (nuimcli/testing/random_weights.py, so the detection counts are realistic), prepared
for inference as ``nuim predict`` does (fast mode). The two paths are interleaved round by round
(load from other processes hits both alike); the median of ``--repeat`` rounds is reported, with
the model alone on decoded arrays as the ceiling.

    python bench/video.py                                   # tiny preset, 320x192, 24 frames
    python bench/video.py --preset mask-rcnn-r50-1x --width 1600 --height 900 --frames 12 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build_model(preset_name: str, img, seed: int):
    """The preset's detector with calibrated random weights, prepared as ``nuim predict`` loads it."""
    import torch

    from nuimcli.data.transforms import normalize, pad_batch, resize_keep_ratio, to_chw_tensor
    from nuimcli.models.build import build_model as build
    from nuimcli.models.inference_mode import prepare_for_inference
    from nuimcli.presets import load_preset
    from nuimcli.testing.random_weights import calibrate_bn, calibrate_heads, randomize

    torch.manual_seed(seed)
    preset = load_preset(preset_name)
    model = build(preset).eval()
    randomize(model, seed)
    d = preset.data
    resized, _ = resize_keep_ratio(img, d.test_scale)
    calibrate_bn(model.backbone, pad_batch([to_chw_tensor(normalize(resized, d.mean, d.std, d.to_rgb))],
                                           d.size_divisor))
    calibrate_heads(model, lambda: model.predict([img]))
    return prepare_for_inference(model, copy_model=False)


def make_inputs(root: Path, width: int, height: int, frames: int, fps: float, seed: int):
    """``root/frames/f0000.jpg …`` and ``root/clip.mp4``: the same panning frames."""
    import cv2
    import numpy as np

    from nuimcli.media.video import VideoWriter
    from nuimcli.testing.random_weights import synthetic_image

    base = synthetic_image(width + 8 * frames, height, seed)
    folder = root / "frames"
    folder.mkdir(parents=True)
    writer = VideoWriter(root / "clip.mp4", fps, crf=18)
    arrays = []
    for i in range(frames):
        img = np.ascontiguousarray(base[:, 8 * i: 8 * i + width])
        cv2.imwrite(str(folder / f"f{i:04d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        writer.write(img)
        arrays.append(img)
    writer.close()
    return folder, root / "clip.mp4", arrays


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mask-rcnn-r18-tiny")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args(argv)

    import torch

    from nuimcli.engine.predict import predict_files
    from nuimcli.engine.sequences import StreamOptions, predict_video_file

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="nuim-bench-video-"))
    try:
        folder, clip, arrays = make_inputs(root, args.width, args.height, args.frames, args.fps, args.seed)
        model = build_model(args.preset, arrays[0], args.seed)
        n = args.frames

        def images() -> float:
            out = root / "out-images"
            t = time.perf_counter()
            items = predict_files(model, [str(folder)], out, batch_size=args.batch_size, progress=False)
            dt = time.perf_counter() - t
            assert len(items) == n and all(it.ok for it in items)
            shutil.rmtree(out)
            return n / dt

        def video() -> float:
            out = root / "out-video"
            t = time.perf_counter()
            res = predict_video_file(model, str(clip), out, StreamOptions(batch_size=args.batch_size, progress=False))
            dt = time.perf_counter() - t
            assert res.ok and res.frames == n
            shutil.rmtree(out)
            return n / dt

        def model_only() -> float:
            t = time.perf_counter()
            with torch.no_grad():
                for s in range(0, n, args.batch_size):
                    model.predict(arrays[s: s + args.batch_size], batch_size=args.batch_size)
            return n / (time.perf_counter() - t)

        images(), video()  # warm-up: allocator, threads, first-call costs
        rounds = {"images": [], "video": [], "model": []}
        for r in range(args.repeat):
            order = [("images", images), ("video", video)] if r % 2 == 0 else [("video", video), ("images", images)]
            for name, fn in order:
                rounds[name].append(fn())
            rounds["model"].append(model_only())
        med = {k: statistics.median(v) for k, v in rounds.items()}
        doc = {"preset": args.preset, "size": [args.width, args.height], "frames": n, "batch_size": args.batch_size,
               "threads": args.threads, "repeat": args.repeat, "fps_images": med["images"],
               "fps_video": med["video"], "fps_model_only": med["model"], "ratio": med["video"] / med["images"],
               "target": 0.95, "rounds": rounds}
        if args.json:
            print(json.dumps(doc, indent=1))
        else:
            print(f"{args.preset} {args.width}x{args.height}, {n} frames, batch {args.batch_size}, "
                  f"{args.threads} threads, median of {args.repeat}")
            print(f"  image folder (JPEG in, JPEG + JSON out): {med['images']:.2f} frames/s")
            print(f"  video (H.264 in, H.264 + JSONL out):     {med['video']:.2f} frames/s")
            print(f"  model alone on decoded arrays:           {med['model']:.2f} frames/s")
            print(f"  video / image folder: {doc['ratio']:.3f}x (target >= 0.95x: "
                  f"{'met' if doc['ratio'] >= 0.95 else 'NOT met'})")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
