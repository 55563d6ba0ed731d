"""The trainer's files: initial weights (ImageNet backbone, ``load_from``), per-epoch and
interrupt checkpoints with ``latest.pth``, and exact resume.

A training checkpoint is an mmdet checkpoint (:func:`nuimcli.checkpoints.save_checkpoint`)
plus ``optimizer`` and ``nuim_train_state`` (epoch, position in the epoch, sampler, every RNG,
AMP scaler), all tensors and plain containers so that it reads back with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from nuimcli.engine.distributed import barrier
from nuimcli.errors import UserError

if TYPE_CHECKING:
    from nuimcli.engine.trainer import Trainer


def rng_state() -> dict:
    """Every RNG the training loop draws from, as tensors and plain Python values.

    numpy's state is split into a tensor and numbers so that the checkpoint loads with
    ``torch.load(weights_only=True)`` (a numpy array would need the full unpickler).
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    if isinstance(np_state, dict):
        np_state = (np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                    np_state["has_gauss"], np_state["cached_gaussian"])
    np.random.set_state(np_state)
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


def init_weights(t: "Trainer") -> None:
    """A fresh run's starting weights: the ImageNet backbone (``--pretrained`` or the preset's
    URL), then a ``load_from`` detector (tensors of another shape are left as initialised)."""
    from nuimcli.checkpoints import load_backbone_pretrained, load_partial

    init = t.preset.init
    source = t.opts.pretrained or init.pretrained_url
    if source:
        path = _fetch(t, source, "ImageNet backbone", "--pretrained PATH (a local file)")
        report = load_backbone_pretrained(t.model.backbone, path, trust=t.opts.trust_checkpoint)
        t.log(f"backbone initialised from {path} ({report.counts()} keys)")
    load_from = t.opts.load_from or init.load_from
    if load_from:
        path = _fetch(t, load_from, "load_from detector", "--load-from PATH (a local file)")
        report = load_partial(t.model, path, trust=t.opts.trust_checkpoint)
        skipped = report.skipped
        t.log(f"weights loaded from {path}" + (f"; {len(skipped)} tensors of a different shape or "
                                               f"missing were left at their initial values" if skipped else ""))


def _fetch(t: "Trainer", spec: str, what: str, hint: str) -> Path:
    """A local path, a URL or a zoo name as a local file (downloaded once per node)."""
    from nuimcli.download import DownloadError
    from nuimcli.engine.resolve import resolve

    try:
        return resolve(spec, progress=t.opts.progress, what=what).path
    except DownloadError as e:  # training cannot start: bad input (exit 2), with the way around it
        raise UserError(f"{e} — or pass {hint}") from None


def train_state(t: "Trainer") -> dict:
    """Where the run is (``nuim_train_state`` of its checkpoints)."""
    return {
        "epoch": t.epoch,
        "batch_in_epoch": t.batch_in_epoch,
        "global_iter": t.global_iter,
        "sampler": {"epoch": t.epoch, "start_batch": t.batch_in_epoch, "seed": t.sampler.seed},
        "rng": rng_state(),
        "scaler": t.scaler.state_dict() if t.scaler is not None else None,
        "world_size": t.world.size,
        "base_lr": t.base_lr,
    }


def save(t: "Trainer", name: str) -> Path:
    """Write ``<work_dir>/<name>`` and point ``latest.pth`` at it (main process only; every rank waits)."""
    from nuimcli.checkpoints import save_checkpoint

    path = t.work_dir / name
    if t.world.is_main:
        save_checkpoint(path, t.model, t.preset, optimizer=t.optimizer,
                        meta={"epoch": t.epoch, "iter": t.global_iter},
                        extra={"nuim_train_state": train_state(t)})
        point_latest(t.work_dir / "latest.pth", path)
    barrier()
    t.last_good_checkpoint = path
    return path


