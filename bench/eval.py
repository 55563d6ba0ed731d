"""COCO metric benchmark (run by hand): ``nuimcli.engine.coco_metrics`` vs pycocotools' ``COCOeval``.

Synthetic nuImages-like ground truth (1600x900 images, ~8 objects each, polygon masks) and a
results list of ``--dets`` detections per image with masks (jittered copies of the objects plus
random false positives, random scores). Both sides start from the same in-memory GT dict and
results list and go to the box and mask numbers:

- baseline: pycocotools as mmdet 2.x runs it — ``COCO`` index, ``loadRes`` (mask results without
  ``bbox``), ``COCOeval`` with ``maxDets=[100, 300, 1000]``, evaluate / accumulate / summarize,
  for ``bbox`` and ``segm``;
- ours: :func:`nuimcli.engine.coco_metrics.evaluate_results` (input checks included).

The baseline is run on the GT as is (for ``--mode reference-compat``) or on the id-shifted GT
(for the default mode), so the numbers must be identical; the script checks they are and prints
the time ratio. Same process, same thread count.

    python bench/eval.py                         # 500 images x 100 detections
    python bench/eval.py --images 1000 --mode reference-compat

Target (issue 6): pycocotools time / ours >= 2.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import time
import warnings

import numpy as np


def polygon(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, n: int = 16) -> list[float]:
    """An irregular n-gon around (cx, cy): a rough object outline."""
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(0.7, 1.0, n)
    xs, ys = cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)
    return np.stack([xs, ys], 1).ravel().tolist()


def make_case(n_images: int, dets_per_image: int, seed: int, w: int = 1600, h: int = 900):
    from pycocotools import mask as mask_util

    from nuimcli import CLASSES

    rng = np.random.default_rng(seed)

    def rle(poly: list[float]) -> tuple[dict, list[float]]:
        r = mask_util.merge(mask_util.frPyObjects([poly], h, w))
        box = mask_util.toBbox(r).tolist()
        r["counts"] = r["counts"].decode()
        return r, box

    def random_obj():
        rx, ry = float(rng.uniform(4, 250)), float(rng.uniform(4, 160))
        cx, cy = float(rng.uniform(rx, w - rx)), float(rng.uniform(ry, h - ry))
        return cx, cy, rx, ry

    images, anns, dets = [], [], []
    for i in range(n_images):
        images.append({"id": i, "file_name": f"samples/CAM_FRONT/{i}.jpg", "width": w, "height": h})
        objs = []
        for _ in range(int(rng.integers(2, 15))):
            cx, cy, rx, ry = random_obj()
            poly = polygon(rng, cx, cy, rx, ry)
            seg, box = rle(poly)
            if box[2] < 1 or box[3] < 1:
                continue
            c = int(rng.integers(0, 10))
            objs.append((poly, cx, cy, rx, ry, c))
            anns.append({"id": len(anns), "image_id": i, "category_id": c, "bbox": box,
                         "area": box[2] * box[3], "segmentation": seg, "iscrowd": 0})
        for k in range(dets_per_image):
            if objs and k < 3 * len(objs):
                # a localisation of the object: its outline scaled and shifted a little
                poly, cx, cy, rx, ry, c = objs[k % len(objs)]
                pts = np.asarray(poly).reshape(-1, 2)
                scale = rng.uniform(0.85, 1.15, 2)
                shift = rng.normal(0, 0.08 * max(rx, ry), 2)
                pts = (pts - (cx, cy)) * scale + (cx, cy) + shift
                if rng.random() < 0.15:
                    c = int(rng.integers(0, 10))
                seg, box = rle(pts.ravel().tolist())
                dets.append({"image_id": i, "category_id": c, "bbox": box, "score": float(rng.uniform(0.2, 1.0)),
                             "segmentation": seg})
                continue
            else:
                cx, cy, rx, ry = random_obj()
                c = int(rng.integers(0, 10))
            seg, box = rle(polygon(rng, cx, cy, rx, ry))
            dets.append({"image_id": i, "category_id": c, "bbox": box, "score": float(rng.uniform(0.05, 0.5)),
                         "segmentation": seg})
    cats = [{"id": i, "name": n} for i, n in enumerate(CLASSES)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def run_pycocotools(gt: dict, dets: list[dict]) -> dict[str, np.ndarray]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = {}
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        for iou_type in ("bbox", "segm"):
            if iou_type == "bbox":
                d = [{k: v for k, v in x.items() if k != "segmentation"} for x in dets]
            else:
                d = [{k: v for k, v in x.items() if k != "bbox"} for x in dets]
            ev = COCOeval(coco, coco.loadRes(d), iou_type)
            ev.params.catIds = [c["id"] for c in gt["categories"]]
            ev.params.imgIds = [i["id"] for i in gt["images"]]
            ev.params.maxDets = [100, 300, 1000]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            out[iou_type] = np.asarray(ev.stats[:7])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--dets", type=int, default=100, help="detections per image")
    ap.add_argument("--mode", choices=["default", "reference-compat"], default="default")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per side (best is reported)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from nuimcli.engine.coco_metrics import METRIC_NAMES, evaluate_results, shifted_ground_truth

    t0 = time.perf_counter()
    gt, dets = make_case(args.images, args.dets, args.seed)
    print(f"case: {len(gt['images'])} images, {len(gt['annotations'])} annotations, {len(dets)} detections "
          f"with masks (built in {time.perf_counter() - t0:.1f}s); mode {args.mode}")
    compat = args.mode == "reference-compat"
    gt_for_baseline = gt if compat else shifted_ground_truth(gt)

    t_ref, t_ours = [], []
    for _ in range(args.repeat):
        g, d = copy.deepcopy(gt_for_baseline), copy.deepcopy(dets)  # pycocotools writes into them
        t = time.perf_counter()
        ref = run_pycocotools(g, d)
        t_ref.append(time.perf_counter() - t)
        del g, d
        t = time.perf_counter()
        mine = evaluate_results(dets, gt, reference_compat=compat)
        t_ours.append(time.perf_counter() - t)

    identical = True
    for iou_type in ("bbox", "segm"):
        r = np.where(ref[iou_type] == -1, np.nan, ref[iou_type])
        m = np.array([getattr(mine, iou_type).summary()[k] for k in METRIC_NAMES])
        same = bool(np.all((np.isnan(r) & np.isnan(m)) | (np.abs(r - m) <= 1e-12)))
        identical &= same
        print(f"{iou_type:5s} " + "  ".join(f"{k}={v:.4f}" for k, v in zip(METRIC_NAMES, m))
              + f"   max |diff| vs COCOeval = {np.nanmax(np.abs(r - m)):.1e}")
    best_ref, best_ours = min(t_ref), min(t_ours)
    print(f"pycocotools COCOeval (baseline): {best_ref:.2f}s")
    print(f"nuimcli coco_metrics:            {best_ours:.2f}s")
    print(f"speed-up (baseline / ours): {best_ref / best_ours:.2f}x   numbers identical: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
