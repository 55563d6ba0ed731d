"""Training curves from the trainer's ``log.jsonl`` (see :mod:`nuimcli.engine.train_log`): per key,
``(epoch, value)`` points, the x axis in (fractional) epochs so that runs of different batch sizes
line up. Loss terms are smoothed (exponential moving average) because one logged step is noisy;
the learning rate and the val metrics are shown as logged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

from nuimcli.errors import UserError

#: Keys plotted when ``--keys`` is not given (those a log lacks are left out).
DEFAULT_KEYS: tuple[str, ...] = ("loss", "lr", "bbox_mAP", "segm_mAP")


def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of one ``log.jsonl``; a missing file or a line that is not a JSON object is a
    :class:`UserError` naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"log {p}: no such file")
    records = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"log {p}, line {n}: not JSON ({e.msg}); is it a nuim train log.jsonl?") from None
            if not isinstance(rec, dict) or "mode" not in rec:
                raise UserError(f"log {p}, line {n}: not a log record (no 'mode'); is it a nuim train log.jsonl?")
            records.append(rec)
    if not any(r["mode"] in ("train", "val") for r in records):
        raise UserError(f"log {p}: no train or val records yet")
    return records


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing): ``weight`` 0 is
    no smoothing; the first value is kept as is."""
    out, acc = [], 0.0
    for i, v in enumerate(values, 1):
        acc = weight * acc + (1 - weight) * v
        out.append(acc / (1 - weight**i) if weight < 1 else v)
    return out


def series(records: Sequence[dict], keys: Optional[Sequence[str]] = None,
           smooth: float = 0.6) -> dict[str, list[tuple[float, float]]]:
    """``{key: [(epoch, value)]}`` of the keys asked for (default :data:`DEFAULT_KEYS` plus every
    ``loss_*`` term); train points at ``epoch - 1 + iter / iters_per_epoch``, val points at their
    epoch. A key asked for that the log does not have is a :class:`UserError` listing those it has.
    A resumed run logs some iterations twice; the later record wins."""
    ipe = next((r.get("iters_per_epoch") for r in reversed(records) if r["mode"] == "info"
                and r.get("iters_per_epoch")), None)
    points: dict[str, dict[float, float]] = {}
    for r in records:
        if r["mode"] == "train":
            x = (r["epoch"] - 1 + r["iter"] / ipe) if ipe else float(r.get("global_iter", 0))
        elif r["mode"] == "val":
            x = float(r["epoch"])
        else:
            continue
        for k, v in r.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "iter", "global_iter"):
                points.setdefault(k, {})[round(x, 9)] = float(v)
    have = sorted(points)
    if keys:
        missing = [k for k in keys if k not in points]
        if missing:
            raise UserError(f"--keys {','.join(missing)}: not in the log (it has {', '.join(have)})")
        wanted = list(keys)
    else:
        wanted = [k for k in DEFAULT_KEYS if k in points]
        wanted[1:1] = sorted(k for k in points if "loss_" in k)  # every loss term after the total
    out: dict[str, list[tuple[float, float]]] = {}
    for k in wanted:
        xs = sorted(points[k])
        ys = [points[k][x] for x in xs]
        if "loss" in k:
            ys = ema(ys, smooth)
        out[k] = list(zip(xs, ys))
    return out