def resume(t: "Trainer") -> bool:
    """Restore model, optimiser, scaler, position and RNGs from ``--resume`` (``latest``: the work
    dir's ``latest.pth``; else a file, URL or zoo name); False when not resuming."""
    if not t.opts.resume:
        return False
    from nuimcli.checkpoints import load_checkpoint
    from nuimcli.models.state_dict import load_state_dict_strict

    if t.opts.resume == "latest":
        path = t.work_dir / "latest.pth"
        if not path.exists():
            raise UserError(f"{t.work_dir}: no latest.pth to resume from (train without --resume first)")
    else:  # a file, or a URL / zoo name like --load-from (a zoo file then fails the check below)
        path = _fetch(t, t.opts.resume, "resume checkpoint", "--resume PATH (a local file)")
    # weights_only: a resume file holds tensors and plain containers only (see rng_state);
    # one that pickles anything else is refused unless --trust-checkpoint.
    ckpt = load_checkpoint(path, trust=t.opts.trust_checkpoint)
    state = ckpt.get("nuim_train_state")
    if state is None or "optimizer" not in ckpt:
        raise UserError(f"{path}: not a nuim training checkpoint (no optimizer/train state); "
                        f"use --load-from to start from its weights instead")
    name = ckpt.get("meta", {}).get("nuim_preset")
    if name and name != t.preset.name:
        raise UserError(f"{path}: written by preset '{name}', not '{t.preset.name}'")
    load_state_dict_strict(t.model, ckpt["state_dict"], t.preset.name, source=str(path))
    t.optimizer.load_state_dict(ckpt["optimizer"])
    if t.scaler is not None and state.get("scaler"):
        t.scaler.load_state_dict(state["scaler"])
    if state.get("world_size", t.world.size) != t.world.size:
        t.log(f"note: resuming a {state['world_size']}-process run with {t.world.size}: "
              "the data order of the rest of this epoch changes")
    t.epoch = int(state["epoch"])
    t.batch_in_epoch = int(state["batch_in_epoch"])
    t.global_iter = int(state["global_iter"])
    if t.batch_in_epoch >= t.iters_per_epoch:
        t.epoch += 1
        t.batch_in_epoch = 0
    set_rng_state(state["rng"])
    t.last_good_checkpoint = path
    t.log(f"resumed from {path} at epoch {t.epoch + 1}, iteration {t.global_iter}")
    return True


def point_latest(link: Path, target: Path) -> None:
    """Make ``latest.pth`` refer to ``target``: a relative symlink (a copy where links fail), atomically."""
    tmp = link.with_name(f".{link.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.symlink(target.name, tmp)
    except OSError:
        import shutil

        shutil.copyfile(target, tmp)
    os.replace(tmp, link)


def kept_checkpoints(work_dir: Path) -> str:
    """What an interrupted run leaves in its work dir, for the one-line 'interrupted' message."""
    latest = work_dir / "latest.pth"
    if latest.exists():
        return f"the checkpoints in {work_dir} (latest.pth -> {latest.resolve().name})"
    return f"nothing yet in {work_dir} (a checkpoint is written at the end of each epoch and on a clean stop)"


# --------------------------------------------------------------------------- --save-best / --keep

#: Metrics ``--save-best`` may follow (higher is better for both).
BEST_METRICS: tuple[str, ...] = ("bbox_mAP", "segm_mAP")


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes the same file as ``src``, atomically: a hard link (no second copy on disk,
    and it survives ``--keep`` deleting ``src``), a copy where links fail."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def load_best(t: "Trainer") -> None:
    """When resuming: what ``best.json`` of the work dir says the best epoch so far is, when it was
    chosen by the same metric; a fresh run starts without one (its first evaluation replaces an
    older run's best.pth)."""
    import json

    t.best = None
    path = t.work_dir / "best.json"
    if not t.opts.save_best or not t.opts.resume or not path.is_file():
        return
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        doc = json.loads(path.read_text())
        if doc["metric"] == t.opts.save_best:
            t.best = {"metric": doc["metric"], "value": float(doc["value"]), "epoch": int(doc["epoch"])}


def update_best(t: "Trainer", metrics: dict) -> None:
    """After an evaluation (main process): when ``metrics[--save-best]`` beats the best so far,
    ``best.pth`` becomes this epoch's checkpoint and ``best.json`` records metric, value and
    epoch; the log says which epoch it is either way."""
    from nuimcli.utils.io import atomic_write_json

    name = t.opts.save_best
    if not name:
        return
    value = metrics.get(name)
    if value is None or value != value:  # undefined (no ground truth): nothing to compare
        t.log(f"best: {name} undefined at epoch {t.epoch}; best.pth unchanged")
        return
    if t.best is not None and value <= t.best["value"]:
        t.log(f"best: epoch {t.best['epoch']} ({name} {t.best['value']:.4f}) stays best.pth")
        return
    _link_or_copy(t.work_dir / f"epoch_{t.epoch}.pth", t.work_dir / "best.pth")
    t.best = {"metric": name, "value": float(value), "epoch": t.epoch}
    atomic_write_json(t.work_dir / "best.json", {**t.best, "file": f"epoch_{t.epoch}.pth"}, indent=2)
    t.log(f"best: best.pth is now epoch {t.epoch} ({name} {value:.4f})")


def prune_epochs(t: "Trainer") -> list[Path]:
    """``--keep N``: delete the epoch checkpoints older than the newest N (main process only).
    ``latest.pth`` always points at the newest, and ``best.pth`` is its own link, so resume and
    the best model are never lost. Returns what was deleted."""
    keep = t.opts.keep
    if not keep or not t.world.is_main:
        return []
    gone = []
    for k in range(1, t.epoch - keep + 1):
        p = t.work_dir / f"epoch_{k}.pth"
        if p.exists():
            p.unlink()
            gone.append(p)
    return gone
