"""``nuim export``: a model → a verified ONNX or TorchScript file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from nuimcli.cli import TRUST_HELP, app
from nuimcli.utils.progress import err_console, stdout_console

FORMAT_HELP = ("onnx (torch.onnx's TorchScript-based exporter, opset 17, run with onnxruntime; needs "
               "`pip install \"nuimcli[export]\"`) or torchscript (torch.jit.trace: one .pt file that "
               "torch.jit.load runs without nuimcli (with torchvision's ops); torch.export cannot capture the "
               "data-dependent detection counts of NMS).")


def render_result(doc: dict) -> None:
    """The comparison figures as a table (a column per checked input size), then where the file went."""
    checks = doc["checks"]
    tol = checks[0]["tolerances"]
    sizes = ", ".join(f"{c['input_size'][0]}x{c['input_size'][1]}" for c in checks)
    kind = "any input size (dynamic), checked at" if doc["dynamic"] else "input size"
    t = Table(title=f"exported {doc['format']} vs PyTorch model ({doc['precision']}; {kind} {sizes})")
    t.add_column("check")
    for c in checks:
        t.add_column(f"{c['input_size'][0]}x{c['input_size'][1]}", justify="right")
    t.add_column("allowed", justify="right")
    rows = [
        ("detections", lambda c: f"{c['detections_exported']} vs {c['detections_ref']}", "equal"),
        ("max box difference (px)", lambda c: f"{c['max_box_diff_px']:.3g}", f"{tol['box_px']:g}"),
        ("max score difference", lambda c: f"{c['max_score_diff']:.3g}", f"{tol['score']:g}"),
        ("min mask IoU (pasted)", lambda c: f"{c['min_mask_iou']:.4f}",
         f"{tol['mask_iou']:g}, or only pixels within {tol['mask_prob_margin']:g} of the threshold differ"),
        ("pixels flipped, clear of the threshold", lambda c: str(c["clear_pixels_flipped"]), "0"),
    ]
    for name, figure, allowed in rows:
        t.add_row(name, *[figure(c) for c in checks], allowed)
    console = stdout_console()
    console.print(t)
    console.print(f"wrote [green]{doc['path']}[/] (export {doc['export_s']:.1f} s, check {doc['verify_s']:.1f} s)")


@app.command("export")
def export_cmd(
    model: Optional[str] = typer.Argument(None, help="Zoo name or checkpoint file (omit with --random-weights)."),
    fmt: str = typer.Option(..., "--format", "-f", help=FORMAT_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (default: <preset>.onnx or "
                                       "<preset>.torchscript.pt here)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Preset of the checkpoint, when the file cannot tell."),
    random_weights: Optional[str] = typer.Option(None, "--random-weights", metavar="PRESET",
                                                 help="Export PRESET with seeded random weights (for testing)."),
    input_size: Optional[str] = typer.Option(None, "--input-size", metavar="WxH", help="Network input size "
                                             "(default: the preset's test scale, e.g. 1600x900)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Any input size: the graph follows the image's size "
                                 "(ONNX: dynamic height/width axes); checked at the test scale and at a second size "
                                 "of another aspect ratio. Images are resized for the preset's test scale."),
    half: bool = typer.Option(False, "--half", help="float16 (CUDA, TorchScript only)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (float16 needs CUDA)."),
    sample: Optional[Path] = typer.Option(None, "--sample", help="Verify on this image (resized to the input "
                                          "size) instead of a synthetic street picture."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (torch and onnxruntime)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document instead of the table."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help=TRUST_HELP),
    exact: bool = typer.Option(False, "--exact", help="Export mmdet's unfolded computation (BatchNorm not folded, "
                               "not channels-last) instead of the fast model `nuim predict` runs by default."),
) -> None:
    """Export a model to ONNX or TorchScript, checked before it is written.

    The graph takes one BGR uint8 image [H, W, 3] already resized with nuimcli.data.transforms.resize_keep_ratio
    (to the input size; with --dynamic, to whatever size that function gives; normalisation and padding are
    inside) and returns boxes (x1,y1,x2,y2 in input pixels), scores, labels,
    28x28 mask probabilities (paste them with nuimcli.models.roi_heads.paste_masks) and, for HTC with a
    semantic head, semantic logits. The exported file is run on a sample image (with --dynamic, at two sizes)
    and compared with the PyTorch model (same detections, boxes within 0.05 px, scores within 1e-3, pasted-mask IoU >= 0.98); a mismatch
    exits 1 and writes nothing.
    """
    from nuimcli.cli.interrupt import on_interrupt
    from nuimcli.engine.export import export_model, parse_size

    size = parse_size(input_size) if input_size is not None else None
    on_interrupt("nothing (the file is written only after its check)", resumes=False)
    with err_console.status(f"exporting to {fmt} and checking the file…"):
        result = export_model(fmt=fmt, out=out, model=model, preset=preset, random_weights=random_weights,
                              input_size=size, dynamic=dynamic, half=half, device=device, sample=sample,
                              threads=threads, trust=trust_checkpoint, exact=exact)
    doc = result.to_dict()
    if json_out:
        print(json.dumps(doc))
    else:
        render_result(doc)
