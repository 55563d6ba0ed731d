"""``nuim demo``: parse, run :func:`nuimcli.engine.demo.run_demo`, render each step and the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from nuimcli.cli import app
from nuimcli.engine.demo import DEMO_PRESET, DemoContext, run_demo
from nuimcli.utils.progress import err_console, stdout_console


def _render_training(result) -> None:
    """The demo's training log as a table, one row per logged interval (an epoch)."""
    from rich.table import Table

    table = Table(title=f"demo training: {DEMO_PRESET} (log.jsonl)")
    for col in ("epoch", "iter", "loss", "rpn cls", "rpn box", "cls", "box", "mask", "lr"):
        table.add_column(col, justify="right")
    for rec in result.history:
        table.add_row(str(rec["epoch"]), str(rec["global_iter"]), f"{rec['loss']:.3f}", f"{rec['loss_rpn_cls']:.3f}",
                      f"{rec['loss_rpn_bbox']:.3f}", f"{rec['loss_cls']:.3f}", f"{rec['loss_bbox']:.3f}",
                      f"{rec['loss_mask']:.3f}", f"{rec['lr']:.2e}")
    err_console.print(table)


def _report_step(name: str, ctx: DemoContext, seconds: Optional[float]) -> None:
    if seconds is None:
        err_console.print(f"[bold]demo:[/] {name} …")
        return
    if name == "train":
        _render_training(ctx.results[name])
    err_console.print(f"[bold]demo:[/] {name} done in {seconds:.1f} s")


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
    run_demo(ctx, on_step=_report_step)
    console = stdout_console()
    console.print("[bold]nuim demo finished.[/] Outputs:")
    for line in ctx.lines:
        console.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
