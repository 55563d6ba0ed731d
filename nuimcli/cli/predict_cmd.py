"""``nuim predict``: pictures with the detections drawn, and a JSON file per image."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from nuimcli.cli import EXACT_HELP, HALF_HELP, TRUST_HELP, app
from nuimcli.errors import PartialFailure, UserError
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


def check_out_dir_early(out: Path) -> None:
    """--out checked before the model is loaded (or downloaded)."""
    from nuimcli.utils.paths import check_out_dir

    check_out_dir(out, "--out")


@app.command("predict")
def predict_cmd(
    inputs: Optional[List[str]] = typer.Argument(None, help="Image files, folders (their images) or glob patterns "
                                                 "(quote them: 'imgs/*.jpg'), or video files (.mp4, .mov, .mkv …)."),
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
    semantic: bool = typer.Option(False, "--semantic", help="Also save HTC's semantic map as a PNG in the devkit "
                                  "index encoding of `nuim convert`'s semantic PNGs (<stem>_semantic.png; for "
                                  "videos <name>_semantic/<frame>.png)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads."),
    seed: int = typer.Option(0, "--seed", help="torch seed (inference is deterministic; kept for repeatability)."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help=TRUST_HELP),
    gif: bool = typer.Option(False, "--gif", help="Videos: also write an animated <name>.gif."),
    every: int = typer.Option(1, "--every", min=1, help="Videos and sequences: predict every N-th frame."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Videos and sequences: stop "
                                             "after this many predicted frames."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frame rate of the written video (default: the "
                                        "input's, the nuImages timestamps', or 10 for images)."),
    as_video: Optional[str] = typer.Option(None, "--as-video", help="Join the input images (sorted) into one "
                                           "annotated NAME.mp4 + NAME.jsonl."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="nuImages root, with --sample or --log."),
    version: str = typer.Option("v1.0-mini", "--version", help="nuImages version, with --data-root."),
    sample: Optional[str] = typer.Option(None, "--sample", help="nuImages sample token: its sweeps and key frame "
                                         "as one video."),
    log: Optional[str] = typer.Option(None, "--log", help="nuImages log (logfile or token): every sample of it "
                                      "on --camera, one video."),
    camera: Optional[str] = typer.Option(None, "--camera", help="Camera channel for --log, e.g. CAM_FRONT."),
    json_out: bool = typer.Option(False, "--json", help="Videos and sequences: print the results as JSON."),
    exact: bool = typer.Option(False, "--exact", help=EXACT_HELP),
    half: bool = typer.Option(False, "--half", help=HALF_HELP),
) -> None:
    """Detect objects in images: writes <out>/<stem>.jpg (masks, boxes, classes, scores at the input's size) and <out>/<stem>.json (boxes x1,y1,x2,y2, scores, classes, RLE masks).

    Videos, --as-video and --data-root with --sample/--log write <out>/<name>.mp4 (H.264) and <name>.jsonl (one line per frame).
    Unreadable inputs are reported and skipped (exit code 1).
    """
    from nuimcli.engine.sequences import wants_streams

    inputs = inputs or []
    if wants_streams(inputs, as_video, sample is not None or log is not None or data_root is not None):
        from nuimcli.cli.predict_video import run_streams

        check_out_dir_early(out)
        return run_streams(inputs, out, checkpoint=checkpoint, preset=preset, device=device, score_thr=score_thr,
                           batch_size=batch_size, threads=threads, seed=seed, trust_checkpoint=trust_checkpoint,
                           gif=gif, every=every, max_frames=max_frames, fps=fps, as_video=as_video,
                           data_root=data_root, version=version, sample=sample, log=log, camera=camera,
                           json_out=json_out, exact=exact, half=half, show_semantic=show_semantic,
                           semantic=semantic)
    if not inputs:
        raise UserError("give image files, folders or glob patterns (or a video, or --data-root with --sample)")
    from nuimcli.cli.interrupt import on_interrupt
    from nuimcli.engine.predict import predict_checkpoint
    from nuimcli.utils.paths import check_out_dir

    check_out_dir(out, "--out")  # before the model is loaded (or downloaded)
    on_interrupt(f"the pictures and JSON files already written to {out}", resumes=False,
                 note="it predicts every input again")
    model, items = predict_checkpoint(inputs, out, checkpoint=checkpoint, preset=preset, device=device,
                                      score_thr=score_thr, batch_size=batch_size, show_semantic=show_semantic,
                                      threads=threads, seed=seed, trust_checkpoint=trust_checkpoint, exact=exact, half=half,
                                      semantic=semantic)
    render_summary(items, f"nuim predict ({model.preset.name}, score ≥ {score_thr:g}) → {out}", stdout_console())
    failed = [it for it in items if not it.ok]
    if failed:
        names = ", ".join(it.source for it in failed[:5]) + (" …" if len(failed) > 5 else "")
        raise PartialFailure(f"{len(failed)} of {len(items)} input(s) failed: {names}")
