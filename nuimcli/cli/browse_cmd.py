"""``nuim browse``: draw the ground truth of a converted split (masks, boxes, classes, attributes, semantic map)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from nuimcli.cli import app
from nuimcli.errors import PartialFailure, UserError
from nuimcli.utils.progress import err_console, stdout_console


@app.command("browse")
def browse_cmd(
    data_root: Path = typer.Option(Path("data/nuimages"), "--data-root", help="nuImages root (images, "
                                   "annotations/ from `nuim convert`, raw tables for attributes)."),
    version: str = typer.Option("v1.0-val", "--version", help="Split, e.g. v1.0-mini, v1.0-val."),
    out: Path = typer.Option(..., "--out", help="Folder for the pictures (<image stem>.jpg)."),
    sample: Optional[str] = typer.Option(None, "--sample", help="One image: a sample or sample_data token, or "
                                         "an image file name or stem."),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="Without --sample: the first N images (default 10)."),
    semantic: bool = typer.Option(False, "--semantic", help="Show the semantic PNG underneath."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Draw the ground truth of a converted split: instance masks, boxes, class names with attributes."""
    from nuimcli.engine.browse import browse
    from nuimcli.utils.paths import check_out_dir

    check_out_dir(out, "--out")
    if sample is not None and n is not None:
        raise UserError("give either --sample TOKEN or --n N, not both")
    items = browse(data_root, version, out, sample=sample, n=n or 10, semantic=semantic)
    failed = [i for i in items if i.error]
    if json_out:
        print(json.dumps([vars(i) for i in items], indent=2))
    else:
        t = Table(title=f"{version}: {len(items) - len(failed)} of {len(items)} images drawn into {out}")
        for col in ("image", "instances", "written / error"):
            t.add_column(col)
        for i in items:
            t.add_row(escape(i.image), str(i.instances), escape(i.error or i.out or ""))
        stdout_console().print(t)
    if failed:
        raise PartialFailure(f"{len(failed)} of {len(items)} images could not be drawn (first: {failed[0].error})")
