"""``nuim plot``: training curves of one or several runs (their ``log.jsonl``) in one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from nuimcli.cli import app
from nuimcli.errors import UserError
from nuimcli.utils.progress import err_console


@app.command("plot")
def plot_cmd(
    logs: List[Path] = typer.Argument(..., help="log.jsonl files of `nuim train` (one curve per file)."),
    out: Path = typer.Option(Path("curves.png"), "--out", "-o", help="PNG to write."),
    keys: Optional[str] = typer.Option(None, "--keys", help="Comma-separated keys, e.g. loss,lr,bbox_mAP "
                                       "(default: loss, every loss term, lr, bbox_mAP, segm_mAP)."),
    smooth: float = typer.Option(0.6, "--smooth", min=0.0, max=0.99, help="Smoothing of the loss curves "
                                 "(exponential moving average weight; 0 = none)."),
) -> None:
    """Training curves (loss terms smoothed, learning rate, val metrics per epoch), runs overlaid."""
    from nuimcli.analysis.train_curves import read_log, series
    from nuimcli.visual.figures import curves_figure

    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: must end in .png")
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; name the PNG file")
    wanted = [k.strip() for k in keys.split(",") if k.strip()] if keys else None
    names = _run_names(logs)
    runs = [(name, series(read_log(p), wanted, smooth)) for name, p in zip(names, logs)]
    curves_figure(runs, out, title="training curves" if len(runs) == 1 else f"training curves of {len(runs)} runs",
                  smoothed=smooth > 0)
    err_console.print(escape(f"wrote {out}"))


def _run_names(logs: List[Path]) -> List[str]:
    """A legend label per log: its folder's name (``work_dirs/<run>/log.jsonl``), the path when two clash."""
    names = [p.resolve().parent.name or str(p) for p in logs]
    return [str(p) if names.count(n) > 1 else n for n, p in zip(names, logs)]
