"""What a training run reports: ``log.jsonl`` records, TensorBoard scalars and the live display.

Only the main process writes; the other ranks of a distributed run get the same calls and do
nothing, so the loop needs no ``if rank == 0`` of its own.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any, Optional

import torch

from nuimcli.utils.progress import err_console


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated (MB) on a GPU, else this process's peak RSS (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class TrainLog:
    """``<work_dir>/log.jsonl`` (one JSON record a line) and, optionally, TensorBoard scalars
    under ``<work_dir>/tf_logs``; silent on every process but the main one."""

    def __init__(self, work_dir: Path, is_main: bool) -> None:
        self.work_dir = Path(work_dir)
        self.is_main = is_main
        self._tb: Any = None

    def say(self, msg: str) -> None:
        """One line on stderr (main process only), printed as is (no rich markup)."""
        if self.is_main:
            err_console.print(msg, highlight=False, markup=False)

    def open_tensorboard(self) -> None:
        """Start the TensorBoard writer; when that fails, say once why there are no scalars."""
        if not self.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.work_dir / "tf_logs"))
        except Exception as e:  # scalars are optional, but say once why there are none
            self._tb = None
            why = ("the tensorboard package is not installed (pip install tensorboard)"
                   if isinstance(e, ImportError) else str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
            self.say(f"TensorBoard off: {why}; --no-tensorboard turns it off without this note")

    def write(self, record: dict, scalars: Optional[str] = None, step: int = 0, skip: tuple = ()) -> None:
        """Append ``record`` to log.jsonl; with ``scalars`` (``train``/``val``) also its numbers
        (except the keys in ``skip``) to TensorBoard at ``step``."""
        if not self.is_main:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.work_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if scalars and self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in skip:
                    self._tb.add_scalar(f"{scalars}/{k}", v, step)

    @property
    def tensorboard_on(self) -> bool:
        """Whether a TensorBoard writer is open (main process, package installed, not turned off)."""
        return self._tb is not None

    def val_epoch(self, metrics: dict, epoch: int) -> None:
        """The val metrics once more, against the epoch (``val_by_epoch/<name>``): runs of different
        batch sizes line up there, where ``val/`` is against the iteration as the train scalars are."""
        if self._tb is None:
            return
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self._tb.add_scalar(f"val_by_epoch/{k}", v, epoch)

    def images(self, pictures: list, step: int) -> None:
        """``[(name, BGR uint8 [H, W, 3])]`` as TensorBoard images ``val_predictions/<name>`` at ``step``."""
        if self._tb is None:
            return
        for name, img in pictures:
            self._tb.add_image(f"val_predictions/{name}", img[:, :, ::-1].copy(), step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the TensorBoard writer, if any."""
        if self._tb is not None:
            self._tb.close()


class LiveDisplay:
    """Live training display on stderr: a progress row (epoch, iteration, bar, it/s, elapsed, ETA)
    and below it a status line (total loss, every loss term, lr, peak memory) that wraps in a
    narrow terminal instead of pushing the ETA off the row."""

    def __init__(self, trainer: Any, total: int) -> None:
        from rich.console import Group
        from rich.live import Live
        from rich.text import Text

        from nuimcli.utils.progress import make_progress

        self.trainer = trainer
        self.progress = make_progress("it", bar_width=20)
        self.task = self.progress.add_task(self._where(), total=total, completed=trainer.global_iter)
        self.status = Text("")
        self.live = Live(Group(self.progress, self.status), console=err_console, refresh_per_second=4)

    def _where(self) -> str:
        t = self.trainer
        return f"ep {t.epoch + 1}/{t.preset.schedule.epochs} it {t.batch_in_epoch}/{t.iters_per_epoch}"

    def start(self) -> None:
        """Show the display."""
        self.live.start()

    def stop(self) -> None:
        """Leave the last state on screen and end its line."""
        self.live.stop()
        if not self.live.console.is_terminal:  # Live ends its last line only on a terminal
            self.live.console.line()

    def update(self, log_vars: dict, lr: float) -> None:
        """After an iteration: move the bar and rewrite the status line."""
        t = self.trainer
        terms = " ".join(f"{k.replace('loss_', '')} {v:.3f}" for k, v in log_vars.items()
                         if "loss" in k and k != "loss")
        mem = peak_memory_mb(t.device)
        # plain Text, never markup: loss names such as "s0.loss_cls" must print as they are
        self.status.plain = f"loss {log_vars['loss']:.3f} ({terms})  lr {lr:.2e}  mem {mem / 1024:.1f}G"
        self.progress.update(self.task, completed=t.global_iter, description=self._where())
