"""What ``nuim convert`` remembers between runs: PNG paths, input fingerprints and the manifest.

``<out>/.nuim-convert-manifest.jsonl`` records, per PNG, a fingerprint of its inputs
(:func:`image_fingerprint`) and the PNG's size and mtime. A PNG is repainted only when it is
missing, its fingerprint changed, or the file on disk is not the one recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Iterable

from nuimcli.data.nuimages import VersionIndex
from nuimcli.errors import UserError

#: Bump when the pixels written for the same inputs change: every PNG is then repainted once.
FORMAT_VERSION = 1
MANIFEST_NAME = ".nuim-convert-manifest.jsonl"


def png_rel_path(file_name: str) -> str:
    """The semantic PNG of an image: its ``file_name`` with the extension replaced by ``.png``.

    (The reference uses ``file_name.replace('jpg', 'png')``, which rewrites every ``jpg`` in the
    path; for the real file names both give the same result.) Raises ``ValueError`` for a path that
    would leave the output folder.
    """
    p = PurePosixPath(file_name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.name or p.name in (".", ".."):
        raise ValueError(file_name)
    return str(p.with_suffix(".png"))


def png_paths(index: VersionIndex) -> list[str]:
    """The semantic PNG of every key frame, in order; a path outside the output folder or one
    shared by two key frames is a :class:`UserError` naming the table and tokens."""
    seen: dict[str, str] = {}
    out = []
    for kf in index.key_frames:
        try:
            rel = png_rel_path(kf.file_name)
        except ValueError:
            raise UserError(f"{index.data_root / index.version / 'sample_data.json'}: sample_data {kf.token}: "
                            f"filename {kf.file_name!r} must be a relative path inside the data root") from None
        if rel in seen:
            raise UserError(f"{index.data_root / index.version / 'sample_data.json'}: key frames {seen[rel]} and "
                            f"{kf.token} have the same filename {kf.file_name!r}")
        seen[rel] = kf.token
        out.append(rel)
    return out


def image_fingerprint(png: str, width: int, height: int, surfaces: Iterable[tuple[int, str]],
                      objects_sorted: Iterable[tuple[str, int, str]]) -> str:
    """Hash of everything that decides a PNG's pixels (hex, 32 chars).

    Inputs: the format version, the PNG path, the image size, then in draw order each painted
    surface ``(semantic index, mask counts)`` and each painted object ``(token, semantic index,
    mask counts)``. Null masks are not painted and not hashed. The semantic index (not the category
    token) is hashed, so a category table that renumbers the classes repaints the PNGs.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(f"nuim-convert/{FORMAT_VERSION}\0{png}\0{width}\0{height}\0".encode())
    for idx, counts in surfaces:
        h.update(f"S{idx}\0{counts}\0".encode())
    for token, idx, counts in objects_sorted:
        h.update(f"O{token}\0{idx}\0{counts}\0".encode())
    return h.hexdigest()


class Manifest:
    """``<out>/.nuim-convert-manifest.jsonl``: one JSON line per finished PNG.

    Line: ``{"png": <path under semantic_masks>, "fp": <image_fingerprint>, "size": <bytes>,
    "mtime_ns": <int>, "max": <largest pixel value>}``. Workers append a line right after renaming
    a PNG into place (one ``write`` on an ``O_APPEND`` descriptor, so lines from several processes
    do not interleave); later lines win; a torn last line (killed run) is ignored. At the end of a
    version the parent rewrites the file compacted, atomically (temporary name + rename).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, tuple[str, int, int, int]] = {}
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        for line in text.splitlines():
            try:
                d = json.loads(line)
                self.entries[d["png"]] = (str(d["fp"]), int(d["size"]), int(d["mtime_ns"]), int(d["max"]))
            except (ValueError, KeyError, TypeError):
                continue

    def reload(self) -> None:
        """Merge lines appended by workers since this object was created."""
        fresh = Manifest(self.path)
        self.entries.update(fresh.entries)

    def compact(self) -> None:
        """Rewrite the manifest with one line per PNG (atomic)."""
        self.reload()
        if not self.entries and not self.path.exists():
            return
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for png in sorted(self.entries):
                f.write(manifest_line(png, self.entries[png]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def manifest_line(png: str, entry: tuple[str, int, int, int]) -> str:
    """One journal line (with its newline) for ``png`` and its (fingerprint, size, mtime_ns, max)."""
    fp, size, mtime_ns, mx = entry
    return json.dumps({"png": png, "fp": fp, "size": size, "mtime_ns": mtime_ns, "max": mx}) + "\n"
