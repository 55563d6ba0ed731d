"""The training loop: data, optimiser, schedule, AMP, DDP (files: :mod:`.train_checkpoints`;
reporting: :mod:`.train_log`; processes: :func:`train_job` through :mod:`.launch`).

Follows the mmdet 2.x recipe the nuImages configs use (``EpochBasedRunner`` + hooks):

* SGD (momentum, weight decay on every trainable parameter); lr given for the preset's
  ``base_batch_size`` and scaled linearly to the real total batch (``world × samples_per_gpu``)
  unless ``scale_lr`` is off; linear warm-up from ``warmup_ratio`` over ``warmup_iters``
  iterations; ×0.1 at each of ``lr_steps`` epochs; optional gradient-norm clipping.
* Every epoch: ``epoch_N.pth`` (mmdet format, atomic) and ``latest.pth`` → it; evaluation on
  the val split when there is one.
* ``log.jsonl``: a first ``mode: info`` line (lr scaling, world, dataset), then one line per
  logged step (``mode: train``: epoch, iter, lr, loss, every loss term, time, data_time,
  memory) and per evaluation (``mode: val``).
* Resume restores model, optimiser, AMP scaler, iteration, sampler position and RNG states;
  a run stopped at iteration k and resumed equals an uninterrupted run. Ctrl-C (SIGINT) finishes
  the current iteration, saves ``iter_K.pth`` (+ ``latest.pth``) and returns ``interrupted``.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import inspect
import math
import os
import signal
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from torch import nn

from nuimcli.engine import train_checkpoints
from nuimcli.data.structures import Batch
from nuimcli.engine.distributed import World, barrier, reduce_mean
from nuimcli.engine.train_log import LiveDisplay, TrainLog, peak_memory_mb
from nuimcli.errors import RunFailed, UserError
from nuimcli.presets import Preset
from nuimcli.utils.device import resolve_device
from nuimcli.utils.io import atomic_write_text
from nuimcli.utils.seeding import setup_process


class TrainingDiverged(RunFailed):
    """The loss became NaN or infinite (exit code 1: the run started but failed).

    The message names the iteration, the loss term, what to try and the last good checkpoint;
    nothing is saved from the diverged weights.
    """


@dataclass
class TrainOptions:
    """Everything about a run that is not in the preset."""

    work_dir: Path
    data_root: Path = Path("data/nuimages")
    train_ann: Optional[Path] = None  #: default <data_root>/annotations/nuimages_v1.0-train.json
    val_ann: Optional[Path] = None  #: default <data_root>/annotations/nuimages_v1.0-val.json (if present)
    semantic_root: Optional[Path] = None  #: default <data_root>/annotations/semantic_masks
    device: str = "cpu"
    seed: int = 0
    amp: bool = False
    threads: Optional[int] = None
    max_iters: Optional[int] = None  #: stop after this many iterations in total
    resume: Optional[str] = None  #: "latest" or a checkpoint path
    load_from: Optional[str] = None  #: overrides preset.init.load_from
    pretrained: Optional[str] = None  #: local backbone file instead of preset.init.pretrained_url
    scale_lr: bool = True
    log_interval: int = 50
    workers: Optional[int] = None  #: data workers per process (default preset.data.workers_per_gpu)
    evaluate: bool = True
    progress: bool = True
    tensorboard: bool = True
    save_best: Optional[str] = None  #: keep best.pth by this val metric (bbox_mAP or segm_mAP)
    keep: Optional[int] = None  #: keep only the newest N epoch_K.pth files
    trust_checkpoint: bool = False  #: read resume / load_from / pretrained files holding Python objects
    check_files: bool = True
    callbacks: list = field(default_factory=list)  #: fn(trainer, log_vars) after every iteration


@dataclass
class TrainResult:
    """What a run did."""

    global_iter: int
    epoch: int  #: completed epochs
    interrupted: bool
    checkpoint: Optional[Path]
    history: list  #: the logged train records (dicts as in log.jsonl)
    evaluations: list  #: the val records


# --------------------------------------------------------------------------- pure helpers


def parse_losses(losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """mmdet ``_parse_losses``: total = sum of the entries whose name contains ``loss``.

    Returns ``(total, log_vars)`` with every entry (``acc`` too) as a float and ``loss`` = total.
    """
    total = None
    log_vars: dict[str, float] = {}
    for name, value in losses.items():
        if isinstance(value, (list, tuple)):
            value = sum(v.mean() for v in value)
        else:
            value = value.mean()
        log_vars[name] = float(value.detach())
        if "loss" in name:
            total = value if total is None else total + value
    if total is None:
        raise ValueError("the model returned no loss terms")
    log_vars["loss"] = float(total.detach())
    return total, log_vars


def lr_at(base_lr: float, schedule: Any, global_iter: int, epoch: int) -> float:
    """mmcv ``StepLrUpdaterHook`` (by epoch, gamma 0.1) with linear warm-up by iteration.

    ``epoch`` is 0-based; ``global_iter`` counts iterations done before this one.
    """
    regular = base_lr * (0.1 ** bisect.bisect_right(list(schedule.lr_steps), epoch))
    if schedule.warmup_iters and global_iter < schedule.warmup_iters:
        k = (1 - global_iter / schedule.warmup_iters) * (1 - schedule.warmup_ratio)
        return regular * (1 - k)
    return regular


def scaled_lr(schedule: Any, total_batch: int, scale: bool) -> float:
    """The preset lr scaled linearly from ``base_batch_size`` to ``total_batch`` images per iteration."""
    return schedule.lr * total_batch / schedule.base_batch_size if scale else schedule.lr


def default_paths(data_root: Path) -> dict[str, Path]:
    """The converter's output under ``data_root``: train / val COCO files and the semantic PNGs."""
    ann = Path(data_root) / "annotations"
    return {
        "train_ann": ann / "nuimages_v1.0-train.json",
        "val_ann": ann / "nuimages_v1.0-val.json",
        "semantic_root": ann / "semantic_masks",
    }


