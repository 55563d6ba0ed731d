"""The demo as a job: the whole path on a small synthetic set, one step after another.

Steps are plain functions in :data:`DEMO_STEPS`, run in order by :func:`run_demo` on a shared
:class:`DemoContext`; a step is added by appending ``("name", function)``. ``nuim demo``
(:mod:`nuimcli.cli.demo_cmd`) only parses its options, calls :func:`run_demo` and renders.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

DEMO_VERSIONS = ("v1.0-train", "v1.0-val")
#: Iterations of the demo's training step: the tiny preset's whole schedule (10 epochs of the
#: 24-image demo set at batch 2).
DEMO_TRAIN_ITERS = 120
#: One log row per epoch: the logged losses are means over the interval, and a per-epoch mean
#: sees every image once (a 3-iteration mean swings by +-0.5 with the images it happened to draw).
DEMO_LOG_INTERVAL = 12
DEMO_SCORE_THR = 0.3
#: val key frames the demo draws its predictions on.
DEMO_PREDICT_IMAGES = 4
DEMO_PRESET = "mask-rcnn-r18-tiny"


@dataclass
class DemoContext:
    """What the steps share: the demo folder and what each step produced."""

    out: Path
    nproc: int = 2
    seed: int = 0  #: training seed (weights, sampling, data order)
    results: dict[str, Any] = field(default_factory=dict)  # step name -> its result
    lines: list[str] = field(default_factory=list)         # "where is what", reported at the end

    @property
    def data_root(self) -> Path:
        return self.out / "data" / "nuimages"

    @property
    def ann_dir(self) -> Path:
        return self.data_root / "annotations"


def step_data(ctx: DemoContext) -> Any:
    """Write the synthetic nuImages set (tables + JPEGs) under ``<out>/data/nuimages``."""
    from nuimcli.synthetic import write_default_demo_set

    summaries = write_default_demo_set(ctx.data_root)
    n = ", ".join(f"{s.version}: {s.num_key_frames} images, {s.num_objects} objects" for s in summaries)
    ctx.lines.append(f"synthetic nuImages ({n}): {ctx.data_root}")
    return summaries


def step_convert(ctx: DemoContext) -> Any:
    """``nuim convert`` of the demo versions into ``<data_root>/annotations``."""
    from nuimcli.engine.convert import run_convert

    summaries = run_convert(ctx.data_root, list(DEMO_VERSIONS), ctx.ann_dir, ctx.nproc, "nuimages")
    for s in summaries:
        ctx.lines.append(f"COCO json {s.version} ({s.images} images, {s.annotations} annotations): {s.json_path}")
    ctx.lines.append(f"semantic PNGs: {summaries[0].semantic_dir}")
    return summaries


def step_train(ctx: DemoContext) -> Any:
    """``nuim train mask-rcnn-r18-tiny`` for :data:`DEMO_TRAIN_ITERS` iterations (one log row per epoch)."""
    from nuimcli.engine.trainer import TrainOptions, train
    from nuimcli.presets import load_preset

    preset = load_preset(DEMO_PRESET)
    work = ctx.out / "work_dirs" / preset.name
    opts = TrainOptions(work_dir=work, data_root=ctx.data_root, device="cpu", max_iters=DEMO_TRAIN_ITERS, seed=ctx.seed,
                        log_interval=DEMO_LOG_INTERVAL, evaluate=False, tensorboard=False)
    result = train(preset, opts)
    if result.history:
        first, last = result.history[0]["loss"], result.history[-1]["loss"]
        ctx.lines.append(f"tiny Mask R-CNN, {result.global_iter} iterations, loss {first:.3f} → {last:.3f}: "
                         f"{result.checkpoint} (log: {work / 'log.jsonl'})")
    return result


def step_eval(ctx: DemoContext) -> Any:
    """``nuim eval`` of the demo checkpoint on the synthetic val split (box and mask AP)."""
    import nuimcli
    from nuimcli.engine.evaluate import evaluate_model, flat_metrics

    model = nuimcli.load(str(ctx.results["train"].checkpoint))
    out = evaluate_model(model, ctx.ann_dir / "nuimages_v1.0-val.json", ctx.data_root, distributed=False)
    flat = flat_metrics(out.metrics)
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    ctx.lines.append(
        f"val AP after the short demo training: box {fmt(flat.get('bbox_mAP'))} (AP50 {fmt(flat.get('bbox_mAP_50'))}), "
        f"mask {fmt(flat.get('segm_mAP'))} — train longer for real numbers: nuim train {DEMO_PRESET} "
        f"--data-root {ctx.data_root}")
    ctx.results["model"] = model
    return flat


def step_predict(ctx: DemoContext) -> Any:
    """``nuim predict`` on the val key frames: pictures and JSON under ``<out>/predictions``."""
    from nuimcli.engine.predict import predict_files

    out = ctx.out / "predictions"
    val = json.loads((ctx.ann_dir / "nuimages_v1.0-val.json").read_text())
    # images the model never trained on: the val split's key frames, in the file's order
    images = [ctx.data_root / im["file_name"] for im in val["images"][:DEMO_PREDICT_IMAGES]]
    items = predict_files(ctx.results["model"], [str(p) for p in images], out, score_thr=DEMO_SCORE_THR)
    drawn = sum(i.num_detections for i in items if i.ok)
    ctx.lines.append(f"prediction pictures + JSON ({len(items)} images, {drawn} detections ≥ {DEMO_SCORE_THR}): {out}")
    return items


#: (name, step) in execution order; append to extend the demo.
DEMO_STEPS: list[tuple[str, Callable[[DemoContext], Any]]] = [
    ("data", step_data),
    ("convert", step_convert),
    ("train", step_train),
    ("eval", step_eval),
    ("predict", step_predict),
]

#: Called before a step (``seconds`` None) and after it (its wall time): the CLI's report hook.
StepHook = Callable[[str, DemoContext, Optional[float]], None]


def run_demo(ctx: DemoContext, on_step: Optional[StepHook] = None) -> DemoContext:
    """Run every step of :data:`DEMO_STEPS` in order on ``ctx``; returns it with each step's result."""
    for name, step in DEMO_STEPS:
        if on_step:
            on_step(name, ctx, None)
        t0 = time.perf_counter()
        ctx.results[name] = step(ctx)
        if on_step:
            on_step(name, ctx, time.perf_counter() - t0)
    return ctx
