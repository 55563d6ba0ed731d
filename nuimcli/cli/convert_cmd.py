"""``nuim convert``: nuImages tables -> COCO json + semantic PNGs (argument parsing and rendering only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from nuimcli.cli import app
from nuimcli.utils.progress import err_console, stdout_console


def summary_table(summaries: list) -> Table:
    """One column per version: images, annotations per class, dropped/ignored rows, PNGs, time."""
    from nuimcli.data.nuimages import NUS_CATEGORIES

    t = Table(title="nuim convert")
    t.add_column("")
    for s in summaries:
        t.add_column(s.version, justify="right")
    rows = [("images (key frames)", lambda s: s.images),
            ("annotations", lambda s: s.annotations)]
    rows += [(f"  {c}", (lambda c: lambda s: s.annotations_per_class[c])(c)) for c in NUS_CATEGORIES]
    rows += [
        ("objects painted only (no class)", lambda s: s.objects_painted_only),
        ("null object masks dropped", lambda s: s.null_object_masks),
        ("null surface masks dropped", lambda s: s.null_surface_masks),
        ("annotations on sweeps ignored", lambda s: s.non_key_frame_annotations),
        ("PNGs written", lambda s: s.pngs_written),
        ("PNGs reused (unchanged)", lambda s: s.pngs_reused),
        ("max semantic index", lambda s: "—" if s.max_semantic_index is None else s.max_semantic_index),
        ("time", lambda s: f"{s.seconds:.1f} s"),
    ]
    for name, get in rows:
        t.add_row(name, *[f"{get(s):,}" if isinstance(get(s), int) else str(get(s)) for s in summaries])
    return t


@app.command("convert")
def convert_cmd(
    data_root: Path = typer.Option(Path("./data/nuimages"), "--data-root",
                                   help="nuImages root holding the version folders (v1.0-train/, ...)."),
    version: List[str] = typer.Option(["v1.0-mini"], "--version", metavar="VERSION...",
                                      help="Version(s) to convert; several after one flag work: "
                                           "--version v1.0-train v1.0-val."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Output folder.",
                                           show_default="<data-root>/annotations"),
    nproc: int = typer.Option(4, "--nproc", min=0, help="Worker processes painting the semantic PNGs "
                                                       "(0 or 1: in this process)."),
    extra_tag: str = typer.Option("nuimages", "--extra-tag", help="JSON file name prefix: <tag>_<version>.json."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Convert nuImages tables to COCO json + semantic PNGs, as mmdetection3d's nuimage_converter.py.

    Writes <out-dir>/<extra-tag>_<version>.json and <out-dir>/semantic_masks/samples/<CAM>/<name>.png.
    Re-running after an interruption repaints only PNGs that are missing or whose inputs changed.
    """
    from nuimcli.cli.interrupt import on_interrupt
    from nuimcli.data.convert import SEMANTIC_DIR, default_out_dir
    from nuimcli.engine.convert import run_convert
    from nuimcli.utils.paths import check_out_dir

    out_path = check_out_dir(out_dir if out_dir is not None else default_out_dir(data_root), "--out-dir")
    on_interrupt(f"the finished semantic PNGs in {out_path / SEMANTIC_DIR} and the JSON of every finished version",
                 note="it paints only the missing PNGs")
    summaries = run_convert(data_root, version, out_dir, nproc, extra_tag, quiet=json_out)
    if json_out:
        print(json.dumps([s.to_dict() for s in summaries], indent=2))
        return
    out = stdout_console()
    out.print(summary_table(summaries))
    for s in summaries:
        out.print(f"{s.version}: [bold]{escape(str(s.json_path))}[/]  (semantic PNGs in {escape(str(s.semantic_dir))})",
                  highlight=False)
    err_console.print("[green]done[/]")