def move_batch(batch: Batch, device: torch.device) -> Batch:
    """Every tensor of a collated batch on ``device``."""
    return batch.to(device, non_blocking=device.type == "cuda")


class LossModule(nn.Module):
    """``forward(batch) = detector.loss(batch)``, so DDP's forward hooks see the training call."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.detector.loss(batch)


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(0)
    torch.set_num_threads(1)


# --------------------------------------------------------------------------- trainer


class Trainer:
    """One process's part of a training run (call :meth:`run`)."""

    def __init__(self, preset: Preset, opts: TrainOptions, world: World = World(), model: Optional[nn.Module] = None,
                 dataset: Any = None) -> None:
        self.preset = preset
        self.opts = opts
        self.world = world
        self.work_dir = Path(opts.work_dir)
        self._model = model
        self._dataset = dataset
        self.stop_requested = False
        self.global_iter = 0
        self.epoch = 0  # 0-based epoch in progress
        self.batch_in_epoch = 0  # batches of the current epoch done
        self.history: list[dict] = []
        self.evaluations: list[dict] = []
        self.logs = TrainLog(self.work_dir, world.is_main)
        self.last_good_checkpoint: Optional[Path] = None  #: saved or resumed from by this run
        self.best: Optional[dict] = None  #: --save-best: {"metric", "value", "epoch"} of best.pth

    # ------------------------------------------------------------------ setup

    def log(self, msg: str) -> None:
        """A line on stderr from the main process."""
        self.logs.say(msg)

    def setup(self) -> None:
        """Data, sampler, model, optimiser, AMP, starting weights or resumed state, DDP, logs."""
        opts, preset = self.opts, self.preset
        setup_process(opts.threads, opts.seed)
        self.device = self._device(opts.device)

        paths = default_paths(opts.data_root)
        self.train_ann = Path(opts.train_ann) if opts.train_ann else paths["train_ann"]
        self.val_ann = Path(opts.val_ann) if opts.val_ann else (paths["val_ann"] if paths["val_ann"].is_file() else None)
        if opts.val_ann and not Path(opts.val_ann).is_file():
            raise UserError(f"{opts.val_ann}: validation annotation file not found")
        if opts.save_best and opts.save_best not in train_checkpoints.BEST_METRICS:
            raise UserError(f"--save-best {opts.save_best}: choose one of {', '.join(train_checkpoints.BEST_METRICS)}")
        if opts.save_best and (not opts.evaluate or self.val_ann is None):
            raise UserError("--save-best needs the end-of-epoch evaluation: a val split (--val-ann, or "
                            "<data-root>/annotations/nuimages_v1.0-val.json) and no --no-eval")
        if opts.keep is not None and opts.keep < 1:
            raise UserError(f"--keep {opts.keep}: keep at least 1 epoch checkpoint")
        if opts.evaluate and self.val_ann is not None and self.world.is_main:
            # checked now rather than after the first epoch, which may be hours away
            from nuimcli.engine.evaluate import check_eval_inputs

            check_eval_inputs(self.val_ann, opts.data_root)
        self.semantic_root = Path(opts.semantic_root) if opts.semantic_root else paths["semantic_root"]

        if self._dataset is None:
            from nuimcli.data.dataset import build_train_dataset

            self._dataset = build_train_dataset(self.train_ann, opts.data_root, preset,
                                                semantic_root=self.semantic_root, check_files=opts.check_files)
        self.dataset = self._dataset

        from nuimcli.data.sampler import GroupedBatchSampler

        self.samples_per_gpu = preset.data.samples_per_gpu
        self.sampler = GroupedBatchSampler(self.dataset.aspect_flags, self.samples_per_gpu, self.world.size,
                                           self.world.rank, seed=opts.seed)
        self.iters_per_epoch = len(self.sampler)
        self.total_batch = self.samples_per_gpu * self.world.size
        self.base_lr = scaled_lr(preset.schedule, self.total_batch, opts.scale_lr)

        if self._model is None:
            from nuimcli.models.build import build_model

            self._model = build_model(preset)
        self.model = self._model.to(self.device)
        self.model.train()
        self.wrapped: nn.Module = LossModule(self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        s = preset.schedule
        self.optimizer = torch.optim.SGD(params, lr=self.base_lr, momentum=s.momentum, weight_decay=s.weight_decay)
        self.amp_dtype = None
        self.scaler = None
        if opts.amp:
            if self.device.type == "cuda":
                self.amp_dtype = torch.float16
                self.scaler = torch.amp.GradScaler("cuda")
            else:
                self.amp_dtype = torch.bfloat16

        if not train_checkpoints.resume(self):
            train_checkpoints.init_weights(self)
        train_checkpoints.load_best(self)
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # As mmdet: BN buffers are not re-broadcast from rank 0 at every forward.
            no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                       else {"broadcast_buffers": False})
            self.wrapped = DDP(self.wrapped, device_ids=ids, find_unused_parameters=False, **no_sync)

        if self.world.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.work_dir / "preset.yaml", yaml.safe_dump(preset.to_dict(), sort_keys=False))
        self.logs.write({
            "mode": "info", "preset": preset.name, "world_size": self.world.size,
            "samples_per_gpu": self.samples_per_gpu, "total_batch": self.total_batch,
            "base_lr": preset.schedule.lr, "base_batch_size": preset.schedule.base_batch_size,
            "lr": self.base_lr, "lr_scaled": bool(opts.scale_lr), "train_images": len(self.dataset),
            "iters_per_epoch": self.iters_per_epoch, "seed": opts.seed, "resumed_at_iter": self.global_iter,
            "device": str(self.device), "amp": bool(opts.amp),
        })
        how = ("scaled linearly" if opts.scale_lr else "not scaled (--no-scale-lr)")
        self.log(f"lr {self.base_lr:.6g} = {preset.schedule.lr:g} for {preset.schedule.base_batch_size} images, "
                 f"{how} to a total batch of {self.total_batch} ({self.world.size} process(es) × "
                 f"{self.samples_per_gpu}); {len(self.dataset)} training images, {self.iters_per_epoch} iterations/epoch")
        if opts.tensorboard:
            self.logs.open_tensorboard()

    def _device(self, device: str) -> torch.device:
        local_rank = self.world.local_rank if self.world.distributed else None
        d = torch.device(resolve_device(device, local_rank=local_rank))
        if d.type == "cuda":
            d = d if d.index is not None else torch.device("cuda", 0)
            torch.cuda.set_device(d)
        return d

    # ------------------------------------------------------------------ loop

    def _loader(self):  # bench/train.py uses it too
        from nuimcli.data.augment import collate

        workers = self.preset.data.workers_per_gpu if self.opts.workers is None else self.opts.workers
        return torch.utils.data.DataLoader(
            self.dataset, batch_sampler=self.sampler, num_workers=workers,
            collate_fn=partial(collate, size_divisor=self.preset.data.size_divisor),
            pin_memory=self.device.type == "cuda", worker_init_fn=_worker_init if workers else None,
        )

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimiser step on a collated batch; returns the loss terms as floats."""
        batch = move_batch(batch, self.device)
        ctx = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
               else contextlib.nullcontext())
        with ctx:
            losses = self.wrapped(batch)
        total, log_vars = parse_losses(losses)
        if not math.isfinite(log_vars["loss"]) and self.scaler is None:  # (AMP's scaler skips such steps itself)
            raise self._diverged(log_vars)
        self.optimizer.zero_grad(set_to_none=True)
        clip = self.preset.schedule.grad_clip
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            if clip:
                self.scaler.unscale_(self.optimizer)
                log_vars["grad_norm"] = float(nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], clip))
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            if clip:
                log_vars["grad_norm"] = float(nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], clip))
            self.optimizer.step()
        return log_vars

    def _diverged(self, log_vars: dict[str, float]) -> TrainingDiverged:
        """The one-line error for a non-finite loss: where, which term, what to try, what is kept."""
        terms = [k for k, v in log_vars.items() if "loss" in k and k != "loss" and not math.isfinite(v)]
        term = terms[0] if terms else "loss"
        s = self.preset.schedule
        tries = [f"a lower lr (--set schedule.lr={s.lr / 2:g})",
                 f"a longer warm-up (--set schedule.warmup_iters={max(2 * s.warmup_iters, 500)})"]
        if not s.grad_clip:
            tries.append("gradient clipping (--set schedule.grad_clip=35)")
        kept = (f"the last good checkpoint is kept: {self.last_good_checkpoint} (continue from it with --resume "
                f"{self.last_good_checkpoint} and the new settings)" if self.last_good_checkpoint is not None
                else "no checkpoint was saved before it")
        return TrainingDiverged(
            f"training diverged at iteration {self.global_iter + 1} (epoch {self.epoch + 1}): {term} is "
            f"{log_vars.get(term)}; try {', '.join(tries[:-1])} or {tries[-1]}; {kept}")

    def _set_lr(self) -> float:
        lr = lr_at(self.base_lr, self.preset.schedule, self.global_iter, self.epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def _stop_now(self) -> bool:
        flag = self.stop_requested
        if self.world.distributed:
            import torch.distributed as dist

            t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item() > 0)
        return flag

    def run(self) -> TrainResult:
        """Train until the schedule's last epoch, ``max_iters``, or Ctrl-C."""
        self.setup()
        epochs = self.preset.schedule.epochs
        total_iters = epochs * self.iters_per_epoch
        if self.opts.max_iters is not None:
            total_iters = min(total_iters, int(self.opts.max_iters))
        interrupted = False
        last_ckpt: Optional[Path] = None
        old_handler = None
        if self._is_main_thread():
            self._sigint_pid = os.getpid()
            old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        progress = LiveDisplay(self, total_iters) if (self.opts.progress and self.world.is_main) else None
        try:
            if progress:
                progress.start()
            while self.epoch < epochs and self.global_iter < total_iters:
                self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
                acc: dict[str, float] = {}
                n_acc = 0
                t_acc = d_acc = 0.0
                t_last = time.perf_counter()
                for batch in _clean_worker_errors(self._loader()):
                    t_data = time.perf_counter()
                    lr = self._set_lr()
                    log_vars = self.train_step(batch)
                    self.global_iter += 1
                    self.batch_in_epoch += 1
                    now = time.perf_counter()
                    for k, v in log_vars.items():
                        acc[k] = acc.get(k, 0.0) + v
                    n_acc += 1
                    t_acc += now - t_last
                    d_acc += t_data - t_last
                    t_last = now
                    for cb in self.opts.callbacks:
                        cb(self, log_vars)
                    end_of_run = self.global_iter >= total_iters
                    if self.batch_in_epoch % self.opts.log_interval == 0 or end_of_run \
                            or self.batch_in_epoch == self.iters_per_epoch:
                        means = reduce_mean({k: v / n_acc for k, v in acc.items()}, self.device)
                        rec = {"mode": "train", "epoch": self.epoch + 1, "iter": self.batch_in_epoch,
                               "global_iter": self.global_iter, "lr": lr, **means,
                               "time": t_acc / n_acc, "data_time": d_acc / n_acc,
                               "memory": round(peak_memory_mb(self.device))}
                        self.history.append(rec)
                        self.logs.write(rec, scalars="train", step=self.global_iter,
                                        skip=("epoch", "iter", "global_iter"))
                        acc, n_acc, t_acc, d_acc = {}, 0, 0.0, 0.0
                    if progress:
                        progress.update(log_vars, lr)
                    if end_of_run or self._stop_now():
                        break
                if self.batch_in_epoch >= self.iters_per_epoch:
                    # The epoch is complete: mmdet's per-epoch checkpoint and evaluation.
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    last_ckpt = train_checkpoints.save(self, f"epoch_{self.epoch}.pth")
                    self._evaluate()
                    train_checkpoints.prune_epochs(self)
                if self.stop_requested or self.global_iter >= total_iters:
                    break
            if self.batch_in_epoch > 0:
                # Stopped inside an epoch (max_iters or Ctrl-C): keep a resumable checkpoint.
                last_ckpt = train_checkpoints.save(self, f"iter_{self.global_iter}.pth")
            interrupted = self.stop_requested
        finally:
            if progress:
                progress.stop()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            self.logs.close()
        return TrainResult(self.global_iter, self.epoch, interrupted, last_ckpt, self.history, self.evaluations)

    @staticmethod
    def _is_main_thread() -> bool:
        import threading

        return threading.current_thread() is threading.main_thread()

    def _on_sigint(self, signum, frame) -> None:  # noqa: ARG002
        if os.getpid() != getattr(self, "_sigint_pid", os.getpid()):
            return  # a forked data worker inherited the handler: the main process decides
        if self.stop_requested:  # second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.stop_requested = True
        self.log("Ctrl-C: finishing this iteration and saving a checkpoint (Ctrl-C again to abort)")

    # ------------------------------------------------------------------ evaluation

    def _evaluate(self) -> None:
        if not self.opts.evaluate or self.val_ann is None:
            return
        if self.world.is_main:
            from nuimcli.engine import evaluate as ev

            self.model.eval()
            try:
                metrics = ev.evaluate_detector(self.model, self.val_ann, self.opts.data_root,
                                               device=str(self.device), progress=self.opts.progress)
            finally:
                self.model.train()
            record = {"mode": "val", "epoch": self.epoch, "global_iter": self.global_iter, **metrics}
            self.evaluations.append(record)
            self.logs.write(record, scalars="val", step=self.global_iter, skip=("epoch", "global_iter"))
            self.log("val: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
            self.logs.val_epoch(metrics, self.epoch)
            if self.logs.tensorboard_on:
                self._val_pictures()
            train_checkpoints.update_best(self, metrics)
        barrier()


    def _val_pictures(self, n: int = 3) -> None:
        """A few val images with the model's detections drawn, to TensorBoard (main process)."""
        from nuimcli.engine.diagnostics import draw_val_predictions

        inner = self.model if hasattr(self.model, "predict") else getattr(self.model, "module", self.model)
        if not hasattr(inner, "predict"):
            return  # a stand-in model without inference (tests)
        inner.eval()
        try:
            pictures = draw_val_predictions(inner, self.val_ann, self.opts.data_root, n=n)
        finally:
            inner.train()
        self.logs.images(pictures, self.global_iter)


def _clean_worker_errors(loader):
    """Iterate a DataLoader; a UserError raised in a worker keeps its one-line message.

    (PyTorch re-raises a worker's exception with the worker traceback in the message.)
    """
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except UserError as e:
            lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
            if len(lines) > 1 and "Traceback" in str(e):
                last = lines[-1]
                prefix = f"{type(e).__module__}.{type(e).__name__}: "
                for p in (prefix, f"{type(e).__name__}: "):
                    if last.startswith(p):
                        last = last[len(p):]
                raise type(e)(last) from None
            raise
        yield batch


def train(preset: Preset, opts: TrainOptions, world: World = World(), model: Optional[nn.Module] = None,
          dataset: Any = None) -> TrainResult:
    """Run one process's part of a training run."""
    return Trainer(preset, opts, world, model=model, dataset=dataset).run()


def train_job(preset: Preset, opts: TrainOptions, gpus: int = 1) -> Optional[TrainResult]:
    """The library entry point of ``nuim train``: the whole run, in one process, ``gpus`` spawned
    processes or this process's rank under torchrun (see :func:`nuimcli.engine.launch.launch`).

    Returns rank 0's :class:`TrainResult` (None on the other torchrun ranks). A worker's
    exception is raised here as itself (``TrainingDiverged``, ``UserError``…).
    """
    from nuimcli.engine.launch import launch

    if gpus > 1:
        opts = dataclasses.replace(opts, callbacks=[])  # callbacks are not picklable in general
    return launch(_train_rank, (preset, opts), gpus=gpus, device=opts.device)


def _train_rank(world: World, device: str, preset: Preset, opts: TrainOptions) -> TrainResult:
    return train(preset, dataclasses.replace(opts, device=device), world)
