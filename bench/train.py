"""CPU training-step benchmark (run by hand): nuimcli's mask-rcnn-r50-1x vs torchvision's Mask R-CNN.

Both sides train on the same synthetic nuImages images (written by ``generate_nuimages`` +
``nuim convert`` at the benchmark size, default 640x360), batch 2, same thread count, in the
same run, from random weights (no download), SGD lr 0.0025 (the preset lr scaled to batch 2),
momentum 0.9, weight decay 1e-4.

* ours: ``nuim train``'s own pieces — ``build_train_dataset`` + grouped sampler + DataLoader
  with the preset's default workers (2), the preset's train transform with
  ``data.train_scales`` set to the benchmark size (so no resize: same pixels as the baseline),
  ``Trainer.train_step`` (forward + backward + optimiser step).
* baseline: ``torchvision.models.detection.MaskRCNN`` with the ResNet-50-FPN that
  ``maskrcnn_resnet50_fpn`` builds for a pretrained backbone (FrozenBatchNorm, stem + layer1
  frozen — the same frozen parts as the preset), ``min_size``/``max_size`` = the image size so
  its transform does not resize, 11 classes; fed the same images and targets, already as
  tensors (its data time is not counted).

Reported per side (each in a fresh subprocess, so peak RSS is its own): median step time,
ratio ours / torchvision (target <= 1.0), peak RSS, and for ours the mean time per step spent
waiting for data (must stay well below the step time with the default workers). The two
sides run alternately ``--rounds`` times and each side's best round counts, so a burst of load
from other processes does not decide the ratio.

    python bench/train.py                  # 640x360, batch 2, 2 threads, 6 timed steps
    python bench/train.py --threads 4 --steps 10 --width 800 --height 450
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = "torchvision-maskrcnn_resnet50_fpn"
OURS = "mask-rcnn-r50-1x"


def _make_data(root: Path, width: int, height: int, n: int) -> None:
    from nuimcli.data.convert import convert
    from nuimcli.synthetic import generate_nuimages

    generate_nuimages(root, version="v1.0-train", num_samples=n, width=width, height=height, seed=0,
                      sweeps_per_sample=0, objects_per_image=(6, 14))
    convert(root, ["v1.0-train"], nproc=0)


def _preset(width: int, height: int, workers: int | None):
    from nuimcli.presets import load_preset

    sets = [f"data.train_scales=[[{width}, {height}], [{width}, {height}]]", "data.samples_per_gpu=2",
            "init.pretrained_url=null", "init.pretrained=null"]
    if workers is not None:
        sets.append(f"data.workers_per_gpu={workers}")
    return load_preset(OURS, sets)


def _worker(name: str, root: str, width: int, height: int, threads: int, steps: int, warmup: int,
            workers: int | None) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    root_p = Path(root)
    preset = _preset(width, height, workers)
    step_times: list[float] = []
    data_times: list[float] = []
    if name == OURS:
        from nuimcli.engine.trainer import TrainOptions, Trainer

        opts = TrainOptions(work_dir=root_p / "work", data_root=root_p, progress=False, tensorboard=False,
                            evaluate=False, log_interval=10**6)
        trainer = Trainer(preset, opts)
        trainer.setup()
        trainer.sampler.set_epoch(0)
        it = iter(trainer._loader())
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            trainer.train_step(batch)
            t2 = time.perf_counter()
            if i >= warmup:
                data_times.append(t1 - t0)
                step_times.append(t2 - t1)
    else:
        import numpy as np
        from torchvision.models import resnet50
        from torchvision.models.detection import MaskRCNN
        from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
        from torchvision.ops import misc

        from nuimcli.data.dataset import build_train_dataset

        ds = build_train_dataset(root_p / "annotations" / "nuimages_v1.0-train.json", root_p, preset)
        from nuimcli.models.build import build_backbone

        body = resnet50(weights=None, norm_layer=misc.FrozenBatchNorm2d)
        # Same starting backbone as ours (mmdet init: zero-initialised last BN of each block). With
        # torchvision's own init and identity FrozenBN the activations explode, the loss is NaN by
        # the third step and almost no RoIs survive, which would make the baseline look cheap.
        start = build_backbone(preset.model.backbone).state_dict()
        body.load_state_dict({k: v for k, v in start.items() if not k.endswith("num_batches_tracked")},
                             strict=False)
        model = MaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=11, min_size=min(width, height),
                         max_size=max(width, height))
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.0025, momentum=0.9, weight_decay=1e-4)

        def sample(i):
            raw = ds.load_raw(i % len(ds))
            img = torch.from_numpy(np.ascontiguousarray(raw["img"][:, :, ::-1].transpose(2, 0, 1))).float() / 255
            tgt = {"boxes": torch.from_numpy(raw["bboxes"]), "labels": torch.from_numpy(raw["labels"]) + 1,
                   "masks": torch.from_numpy(raw["masks"])}
            return img, tgt

        batches = [[sample(2 * i), sample(2 * i + 1)] for i in range(warmup + steps)]
        for i, b in enumerate(batches):
            t1 = time.perf_counter()
            losses = model([x for x, _ in b], [t for _, t in b])
            total = sum(losses.values())
            if not torch.isfinite(total):
                raise SystemExit(f"baseline loss is {float(total)} at step {i}: the comparison would be meaningless")
            opt.zero_grad()
            total.backward()
            opt.step()
            t2 = time.perf_counter()
            if i >= warmup:
                step_times.append(t2 - t1)
    return {
        "name": name,
        "step_s": statistics.median(step_times),
        "step_s_all": step_times,
        "data_s": statistics.mean(data_times) if data_times else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None, help="data workers (default: the preset's 2)")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="alternate the two sides this many times")
    ap.add_argument("--worker", nargs=2, metavar=("NAME", "ROOT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        out = _worker(a.worker[0], a.worker[1], a.width, a.height, a.threads, a.steps, a.warmup, a.workers)
        print(json.dumps(out))
        return
    with tempfile.TemporaryDirectory(prefix="nuim-bench-train-") as tmp:
        _make_data(Path(tmp), a.width, a.height, a.images)
        results: dict = {}
        for _ in range(a.rounds):
            for name in (BASELINE, OURS):
                cmd = [sys.executable, __file__, "--worker", name, tmp, "--width", str(a.width), "--height",
                       str(a.height), "--threads", str(a.threads), "--steps", str(a.steps), "--warmup",
                       str(a.warmup)]
                if a.workers is not None:
                    cmd += ["--workers", str(a.workers)]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    sys.exit(f"{name} failed:\n{r.stderr}")
                out = json.loads(r.stdout.strip().splitlines()[-1])
                print(f"  round: {name} {out['step_s']:.3f} s/step", file=sys.stderr)
                if name not in results or out["step_s"] < results[name]["step_s"]:
                    results[name] = out
    base, ours = results[BASELINE], results[OURS]
    print(f"training step, CPU, {a.width}x{a.height}, batch 2, {a.threads} threads, median of {a.steps} steps, "
          f"best of {a.rounds} alternating rounds")
    print(f"{'model':40s} {'step s':>8s} {'ratio':>6s} {'peak RSS MB':>12s} {'data s/step':>12s}")
    for r in (base, ours):
        ratio = r["step_s"] / base["step_s"]
        data = "-" if r["data_s"] is None else f"{r['data_s']:.3f}"
        print(f"{r['name']:40s} {r['step_s']:8.3f} {ratio:6.2f} {r['peak_rss_mb']:12.0f} {data:>12s}")
    print(f"ratio ours / torchvision = {ours['step_s'] / base['step_s']:.2f} (target <= 1.0)")


if __name__ == "__main__":
    main()
