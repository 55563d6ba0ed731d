"""``nuim presets``: the presets as a table (or ``--json``)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from nuimcli.cli import app
from nuimcli.presets import Preset, list_presets, load_preset
from nuimcli.utils.progress import stdout_console


def preset_summary(p: Preset) -> dict:
    """The columns of ``nuim presets`` for one preset."""
    r = p.release
    return {
        "name": p.name,
        "row": r.row if r else None,
        "detector": p.model.detector,
        "backbone": p.model.backbone.display_name,
        "pretrain": r.pretrain if r else ("none" if not p.init.pretrained else p.init.pretrained),
        "schedule": r.schedule if r else f"{p.schedule.epochs}e",
        "released": p.has_release,
        "box_ap": r.box_ap if r else None,
        "mask_ap": r.mask_ap if r else None,
        "state_dict_manifest": p.state_dict_manifest,
    }


@app.command("presets")
def presets_command(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the presets: one per row of the mmdetection3d nuImages results table, plus the tiny demo preset."""
    rows = [preset_summary(load_preset(n)) for n in list_presets()]
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="nuim presets")
    for col in ("#", "name", "detector", "backbone", "pretrain", "schedule", "released", "box AP", "mask AP"):
        table.add_column(col, justify="right" if col in ("#", "box AP", "mask AP") else "left",
                         no_wrap=col == "name")
    fmt = lambda v: "—" if v is None else f"{v:.1f}"  # noqa: E731
    for r in rows:
        table.add_row(
            "" if r["row"] is None else str(r["row"]), r["name"], r["detector"], r["backbone"],
            str(r["pretrain"]), r["schedule"], "yes" if r["released"] else "no", fmt(r["box_ap"]), fmt(r["mask_ap"]),
        )
    stdout_console().print(table)
