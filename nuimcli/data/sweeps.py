"""nuImages sequences: a sample's key frame with its sweeps (up to 6 before, up to 6 after, 2 Hz),
and every sample of one log and camera, as lists of frame files in time order.

Only the tables ``sample``, ``sample_data`` and ``log`` are read. Sweep JPEGs are a separate
part of the nuImages download, so a frame whose file is missing is reported by name, not fatal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from nuimcli.data.nuimages import load_table, table_path, version_dir
from nuimcli.errors import UserError

#: The release has at most 6 sweeps on either side of a key frame.
MAX_SWEEPS = 6


@dataclass
class SeqFrame:
    """One frame of a sequence: its file, time (UTC microseconds), token, and which snippet."""

    path: Path
    timestamp_us: int
    token: str
    is_key_frame: bool
    snippet: int
    sample_token: str


@dataclass
class Sequence:
    """Frames in time order (present files only), the files that are missing, and the snippets."""

    frames: list[SeqFrame]
    missing: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)  #: sample token of each snippet
    camera: str = ""

    def fps(self) -> float:
        """Frame rate implied by the timestamps: frames per second within snippets (median gap)."""
        gaps = sorted(b.timestamp_us - a.timestamp_us for a, b in zip(self.frames, self.frames[1:])
                      if a.snippet == b.snippet and b.timestamp_us > a.timestamp_us)
        return 1e6 / gaps[len(gaps) // 2] if gaps else 2.0


def _channel(filename: str) -> str:
    # sample_data filenames are "<samples|sweeps>/<CHANNEL>/<name>.jpg"
    parts = filename.split("/")
    return parts[1] if len(parts) >= 3 else ""


class SequenceIndex:
    """The three tables of one version, indexed by token."""

    def __init__(self, data_root: str | os.PathLike, version: str) -> None:
        version_dir(data_root, version)
        self.root, self.version = Path(data_root), version
        self.samples = {r["token"]: r for r in load_table(table_path(data_root, version, "sample"))}
        self.sample_data = {r["token"]: r for r in load_table(table_path(data_root, version, "sample_data"))}
        self.logs = {r["token"]: r for r in load_table(table_path(data_root, version, "log"))}

    def _row(self, token: str, where: str) -> dict:
        try:
            return self.sample_data[token]
        except KeyError:
            raise UserError(f"{table_path(self.root, self.version, 'sample_data')}: {where} names "
                            f"sample_data token {token} that does not exist") from None

    def sample_frames(self, sample_token: str, snippet: int = 0) -> tuple[list[SeqFrame], list[str], str]:
        """The frames of sample ``sample_token`` in time order (up to 6 sweeps, key frame, up to 6
        sweeps), the missing files among them, and its camera."""
        sample = self.samples.get(sample_token)
        if sample is None:
            raise UserError(f"sample token {sample_token} not found in {table_path(self.root, self.version, 'sample')}")
        key = self._row(sample["key_camera_token"], f"sample {sample_token}")
        before, row = [], key
        while row.get("prev") and len(before) < MAX_SWEEPS:
            row = self._row(row["prev"], f"sample_data {row['token']} prev")
            before.append(row)
        after, row = [], key
        while row.get("next") and len(after) < MAX_SWEEPS:
            row = self._row(row["next"], f"sample_data {row['token']} next")
            after.append(row)
        frames, missing = [], []
        for r in [*reversed(before), key, *after]:
            path = self.root / r["filename"]
            if not path.is_file():
                missing.append(str(path))
                continue
            frames.append(SeqFrame(path, int(r["timestamp"]), r["token"], bool(r.get("is_key_frame")),
                                   snippet, sample_token))
        return frames, missing, _channel(key["filename"])

    def log_camera_samples(self, log: str, camera: str) -> list[str]:
        """Sample tokens of log ``log`` (its token or logfile name) whose key frame is on ``camera``,
        in time order."""
        log_rows = [r for r in self.logs.values() if log in (r["token"], r.get("logfile"))]
        if not log_rows:
            names = sorted(r.get("logfile", r["token"]) for r in self.logs.values())
            raise UserError(f"log {log!r} not found in {table_path(self.root, self.version, 'log')} "
                            f"(logs: {', '.join(names[:5])}{' …' if len(names) > 5 else ''})")
        log_token = log_rows[0]["token"]
        of_log = [s for s in self.samples.values() if s["log_token"] == log_token]
        cams = {_channel(self._row(s["key_camera_token"], f"sample {s['token']}")["filename"]) for s in of_log}
        if camera not in cams:
            raise UserError(f"camera {camera!r}: log {log} has no sample on it (cameras: {', '.join(sorted(cams))})")
        chosen = [s for s in of_log
                  if _channel(self.sample_data[s["key_camera_token"]]["filename"]) == camera]
        return [s["token"] for s in sorted(chosen, key=lambda s: s["timestamp"])]


def nuimages_sequence(data_root: str | os.PathLike, version: str, sample: Optional[str] = None,
                      log: Optional[str] = None, camera: Optional[str] = None) -> Sequence:
    """The frames ``nuim predict --sample`` or ``--log/--camera`` runs on (see module doc).

    One sample gives one snippet; a log and camera give one snippet per sample, in time order.
    A token, log or camera that does not exist is a :class:`UserError` naming it.
    """
    if (sample is None) == (log is None):
        raise UserError("give either --sample TOKEN or --log LOG --camera CAM")
    if log is not None and not camera:
        raise UserError("--log needs --camera (e.g. CAM_FRONT)")
    index = SequenceIndex(data_root, version)
    tokens = [sample] if sample is not None else index.log_camera_samples(log, camera or "")
    seq = Sequence(frames=[], samples=tokens)
    for i, tok in enumerate(tokens):
        frames, missing, cam = index.sample_frames(tok, snippet=i)
        seq.frames += frames
        seq.missing += missing
        seq.camera = seq.camera or cam
    if not seq.frames:
        raise UserError(f"none of the {len(seq.missing)} frame file(s) exists under {data_root} "
                        f"(first: {seq.missing[0] if seq.missing else '-'})")
    return seq
