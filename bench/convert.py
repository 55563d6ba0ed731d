"""Benchmark ``nuim convert`` against the reference converter's approach, measured in the same run.

    python bench/convert.py                      # 1,000 synthetic 1600x900 key frames, 10-30 objects
    python bench/convert.py --images 2000 --work /tmp/nuim-bench --keep

Baseline = what mmdetection3d's ``tools/dataset_converters/nuimage_converter.py`` does, without
mmcv/mmengine: the devkit's ``NuImages(lazy=True)``, and per key frame a scan of the whole
``surface_ann`` and ``object_ann`` lists, ``mask_decode`` of every mask to a full frame, painting
with ``sem[mask == 1] = index``, ``cv2.imwrite`` (= ``mmcv.imwrite``), then one ``json.dump``.

Every run is a separate subprocess on a fresh output folder; it reports its wall time (table loading
included, interpreter start-up excluded) and peak RSS (``getrusage``: the process itself and, for
2 processes, its largest worker). The baseline also runs with 2 processes, as the reference does with
``--nproc 2`` (mmcv's ``track_parallel_progress``: a pool over key frames). Outputs of all runs are
checked to be identical (JSON bytes, PNG pixels). Figures are printed as ratios like with like:
1 process vs 1 process (the headline) and 2 vs 2.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VERSION = "v1.0-train"


# --------------------------------------------------------------------------------------------------
# children

_NUIM = None  # the devkit tables of the baseline: loaded once, inherited by forked workers


def _baseline_image(img: dict) -> list[dict]:
    """The reference converter's per-image work: scan the whole annotation lists, paint, write."""
    import base64

    import cv2
    import numpy as np
    from nuimages.utils.utils import mask_decode, name_to_index_mapping

    from nuimcli.data.nuimages import NAME_MAPPING, NUS_CATEGORIES

    nuim = _NUIM
    cat2id = {n: i for i, n in enumerate(NUS_CATEGORIES)}
    token = img["token"]
    name_to_index = name_to_index_mapping(nuim.category)
    sem = np.zeros((img["height"], img["width"])).astype("uint8")
    for ann in [o for o in nuim.surface_ann if o["sample_data_token"] == token]:
        name = nuim.get("category", ann["category_token"])["name"]
        if ann["mask"] is None:
            continue
        sem[mask_decode(ann["mask"]) == 1] = name_to_index[name]
    annotations = []
    objs = sorted([o for o in nuim.object_ann if o["sample_data_token"] == token], key=lambda k: k["token"])
    for ann in objs:
        name = nuim.get("category", ann["category_token"])["name"]
        if ann["mask"] is None:
            continue
        sem[mask_decode(ann["mask"]) == 1] = name_to_index[name]
        if name in NAME_MAPPING:
            x0, y0, x1, y1 = ann["bbox"]
            annotations.append(dict(
                image_id=img["id"], category_id=cat2id[NAME_MAPPING[name]], bbox=[x0, y0, x1 - x0, y1 - y0],
                area=(x1 - x0) * (y1 - y0),
                segmentation=dict(counts=base64.b64decode(ann["mask"]["counts"]).decode(),
                                  size=ann["mask"]["size"]), iscrowd=0))
    path = os.path.join(_SEG_ROOT, img["file_name"].replace("jpg", "png"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, sem)
    return annotations


_SEG_ROOT = ""


def _baseline(root: str, out: str, nproc: int = 1) -> int:
    """The reference converter's algorithm on the official devkit: serial for ``nproc`` 1, else
    mmcv's ``track_parallel_progress`` (a fork pool, ``imap`` with chunksize 1, order kept)."""
    global _NUIM, _SEG_ROOT
    from nuimages import NuImages

    from nuimcli.data.nuimages import NUS_CATEGORIES

    _NUIM = NuImages(dataroot=root, version=VERSION, verbose=False, lazy=True)
    _SEG_ROOT = os.path.join(out, "semantic_masks")
    categories = [dict(id=i, name=n) for i, n in enumerate(NUS_CATEGORIES)]
    images = [dict(id=i, token=sd["token"], file_name=sd["filename"], width=sd["width"], height=sd["height"])
              for i, sd in enumerate(s for s in _NUIM.sample_data if s["is_key_frame"])]
    if nproc > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(nproc) as pool:
            outputs = list(pool.imap(_baseline_image, images, 1))
    else:
        outputs = [_baseline_image(img) for img in images]
    anns = []
    for a in outputs:
        for x in a:
            x.update(id=len(anns))
            anns.append(x)
    with open(os.path.join(out, f"nuimages_{VERSION}.json"), "w") as f:
        json.dump(dict(images=images, annotations=anns, categories=categories), f)
    return len(images)


def _ours(root: str, out: str, nproc: int) -> int:
    from nuimcli.data.convert import convert

    [s] = convert(root, [VERSION], out, nproc=nproc)
    return s.images


def _generate(root: str, images: int, objects: tuple[int, int], sweeps: int) -> None:
    from nuimcli.synthetic import generate_nuimages

    t = time.perf_counter()
    s = generate_nuimages(root, VERSION, num_samples=images, width=1600, height=900, seed=0,
                          objects_per_image=objects, write_images=False, sweeps_per_sample=sweeps)
    print(f"generated {s.num_key_frames} key frames, {s.num_sweeps} sweeps, {s.num_objects} objects "
          f"({s.num_null_masks} null masks) in {time.perf_counter() - t:.1f} s")


def child(mode: str, root: str, out: str, nproc: int) -> None:
    # Import first so that both sides are timed on the conversion alone.
    import cv2  # noqa: F401
    import numpy  # noqa: F401

    if mode == "baseline":
        import nuimages  # noqa: F401
    else:
        import nuimcli.data.convert  # noqa: F401
    def cpu() -> float:
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    t0, c0 = time.perf_counter(), cpu()
    n = _baseline(root, out, nproc) if mode == "baseline" else _ours(root, out, nproc)
    dt, dc = time.perf_counter() - t0, cpu() - c0
    print(json.dumps({
        "images": n, "seconds": dt, "cpu_seconds": dc,
        "rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


def _burn(n: int) -> int:
    s = 0
    for i in range(n):
        s += i
    return s


def available_speedup(n: int = 20_000_000) -> float:
    """Speed-up of 2 processes over 1 on pure Python CPU work, now: what the machine can give."""
    import multiprocessing as mp

    t = time.perf_counter()
    _burn(n)
    _burn(n)
    one = time.perf_counter() - t
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_burn, [1000, 1000])  # start-up outside the timing
        t = time.perf_counter()
        pool.map(_burn, [n, n])
        two = time.perf_counter() - t
    return one / two


# --------------------------------------------------------------------------------------------------
# parent

def run_child(mode: str, root: Path, out: Path, nproc: int = 1, fresh: bool = True) -> dict:
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, __file__, "--child", mode, "--root", str(root), "--out", str(out),
                        "--nproc", str(nproc)], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def same_outputs(a: Path, b: Path) -> int:
    import cv2
    import numpy as np

    name = f"nuimages_{VERSION}.json"
    assert (a / name).read_bytes() == (b / name).read_bytes(), "JSON differs"
    n = 0
    for p in sorted((b / "semantic_masks").rglob("*.png")):
        q = a / "semantic_masks" / p.relative_to(b / "semantic_masks")
        assert np.array_equal(cv2.imread(str(p), -1), cv2.imread(str(q), -1)), f"PNG differs: {q}"
        n += 1
    assert n == sum(1 for _ in (a / "semantic_masks").rglob("*.png")), "different PNG sets"
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1000, help="synthetic key frames (default 1000)")
    ap.add_argument("--objects", type=int, nargs=2, default=(10, 30), help="objects per image (min max)")
    ap.add_argument("--sweeps", type=int, default=12, help="sweeps per key frame (real nuImages: 12)")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--nproc", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.root, args.out, args.nproc)
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="nuim-bench-"))
    root = work / "nuimages"
    try:
        if not (root / VERSION / "object_ann.json").exists():
            # In a subprocess: this process stays small, because Linux carries a process's peak RSS
            # across fork+exec into the measured children.
            subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import convert as b; "
                            "b._generate(sys.argv[2], int(sys.argv[3]), (int(sys.argv[4]), int(sys.argv[5])), "
                            "int(sys.argv[6]))", str(Path(__file__).parent), str(root), str(args.images),
                            *map(str, args.objects), str(args.sweeps)], check=True)
        sizes = {t: (root / VERSION / f"{t}.json").stat().st_size / 1e6
                 for t in ("sample_data", "object_ann", "surface_ann")}
        print("tables (MB): " + ", ".join(f"{k} {v:.1f}" for k, v in sizes.items()))

        before = available_speedup()
        runs = {}
        for label, mode, nproc in (("baseline (reference approach), 1 process", "baseline", 1),
                                   ("nuim convert --nproc 1", "ours", 1),
                                   ("baseline (reference approach), 2 processes", "baseline", 2),
                                   ("nuim convert --nproc 2", "ours", 2)):
            runs[label] = r = run_child(mode, root, work / f"out-{mode}-{nproc}", nproc)
            r["out"] = work / f"out-{mode}-{nproc}"
            workers = f" + largest worker {r['rss_children_mb']:.0f} MB" if nproc > 1 else ""
            print(f"{label:44s} {r['images'] / r['seconds']:8.1f} img/s  {r['seconds']:7.1f} s wall  "
                  f"{1000 * r['cpu_seconds'] / r['images']:6.1f} ms CPU/img  peak RSS {r['rss_self_mb']:.0f} MB{workers}")
        base, one, base2, two = runs.values()
        # Rerun on a finished output: every PNG is reused (what an interrupted run pays for its done part).
        resumed = run_child("ours", root, one["out"], 1, fresh=False)
        n = same_outputs(one["out"], base["out"])
        same_outputs(two["out"], base["out"])
        same_outputs(base2["out"], base["out"])
        print(f"outputs identical (JSON bytes, {n} PNGs' pixels) for all four runs")

        def rate(r: dict) -> float:
            return r["images"] / r["seconds"]

        print("\nratios (like with like)")
        print(f"  HEADLINE speed, 1 process vs 1 process: nuim / baseline = {rate(one) / rate(base):5.2f}x "
              f"(CPU time per image: {base['cpu_seconds'] / one['cpu_seconds']:5.2f}x)")
        print(f"  speed, 2 processes vs 2 processes:      nuim / baseline = {rate(two) / rate(base2):5.2f}x")
        avail = (before + available_speedup()) / 2
        print(f"  scaling 2 procs / 1 proc: nuim {one['seconds'] / two['seconds']:5.2f}x, baseline "
              f"{base['seconds'] / base2['seconds']:5.2f}x (pure-CPU 2-process speed-up available on this machine "
              f"now: {avail:.2f}x; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        print(f"  peak RSS, 1 process: nuim / baseline    = {one['rss_self_mb'] / base['rss_self_mb']:5.2f}")
        # upper bounds: forked pages are shared
        worst2 = two["rss_self_mb"] + 2 * two["rss_children_mb"]
        base_worst2 = base2["rss_self_mb"] + 2 * base2["rss_children_mb"]
        print(f"  peak RSS, 2 processes (parent + 2 x largest worker): nuim / baseline = {worst2 / base_worst2:5.2f}")
        print(f"  rerun on finished output (all PNGs reused): {rate(resumed):.0f} img/s "
              f"= {rate(resumed) / rate(base):.0f}x the 1-process baseline")
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
