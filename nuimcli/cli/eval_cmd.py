"""``nuim eval``: COCO box and mask metrics of a checkpoint on the val split, or of a results file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nuimcli.cli import EXACT_HELP, HALF_HELP, TRUST_HELP, app
from nuimcli.errors import UserError
from nuimcli.utils.device import AUTO
from nuimcli.utils.progress import err_console, stdout_console


def _fmt(v: Optional[float]) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def render_metrics(doc: dict[str, Any], console: Console) -> None:
    """The summary table (box / mask rows) and the per-class AP table, in percent."""
    from nuimcli.engine.coco_metrics import METRIC_NAMES

    mode = doc["mode"]
    ids = "annotation ids as in the file (--reference-compat)" if mode == "reference-compat" \
        else "annotation ids shifted +1 (default)"
    t = Table(title="COCO metrics (%)", caption=f"{doc['num_images']} images, {doc['num_detections']} detections; {ids}")
    t.add_column("")
    for k in METRIC_NAMES:
        t.add_column(k, justify="right")
    for key, label in (("bbox", "box"), ("segm", "mask")):
        if key in doc:
            t.add_row(label, *(_fmt(doc[key][k]) for k in METRIC_NAMES))
    console.print(t)
    types = [k for k in ("bbox", "segm") if k in doc]
    if types:
        pc = Table(title="per-class AP")
        pc.add_column("class")
        for k in types:
            pc.add_column("box AP" if k == "bbox" else "mask AP", justify="right")
        for name in doc[types[0]]["per_class"]:
            pc.add_row(name, *(_fmt(doc[k]["per_class"].get(name)) for k in types))
        console.print(pc)
    sem = doc.get("semantic")
    if sem:
        st = Table(title="semantic IoU (%)", caption=f"{sem['images']} images, {sem['classes']} classes in the "
                                                      "ground truth, index 0 ignored")
        st.add_column("class")
        st.add_column("IoU", justify="right")
        for name, v in sem["per_class"].items():
            st.add_row(name, _fmt(v))
        st.add_row("[bold]mIoU[/]", f"[bold]{_fmt(sem['mIoU'])}[/]")
        console.print(st)
    ref = doc.get("reference")
    if ref:
        console.print(f"results table (row {ref['row']}, {ref['preset']}): box AP {_fmt_ref(ref['box_ap'])}, "
                      f"mask AP {_fmt_ref(ref['mask_ap'])}" + ("" if mode == "reference-compat" else
                      "  (the table used raw COCOeval ids: compare with --reference-compat)"))


def _fmt_ref(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.1f}"


@app.command("eval")
def eval_cmd(
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint file or zoo name "
                                             "(`nuim zoo list`)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Preset of the checkpoint, when the file cannot "
                                         "tell (a foreign mmdet file)."),
    data_root: Path = typer.Option(Path("data/nuimages"), "--data-root", help="nuImages root: images under it."),
    ann_file: Optional[Path] = typer.Option(None, "--ann-file", help="COCO ground truth (default: "
                                            "<data-root>/annotations/nuimages_v1.0-val.json)."),
    results_file: Optional[Path] = typer.Option(None, "--results", help="Evaluate this COCO results file "
                                                "(e.g. a results.json from --out) instead of running a model."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document with all metrics to stdout."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write metrics.json and results.json into this folder."),
    reference_compat: bool = typer.Option(False, "--reference-compat", help="Evaluate annotation ids as they are, "
                                          "like raw COCOeval and the published table (the annotation with id 0 "
                                          "can then never match)."),
    batch_size: int = typer.Option(2, "--batch-size", min=1, help="Images per forward pass."),
    gpus: int = typer.Option(1, "--gpus", min=1, help="Processes on this machine, each predicting its share of "
                             "the images (one per GPU; with --device cpu, CPU processes with gloo). Under "
                             "torchrun the environment decides."),
    device: str = typer.Option(AUTO, "--device", help="auto (CUDA if available), cpu, cuda or cuda:N."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads."),
    seed: int = typer.Option(0, "--seed", help="torch seed (inference is deterministic; kept for repeatability)."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help=TRUST_HELP),
    semantic_root: Optional[Path] = typer.Option(None, "--semantic-root", help="Ground-truth semantic PNGs, for "
                                                 "the semantic IoU of presets with a semantic head (default: "
                                                 "semantic_masks/ next to the annotation file, as `nuim convert` "
                                                 "writes it)."),
    exact: bool = typer.Option(False, "--exact", help=EXACT_HELP),
    half: bool = typer.Option(False, "--half", help=HALF_HELP),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Write PR curves, confusion matrices, the COCO error "
                                         "analysis (PNG + JSON) and a self-contained report.html into this folder."),
    show_dir: Optional[Path] = typer.Option(None, "--show-dir", help="Draw ground truth and prediction side by "
                                            "side into this folder, the worst images first."),
    show_n: int = typer.Option(20, "--show-n", min=1, help="How many images --show-dir draws."),
    score_thr: float = typer.Option(0.3, "--score-thr", min=0.0, max=1.0, help="Detections drawn and counted in the "
                                    "confusion matrix / --show-dir ranking (never changes AP)."),
) -> None:
    """COCO box and mask AP (AP50, AP75, S/M/L, AR@100, per class) of a checkpoint on the val split.

    By default annotation ids are evaluated as if shifted by +1 so that every annotation can be matched (the converter numbers them from 0 and COCOeval never matches id 0); --reference-compat evaluates the file as is, as the published table did.
    """
    from nuimcli.engine.coco_metrics import evaluate_results
    from nuimcli.engine.evaluate import default_ann_file, evaluate_checkpoint
    from nuimcli.utils.io import atomic_write_json
    from nuimcli.cli.interrupt import on_interrupt
    from nuimcli.utils.paths import check_out_dir, make_out_dir

    for folder, flag in ((out, "--out"), (plots, "--plots"), (show_dir, "--show-dir")):
        if folder is not None:
            check_out_dir(folder, flag)  # now, not after the whole evaluation
    on_interrupt("nothing" + (" (metrics.json and results.json are written at the end)" if out else ""), resumes=False)
    ann = ann_file or default_ann_file(data_root)
    if not ann.is_file():
        hint = "" if ann_file else " (write it with `nuim convert`, or pass --ann-file)"
        raise UserError(f"annotation file {ann}: no such file{hint}")
    if results_file is not None and checkpoint is not None:
        raise UserError("give either --checkpoint (run a model) or --results (evaluate a results file), not both")
    if results_file is None and checkpoint is None:
        raise UserError("give --checkpoint PATH_OR_ZOO_NAME to evaluate a model, or --results FILE")

    doc: dict[str, Any]
    results: Optional[list] = None
    if results_file is not None:
        with err_console.status(f"COCO metrics of {results_file} …"):
            metrics = evaluate_results(results_file, ann, reference_compat=reference_compat)
        doc = {"results_file": str(results_file), "ann_file": str(ann), **metrics.to_dict()}
    else:
        sem_root = semantic_root or ann.parent / "semantic_masks"
        if semantic_root is not None and not semantic_root.is_dir():
            raise UserError(f"--semantic-root {semantic_root}: no such folder")
        got = evaluate_checkpoint(checkpoint, ann, data_root, preset=preset, reference_compat=reference_compat,
                                  batch_size=batch_size, device=device, gpus=gpus, threads=threads, seed=seed,
                                  trust_checkpoint=trust_checkpoint, exact=exact, half=half,
                                  semantic_root=sem_root if sem_root.is_dir() else None)
        if got is None:  # a non-zero rank under torchrun
            return
        doc, results = got
    if out is not None:
        make_out_dir(out, "--out")
        if results is not None:
            atomic_write_json(out / "results.json", results)
        atomic_write_json(out / "metrics.json", doc, indent=2, allow_nan=False)
    if plots is not None or show_dir is not None:
        from nuimcli.cli.eval_diag import write_diagnostics

        write_diagnostics(doc, results if results is not None else results_file, ann, data_root, plots, show_dir,
                          show_n, score_thr, reference_compat)
    if json_out:
        print(json.dumps(doc, indent=2, allow_nan=False))
    else:
        render_metrics(doc, stdout_console())
        if out is not None:
            err_console.print(escape(f"wrote {out / 'metrics.json'}" + (f" and {out / 'results.json'}" if results is not None else "")))
