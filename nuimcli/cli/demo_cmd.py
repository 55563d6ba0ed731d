"""``nuim demo``: the whole path on a small synthetic set, one step after another.

Steps are plain functions in :data:`DEMO_STEPS`, run in order on a shared :class:`DemoContext`;
a later step (train, evaluate, predict) is added by appending ``("name", function)``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import typer
from rich.markup import escape

from nuimcli.cli import app
from nuimcli.utils.progress import err_console, stdout_console

DEMO_VERSIONS = ("v1.0-train", "v1.0-val")


@dataclass
class DemoContext:
    """What the steps share: the demo folder and what each step produced."""

    out: Path
    nproc: int = 2
    seed: int = 0  #: training seed (weights, sampling, data order)
    results: dict[str, Any] = field(default_factory=dict)  # step name -> its result
    lines: list[str] = field(default_factory=list)         # "where is what", printed at the end

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


#: (name, step) in execution order; append to extend the demo.
DEMO_STEPS: list[tuple[str, Callable[[DemoContext], Any]]] = [
    ("data", step_data),
    ("convert", step_convert),
]


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("./nuim-demo"), "--out", help="Folder for everything the demo writes."),
    nproc: int = typer.Option(2, "--nproc", min=0, help="Worker processes for the conversion."),
    seed: int = typer.Option(0, "--seed", help="Training seed (initial weights, sampling, data order)."),
) -> None:
    """Run the whole pipeline on a small synthetic nuImages set: generate, convert, train, evaluate, predict."""
    from nuimcli.cli.interrupt import on_interrupt
    from nuimcli.utils.paths import check_out_dir

    ctx = DemoContext(out=check_out_dir(out, "--out"), nproc=nproc, seed=seed)
    on_interrupt(f"what the finished steps wrote under {out}", resumes=False, note="the demo runs every step again")
    for name, step in DEMO_STEPS:
        t0 = time.perf_counter()
        err_console.print(f"[bold]demo:[/] {name} …")
        ctx.results[name] = step(ctx)
        err_console.print(f"[bold]demo:[/] {name} done in {time.perf_counter() - t0:.1f} s")
    console = stdout_console()
    console.print("[bold]nuim demo finished.[/] Outputs:")
    for line in ctx.lines:
        console.print(f"  {escape(line)}", highlight=False, soft_wrap=True)


#: Iterations of the demo's training step: the tiny preset's whole schedule (10 epochs of the
#: 24-image demo set at batch 2).
DEMO_TRAIN_ITERS = 120
#: One table row per epoch: the logged losses are means over the interval, and a per-epoch mean
#: sees every image once (a 3-iteration mean swings by +-0.5 with the images it happened to draw).
DEMO_LOG_INTERVAL = 12


def step_train(ctx: DemoContext) -> Any:
    """``nuim train mask-rcnn-r18-tiny`` for :data:`DEMO_TRAIN_ITERS` iterations; shows the loss falling."""
    from rich.table import Table

    from nuimcli.engine.trainer import TrainOptions, train
    from nuimcli.presets import load_preset

    preset = load_preset("mask-rcnn-r18-tiny")
    work = ctx.out / "work_dirs" / preset.name
    opts = TrainOptions(work_dir=work, data_root=ctx.data_root, device="cpu", max_iters=DEMO_TRAIN_ITERS, seed=ctx.seed,
                        log_interval=DEMO_LOG_INTERVAL, evaluate=False, tensorboard=False)
    result = train(preset, opts)
    table = Table(title="demo training: mask-rcnn-r18-tiny (log.jsonl)")
    for col in ("epoch", "iter", "loss", "rpn cls", "rpn box", "cls", "box", "mask", "lr"):
        table.add_column(col, justify="right")
    for rec in result.history:
        table.add_row(str(rec["epoch"]), str(rec["global_iter"]), f"{rec['loss']:.3f}", f"{rec['loss_rpn_cls']:.3f}",
                      f"{rec['loss_rpn_bbox']:.3f}", f"{rec['loss_cls']:.3f}", f"{rec['loss_bbox']:.3f}",
                      f"{rec['loss_mask']:.3f}", f"{rec['lr']:.2e}")
    err_console.print(table)
    if result.history:
        first, last = result.history[0]["loss"], result.history[-1]["loss"]
        ctx.lines.append(f"tiny Mask R-CNN, {result.global_iter} iterations, loss {first:.3f} → {last:.3f}: "
                         f"{result.checkpoint} (log: {work / 'log.jsonl'})")
    return result


DEMO_STEPS.append(("train", step_train))


def step_eval(ctx: DemoContext) -> Any:
    """``nuim eval`` of the demo checkpoint on the synthetic val split (box and mask AP)."""
    import nuimcli
    from nuimcli.engine.evaluate import flat_metrics, evaluate_model

    ckpt = ctx.results["train"].checkpoint
    model = nuimcli.load(str(ckpt))
    out = evaluate_model(model, ctx.ann_dir / "nuimages_v1.0-val.json", ctx.data_root, distributed=False)
    flat = flat_metrics(out.metrics)
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    ctx.lines.append(
        f"val AP after the short demo training: box {fmt(flat.get('bbox_mAP'))} (AP50 {fmt(flat.get('bbox_mAP_50'))}), "
        f"mask {fmt(flat.get('segm_mAP'))} — train longer for real numbers: nuim train mask-rcnn-r18-tiny "
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


DEMO_SCORE_THR = 0.3
#: val key frames the demo draws its predictions on.
DEMO_PREDICT_IMAGES = 4

DEMO_STEPS.append(("eval", step_eval))
DEMO_STEPS.append(("predict", step_predict))
