"""``nuim predict``: pictures with the detections drawn, and a JSON file per image."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from nuimcli.cli import EXACT_HELP, HALF_HELP, TRUST_HELP, app
from nuimcli.errors import PartialFailure
from nuimcli.utils.device import AUTO
from nuimcli.utils.progress import stdout_console


#: Up to this many inputs the summary has one row per file; above, totals per class plus the failures.
PER_FILE_ROWS = 20


def render_summary(items: list, title: str, console: Console) -> None:
    """The end-of-run table: per file (few inputs) or per class with totals (many), failures always named."""
    from collections import Counter

    ok = [it for it in items if it.ok]
    failed = [it for it in items if not it.ok]
    if len(items) <= PER_FILE_ROWS:
        table = Table(title=title)
        for col in ("input", "size", "detections", "classes", "written"):
            table.add_column(col, justify="right" if col == "detections" else "left")
        for it in items:
            if it.ok:
                classes = ", ".join(f"{k}×{v}" for k, v in it.classes.items()) or "—"
                table.add_row(it.source, f"{it.width}×{it.height}", str(it.num_detections), classes,
                              f"[green]{Path(it.image_out).name}[/] + .json")
            else:
                table.add_row(it.source, "", "", "", f"[red]failed: {it.error}[/]")
        console.print(table)
        return
    per_class: Counter = Counter()
    for it in ok:
        per_class.update(it.classes)
    table = Table(title=title, caption=f"{len(ok)} image(s) written, {len(failed)} failed, "
                                       f"{sum(it.num_detections for it in ok)} detections")
    table.add_column("class")
    table.add_column("detections", justify="right")
    table.add_column("images", justify="right")
    for name, n in per_class.most_common():
        table.add_row(name, str(n), str(sum(1 for it in ok if name in it.classes)))
    console.print(table)
    if failed:
        ft = Table(title="failed inputs")
        ft.add_column("input")
        ft.add_column("reason")
        for it in failed:
            ft.add_row(it.source, f"[red]{it.error}[/]")
        console.print(ft)


@app.command("predict")
def predict_cmd(
    inputs: List[str] = typer.Argument(..., help="Image files, folders (their images) or glob patterns "
                                       "(quote them: 'imgs/*.jpg')."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint file or zoo name "
                                             "(default: the preset's released file, or the best released one)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Preset of the checkpoint (when the file cannot "
                                         "tell), or whose released checkpoint to use."),
    out: Path = typer.Option(Path("predictions"), "--out", help="Folder for <stem>.jpg and <stem>.json."),
    score_thr: float = typer.Option(0.3, "--score-thr", min=0.0, max=1.0, help="Draw and write detections "
                                    "scoring at least this."),
    device: str = typer.Option(AUTO, "--device", help="auto (CUDA if available), cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(2, "--batch-size", min=1, help="Images per forward pass."),
    show_semantic: bool = typer.Option(False, "--show-semantic", help="Also paint HTC's semantic map "
                                       "(presets with a semantic head)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads."),
    seed: int = typer.Option(0, "--seed", help="torch seed (inference is deterministic; kept for repeatability)."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help=TRUST_HELP),
    exact: bool = typer.Option(False, "--exact", help=EXACT_HELP),
    half: bool = typer.Option(False, "--half", help=HALF_HELP),
) -> None:
    """Detect objects in images: writes <out>/<stem>.jpg (masks, boxes, classes, scores at the input's size) and <out>/<stem>.json (boxes x1,y1,x2,y2, scores, classes, RLE masks).

    Unreadable inputs are reported and skipped (exit code 1).
    """
    from nuimcli.cli.interrupt import on_interrupt
    from nuimcli.engine.predict import predict_checkpoint
    from nuimcli.utils.paths import check_out_dir

    check_out_dir(out, "--out")  # before the model is loaded (or downloaded)
    on_interrupt(f"the pictures and JSON files already written to {out}", resumes=False,
                 note="it predicts every input again")
    model, items = predict_checkpoint(inputs, out, checkpoint=checkpoint, preset=preset, device=device,
                                      score_thr=score_thr, batch_size=batch_size, show_semantic=show_semantic,
                                      threads=threads, seed=seed, trust_checkpoint=trust_checkpoint, exact=exact, half=half)
    render_summary(items, f"nuim predict ({model.preset.name}, score ≥ {score_thr:g}) → {out}", stdout_console())
    failed = [it for it in items if not it.ok]
    if failed:
        names = ", ".join(it.source for it in failed[:5]) + (" …" if len(failed) > 5 else "")
        raise PartialFailure(f"{len(failed)} of {len(items)} input(s) failed: {names}")
