"""``nuim stats``: statistics of a converted split (and AP per camera of a results file), as tables and a figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from nuimcli.cli import app
from nuimcli.errors import UserError
from nuimcli.utils.progress import err_console, stdout_console


@app.command("stats")
def stats_cmd(
    data_root: Path = typer.Option(Path("data/nuimages"), "--data-root", help="nuImages root (annotations/ from "
                                   "`nuim convert`; raw tables, when there, add attributes and null masks)."),
    version: str = typer.Option("v1.0-val", "--version", help="Split, e.g. v1.0-mini, v1.0-val."),
    results_file: Optional[Path] = typer.Option(None, "--results", help="COCO results on this split (e.g. "
                                                "`nuim eval --out`'s results.json): adds AP per camera."),
    figure: Path = typer.Option(Path("stats.png"), "--out", help="Figure to write (PNG)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document instead of the tables."),
) -> None:
    """Images, objects per class and per image, box sizes, mask areas, attributes, null masks, AP per camera."""
    from nuimcli.analysis.dataset_gt import annotation_attributes, load_raw_extras, load_split
    from nuimcli.analysis.stats import ap_per_camera, split_stats
    from nuimcli.visual.figures import stats_figure

    if figure.suffix.lower() != ".png" or figure.is_dir():
        raise UserError(f"--out {figure}: name a .png file")
    gt = load_split(data_root, version)
    with err_console.status("reading the split …"):
        extras = load_raw_extras(data_root, version)
        doc: dict[str, Any] = {"version": version, "raw_tables": extras is not None,
                               **split_stats(gt, annotation_attributes(gt, extras) if extras else None,
                                             extras.null_masks if extras else None)}
    if results_file is not None:
        with err_console.status("AP per camera …"):
            doc["ap_per_camera"] = ap_per_camera(results_file, gt)
    stats_figure(doc, figure, f"nuImages {version}")
    if json_out:
        print(json.dumps(doc, indent=2))
    else:
        render(doc)
    err_console.print(escape(f"wrote {figure}"))


def render(doc: dict[str, Any]) -> None:
    """The statistics as rich tables on stdout."""
    con = stdout_console()
    t = Table(title=f"{doc['version']}: {doc['images']} images, {doc['objects']} objects "
                    f"({doc['objects_per_image']['mean']:.1f} per image, at most {doc['objects_per_image']['max']})")
    t.add_column("class")
    t.add_column("objects", justify="right")
    if doc["null_masks"] is not None:
        t.add_column("null masks", justify="right")
    if doc["attributes_per_class"] is not None:
        t.add_column("attributes")
    for name, n in doc["objects_per_class"].items():
        row = [name, str(n)]
        if doc["null_masks"] is not None:
            row.append(str(doc["null_masks"].get(name, 0)))
        if doc["attributes_per_class"] is not None:
            attrs = doc["attributes_per_class"].get(name, {})
            row.append(", ".join(f"{a.split('.')[-1]} {c}" for a, c in sorted(attrs.items(), key=lambda x: -x[1])))
        t.add_row(*row)
    con.print(t)
    if doc["null_masks"] is None:
        con.print("(no raw tables under --data-root/<version>: attributes and null masks not shown)")
    h = Table(title="box size sqrt(w·h) / mask area (objects per bin)")
    for col in ("bin (px)", "boxes", "bin (px²)", "masks"):
        h.add_column(col, justify="right")
    be, ae = doc["box_size"]["edges"], doc["mask_area"]["edges"]
    for i, (b, m) in enumerate(zip(doc["box_size"]["histogram"], doc["mask_area"]["histogram"])):
        h.add_row(_bin(be, i), str(b), _bin(ae, i), str(m))
    con.print(h)
    cams = doc.get("ap_per_camera")
    if cams:
        c = Table(title="AP per camera (%)")
        for col in ("camera", "images", "box AP", "mask AP"):
            c.add_column(col, justify="right")
        for cam, v in cams.items():
            c.add_row(cam, str(v["images"]), _pct(v["bbox_AP"]), _pct(v["segm_AP"]))
        con.print(c)


def _bin(edges: list, i: int) -> str:
    lo, hi = edges[i], edges[i + 1]
    return f"{lo:g}–{hi:g}" if hi is not None else f"> {lo:g}"


def _pct(v: Optional[float]) -> str:
    return "—" if v is None else f"{100 * v:.1f}"
