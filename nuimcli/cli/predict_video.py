"""``nuim predict`` on videos, image sequences (``--as-video``) and nuImages sweeps: runs
:func:`nuimcli.engine.sequences.predict_streams` and renders its results (table or ``--json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from rich.table import Table

from nuimcli.errors import PartialFailure


def run_streams(inputs: Sequence[str], out: Path, *, checkpoint: Optional[str], preset: Optional[str], device: str,
                score_thr: float, batch_size: int, threads: Optional[int], seed: int, trust_checkpoint: bool,
                gif: bool, every: int, max_frames: Optional[int], fps: Optional[float], as_video: Optional[str],
                data_root: Optional[str], version: str, sample: Optional[str], log: Optional[str],
                camera: Optional[str], json_out: bool, exact: bool = False, half: bool = False,
                show_semantic: bool = False, semantic: bool = False) -> None:
    """The stream half of ``nuim predict``: predict, print the table (or JSON), raise
    :class:`PartialFailure` when a video was truncated or frames could not be read."""
    from nuimcli.cli.interrupt import on_interrupt
    from nuimcli.engine.sequences import StreamOptions, load_model, predict_streams
    from nuimcli.utils.progress import stdout_console

    on_interrupt(f"nothing under a final name in {out}", resumes=False, note="it predicts every frame again")
    opts = StreamOptions(score_thr=score_thr, batch_size=batch_size, gif=gif, every=every, max_frames=max_frames,
                         fps=fps, show_semantic=show_semantic, semantic=semantic)
    flags = [name for name, on in (("--show-semantic", show_semantic), ("--semantic", semantic)) if on]
    model, results = predict_streams(
        list(inputs), out, opts, as_video=as_video, data_root=data_root, version=version, sample=sample, log=log,
        camera=camera, load=lambda: load_model(checkpoint, preset, device, threads, seed, trust_checkpoint, exact=exact,
                                half=half, semantic_flags=flags))
    if json_out:
        print(json.dumps({"preset": model.preset.name, "score_thr": score_thr,
                          "streams": [r.to_dict() for r in results]}, indent=1))
    else:
        table = Table(title=f"nuim predict ({model.preset.name}, score ≥ {score_thr:g}) → {out}")
        for col in ("input", "frames", "fps", "size", "detections", "classes", "written"):
            table.add_column(col, justify="right" if col in ("frames", "fps", "detections") else "left")
        for r in results:
            classes = ", ".join(f"{k}×{v}" for k, v in list(r.classes.items())[:6]) or "—"
            written = (f"[green]{Path(r.video_out).name}[/] + .jsonl" + (" + .gif" if r.gif_out else "")
                       + (f" + {Path(r.semantic_dir).name}/" if r.semantic_dir else ""))
            if r.truncated:
                written += f"\n[red]{r.truncated}[/]"
            table.add_row(r.source, str(r.frames), f"{r.fps:.3g}", f"{r.width}×{r.height}", str(r.num_detections),
                          classes, written)
        stdout_console().print(table)
    bad = [r for r in results if not r.ok]
    if bad:
        reasons = []
        for r in bad:
            if r.truncated:
                reasons.append(f"{r.truncated}; kept the {r.frames} frame(s) before it")
            if r.failed_frames:
                reasons.append(f"{len(r.failed_frames)} unreadable frame(s) in {r.source}: {r.failed_frames[0]}")
        raise PartialFailure("; ".join(reasons))
