"""``nuim benchmark``: parameters, FLOPs, latency and peak memory of one model (a table or ``--json``)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from nuimcli.cli import EXACT_HELP, HALF_HELP, TRUST_HELP, app
from nuimcli.utils.device import AUTO
from nuimcli.utils.progress import stdout_console


@app.command("benchmark")
def benchmark_cmd(
    model: Optional[str] = typer.Argument(None, help="Checkpoint file, URL or zoo name (or use --random-weights)."),
    random_weights: Optional[str] = typer.Option(None, "--random-weights", metavar="PRESET",
                                                 help="Benchmark an untrained model of this preset "
                                                      "(seeded random weights, calibrated)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Preset of the checkpoint, when the file cannot tell."),
    size: str = typer.Option("1600x900", "--size", metavar="WxH", help="Input image size (resized to the "
                             "preset's test scale inside, as predict does)."),
    device: str = typer.Option(AUTO, "--device", help="auto (CUDA if available), cpu, cuda or cuda:N."),
    repeat: int = typer.Option(5, "--repeat", min=1, help="Timed runs (latency: their median)."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Untimed runs first."),
    exact: bool = typer.Option(False, "--exact", help=EXACT_HELP),
    half: bool = typer.Option(False, "--half", help=HALF_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help=TRUST_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Parameters, FLOPs, latency (median of --repeat after --warmup), images/s and peak memory at one size.

    FLOPs: torch.utils.flop_counter, which counts a multiply-add as 2 FLOPs and does not count torchvision's roi_align, nms or deform_conv2d (nor element-wise ops); multiply-adds (FLOPs / 2) are what mmcv and fvcore call "FLOPs". Peak memory: CUDA max allocated, or the CPU's peak RSS above the loaded model.
    """
    from nuimcli.engine.benchmark import benchmark

    res = benchmark(model, random_weights=random_weights, size=size, device=device, repeat=repeat, warmup=warmup,
                    exact=exact, half=half, threads=threads, preset=preset, trust_checkpoint=trust_checkpoint)
    if json_out:
        print(json.dumps(res.to_dict(), indent=2))
        return
    t = Table(title=f"nuim benchmark: {res.preset} ({res.model})", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    t.add_row("input", f"{res.width}x{res.height} on {res.device}, {res.mode} mode, {res.dtype}, {res.threads} threads")
    t.add_row("parameters", f"{res.parameters / 1e6:.2f} M")
    t.add_row("FLOPs", f"{res.flops / 1e9:.1f} G (multiply-add = 2)")
    t.add_row("multiply-adds", f"{res.multiply_adds / 1e9:.1f} G (mmcv / fvcore \"FLOPs\")")
    t.add_row("latency", f"{res.latency_ms_median:.1f} ms median of {len(res.latency_ms)}")
    t.add_row("throughput", f"{res.images_per_s:.2f} images/s")
    mem = "n/a" if res.peak_memory_mb is None else f"{res.peak_memory_mb:.0f} MiB"
    t.add_row("peak memory", f"{mem} ({res.peak_memory_kind.replace('_', ' ')})")
    t.add_row("detections", str(res.detections))
    con = stdout_console()
    con.print(t)
    con.print(f"[dim]FLOPs: {res.flop_note}[/]")
