"""``nuim train PRESET``: train a preset on the converted nuImages data (argument parsing only)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from nuimcli.cli import TRUST_HELP, app, invocation
from nuimcli.cli.interrupt import on_interrupt, same_command
from nuimcli.errors import Interrupted
from nuimcli.utils.device import AUTO
from nuimcli.utils.progress import err_console


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    preset: str = typer.Argument(..., help="Preset name (`nuim presets` lists them) or a preset YAML file."),
    data_root: Path = typer.Option(Path("data/nuimages"), "--data-root", help="nuImages root: images under it, "
                                   "`nuim convert` output in <data-root>/annotations/."),
    train_ann: Optional[Path] = typer.Option(None, "--train-ann", help="Training COCO json "
                                             "(default: <data-root>/annotations/nuimages_v1.0-train.json)."),
    val_ann: Optional[Path] = typer.Option(None, "--val-ann", help="Validation COCO json, evaluated after every "
                                           "epoch (default: <data-root>/annotations/nuimages_v1.0-val.json if present)."),
    semantic_root: Optional[Path] = typer.Option(None, "--semantic-root", help="Semantic PNGs for HTC "
                                                 "(default: <data-root>/annotations/semantic_masks)."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Output folder (default: work_dirs/<preset>)."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a preset field: key=value "
                                                  "(repeatable), e.g. --set schedule.lr=0.01 --set data.samples_per_gpu=4."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue a run exactly: alone (or 'latest') "
                                         "the work dir's latest.pth, or a checkpoint path.", show_default=False),
    load_from: Optional[str] = typer.Option(None, "--load-from", help="Start from a detector checkpoint (URL or "
                                            "file, e.g. a COCO mmdet model); tensors of another shape are skipped."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Local backbone weights file instead of "
                                             "downloading preset.init.pretrained_url."),
    gpus: int = typer.Option(1, "--gpus", min=1, help="Processes on this machine (one per GPU; with --device cpu, "
                             "CPU processes with gloo). Under torchrun the environment decides."),
    device: str = typer.Option(AUTO, "--device", help="auto (CUDA if available), cpu, cuda or cuda:N."),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision (float16 on CUDA, bfloat16 on CPU)."),
    seed: int = typer.Option(0, "--seed", help="Seed of data order, augmentation and sampling."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads per process."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Data-loading processes per GPU "
                                          "(default: preset data.workers_per_gpu)."),
    max_iters: Optional[int] = typer.Option(None, "--max-iters", min=1, help="Stop after this many iterations "
                                            "in total (a resumable checkpoint is written)."),
    scale_lr: bool = typer.Option(True, "--scale-lr/--no-scale-lr", help="Scale the preset lr linearly to the "
                                  "real total batch."),
    log_interval: int = typer.Option(50, "--log-interval", min=1, help="Iterations per log.jsonl line."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip the end-of-epoch evaluation."),
    tensorboard: bool = typer.Option(True, "--tensorboard/--no-tensorboard", help="Write TensorBoard scalars to "
                                     "<work-dir>/tf_logs (needs the tensorboard package)."),
    save_best: Optional[str] = typer.Option(None, "--save-best", help="Keep <work-dir>/best.pth: the epoch with "
                                            "the highest val bbox_mAP or segm_mAP (best.json says which)."),
    keep: Optional[int] = typer.Option(None, "--keep", min=1, help="Keep only the newest N epoch_K.pth "
                                       "(latest.pth and best.pth stay)."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help=TRUST_HELP + " Applies to --resume, "
                                          "--load-from and --pretrained."),
) -> None:
    """Train a preset (the mmdetection3d nuImages recipe), on CPU, one GPU or many (DDP)."""
    from nuimcli.engine import trainer
    from nuimcli.engine.train_checkpoints import kept_checkpoints
    from nuimcli.presets import load_preset
    from nuimcli.utils.paths import check_out_dir

    p = load_preset(preset, overrides or [])
    check_out_dir(work_dir or Path("work_dirs") / p.name, "--work-dir")
    opts = trainer.TrainOptions(
        work_dir=work_dir or Path("work_dirs") / p.name,
        data_root=data_root, train_ann=train_ann, val_ann=val_ann, semantic_root=semantic_root,
        device=device, seed=seed, amp=amp, threads=threads, max_iters=max_iters, resume=resume,
        load_from=load_from, pretrained=pretrained, scale_lr=scale_lr, log_interval=log_interval,
        workers=workers, evaluate=not no_eval, tensorboard=tensorboard, save_best=save_best, keep=keep, trust_checkpoint=trust_checkpoint,
    )
    argv = invocation(ctx)
    has_checkpoint = (opts.work_dir / "latest.pth").exists
    on_interrupt(lambda: kept_checkpoints(opts.work_dir),
                 lambda: resume_command(argv, preset, opts) if has_checkpoint() else same_command(argv),
                 resumes=has_checkpoint)
    result = trainer.train_job(p, opts, gpus)
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return
    if result.interrupted:
        raise Interrupted(f"{result.checkpoint} (saved at iteration {result.global_iter})",
                          resume_command(argv, preset, opts))
    if gpus > 1:
        err_console.print(f"done: checkpoints and log.jsonl in {escape(str(opts.work_dir))}")
        return
    last = result.history[-1] if result.history else None
    summary = f"done: {result.global_iter} iterations, {result.epoch} epoch(s); checkpoint {result.checkpoint}"
    if last:
        summary += f"; last loss {last['loss']:.4f}"
    err_console.print(summary)


def resume_command(argv: list[str], preset: str, opts) -> str:
    """The command that continues this run: ``argv`` (the ``nuim train`` arguments it was started
    with) with ``--resume latest``; without them (called from Python), one built from ``opts``."""
    if not argv or argv[0] != "train":
        return shlex.join(["nuim", "train", preset, "--work-dir", str(opts.work_dir),
                           "--data-root", str(opts.data_root), "--resume", "latest"])
    args: list[str] = []
    skip = False
    for tok in argv:
        if skip:
            skip = False
        elif tok == "--resume":
            skip = True  # fill_optional_values always puts its value next
        elif not tok.startswith("--resume="):
            args.append(tok)
    return shlex.join(["nuim", *args, "--resume", "latest"])
