"""nuImages tables -> COCO instance json + semantic PNGs (what mmdetection3d's ``nuimage_converter.py`` writes).

Output, per version, identical in content to the reference converter's: ``<out>/<tag>_<version>.json``
(images of the key frames in table order with 0-based ids; annotations in image order then
object-token order with 0-based ids, ``bbox`` xywh from the amodal box, ``area`` = box area, the
visible mask's RLE ``counts`` string; the 10 categories with ids 0..9) and one single-channel PNG per
key frame under ``<out>/semantic_masks/`` whose pixels are the devkit's ``get_segmentation()[0]``.

How it runs:

* The parent streams each table once (:func:`nuimcli.data.nuimages.index_version`) and keeps only
  per-row byte offsets. It cuts the key frames into chunks of work items (an image + the byte ranges
  of its own annotation rows) and keeps at most a few chunks in flight in a process pool, so memory
  does not grow with the dataset: no worker re-parses a table, and no result waits in memory for long.
* A worker reads its image's rows back, paints the semantic map straight from the RLE runs (no
  full-frame mask per object), writes the PNG atomically and journals it in the manifest.
* The parent streams the COCO json to a temporary file in image order and renames it at the end;
  on any error no json is written for that version.
* Resume: ``<out>/.nuim-convert-manifest.jsonl`` records, per PNG, a fingerprint of its inputs
  (:func:`image_fingerprint`) and the PNG's size and mtime. A PNG is repainted only when it is
  missing, its fingerprint changed, or the file on disk is not the one recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from nuimcli.data.nuimages import (
    CONVERTER_TABLES,
    NUS_CATEGORIES,
    CorruptMask,
    VersionIndex,
    index_version,
    mask_rle_string,
    mask_size,
    paint_runs,
    read_row,
    rle_string_to_counts,
    version_dir,
)
from nuimcli.errors import UserError

#: Bump when the pixels written for the same inputs change: every PNG is then repainted once.
FORMAT_VERSION = 1
MANIFEST_NAME = ".nuim-convert-manifest.jsonl"
LOCK_NAME = ".nuim-convert.lock"
SEMANTIC_DIR = "semantic_masks"


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------

class ConvertProgress:
    """Progress hooks of :func:`convert` (no-ops here; the CLI shows a rich bar)."""

    def stage(self, description: str, total: int, unit: str) -> None:
        """A new stage with ``total`` units (bytes while reading tables, images while converting)."""

    def advance(self, n: int = 1) -> None:
        """``n`` more units of the current stage are done."""


@dataclass
class VersionSummary:
    """What :func:`convert_version` did for one version (the CLI's summary table / ``--json``)."""

    version: str
    json_path: str
    semantic_dir: str
    images: int = 0
    annotations: int = 0
    annotations_per_class: dict[str, int] = field(default_factory=lambda: {c: 0 for c in NUS_CATEGORIES})
    objects: int = 0                      # object_ann rows on key frames
    objects_painted_only: int = 0         # categories outside NAME_MAPPING: in the PNG, not in the json
    null_object_masks: int = 0            # dropped from PNG and json (as the reference), counted here
    null_surface_masks: int = 0
    surfaces: int = 0
    non_key_frame_annotations: int = 0    # rows on sweeps: ignored, as by the reference
    pngs_written: int = 0
    pngs_reused: int = 0
    max_semantic_index: Optional[int] = None  # the reference's "Max ID of class in the semantic map"
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_out_dir(data_root: str | os.PathLike) -> Path:
    """``<data_root>/annotations`` (the reference's default for its default data root)."""
    return Path(data_root) / "annotations"


def convert(
    data_root: str | os.PathLike,
    versions: Sequence[str] = ("v1.0-mini",),
    out_dir: str | os.PathLike | None = None,
    nproc: int = 4,
    extra_tag: str = "nuimages",
    progress: ConvertProgress | None = None,
    chunk_size: int | None = None,
) -> list[VersionSummary]:
    """Convert each version in turn; see :func:`convert_version`.

    Every version folder and table is checked before anything is written, so a typo in the
    second version does not fail after an hour spent on the first.
    """
    if not versions:
        raise UserError("no --version given")
    if not extra_tag or "/" in extra_tag or os.sep in extra_tag:
        raise UserError(f"--extra-tag {extra_tag!r} must be a non-empty name without '/'")
    if nproc < 0:
        raise UserError(f"--nproc {nproc} must be >= 0")
    for v in versions:
        vdir = version_dir(data_root, v)
        for t in CONVERTER_TABLES:
            if not (vdir / f"{t}.json").is_file():
                raise UserError(f"{vdir / (t + '.json')}: table file is missing")
    out = Path(out_dir) if out_dir is not None else default_out_dir(data_root)
    with _out_dir_lock(out):
        return [convert_version(data_root, v, out, nproc=nproc, extra_tag=extra_tag,
                                progress=progress, chunk_size=chunk_size) for v in dict.fromkeys(versions)]


@contextlib.contextmanager
def _out_dir_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``<out>/.nuim-convert.lock`` (flock; released if the process dies): one run per folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    with open(out_dir / LOCK_NAME, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"{out_dir}: another 'nuim convert' is writing to this folder") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _remove_stale_temps(out_dir: Path) -> None:
    """Delete temporary files left by a killed run (ours only: hidden names ending in .tmp / .tmp.png)."""
    for p in out_dir.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()
    seg = out_dir / SEMANTIC_DIR
    if seg.is_dir():
        for dirpath, _, files in os.walk(seg):
            for name in files:
                if name.startswith(".") and name.endswith(".tmp.png"):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(dirpath, name))


def convert_version(
    data_root: str | os.PathLike,
    version: str,
    out_dir: str | os.PathLike,
    nproc: int = 4,
    extra_tag: str = "nuimages",
    progress: ConvertProgress | None = None,
    chunk_size: int | None = None,
) -> VersionSummary:
    """Write ``<out_dir>/<extra_tag>_<version>.json`` and the version's PNGs under ``<out_dir>/semantic_masks``.

    ``nproc`` <= 1 paints in this process; otherwise in ``nproc`` worker processes. Nothing is
    written outside ``out_dir``. Raises :class:`UserError` (one line naming file and token) on bad
    input; the json is then not written, finished PNGs are kept and reused by the next run.
    """
    t0 = time.perf_counter()
    progress = progress or ConvertProgress()
    out_dir = Path(out_dir)
    index = index_version(data_root, version,
                          on_stage=lambda d, n: progress.stage(d, n, "B"), on_bytes=progress.advance)
    png_rels = _png_paths(index)

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{extra_tag}_{version}.json"
    summary = VersionSummary(version=version, json_path=str(json_path), semantic_dir=str(out_dir / SEMANTIC_DIR),
                             images=len(index.key_frames),
                             non_key_frame_annotations=index.objects.num_non_key_frame + index.surfaces.num_non_key_frame)
    manifest = Manifest(out_dir / MANIFEST_NAME)
    ctx = _WorkerContext(
        seg_root=str(out_dir / SEMANTIC_DIR),
        object_path=str(index.objects.path),
        surface_path=str(index.surfaces.path),
        categories={t: (c.semantic_index, c.coco_id) for t, c in index.categories.items()},
        manifest_path=str(manifest.path),
    )
    n = len(index.key_frames)
    if chunk_size is None:
        chunk_size = max(1, min(16, -(-n // max(1, 4 * max(nproc, 1)))))
    items = _work_items(index, png_rels, manifest.entries, chunk_size)

    progress.stage(f"{version}: converting", n, "img")
    tmp_json = out_dir / f".{json_path.name}.{os.getpid()}.tmp"
    try:
        with open(tmp_json, "w", encoding="utf-8") as f:
            writer = _CocoWriter(f)
            writer.images(index)
            # closing(): on an error the pool must be stopped before the manifest is compacted.
            with contextlib.closing(_run_chunks(ctx, items, nproc)) as results:
                for chunk_results in results:
                    for r in chunk_results:
                        writer.annotations(r.annotations)
                        _add_result(summary, r)
                        if r.entry is not None:
                            manifest.entries[r.png] = r.entry
                        progress.advance(1)
            writer.finish()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_json, json_path)
        _remove_stale_temps(out_dir)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_json.unlink()
        raise
    finally:
        manifest.compact()
    summary.annotations = writer.num_annotations
    summary.seconds = time.perf_counter() - t0
    return summary


# --------------------------------------------------------------------------------------------------
# Paths, fingerprints, manifest
# --------------------------------------------------------------------------------------------------

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


def _png_paths(index: VersionIndex) -> list[str]:
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
                f.write(_manifest_line(png, self.entries[png]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _manifest_line(png: str, entry: tuple[str, int, int, int]) -> str:
    fp, size, mtime_ns, mx = entry
    return json.dumps({"png": png, "fp": fp, "size": size, "mtime_ns": mtime_ns, "max": mx}) + "\n"


# --------------------------------------------------------------------------------------------------
# The COCO json, streamed
# --------------------------------------------------------------------------------------------------

class _CocoWriter:
    """Writes exactly ``json.dumps({"images": [...], "annotations": [...], "categories": [...]})``.

    ``json.dumps`` of a list is ``"[" + ", ".join(dumps(item)) + "]"``, so items can be written as
    they come; each annotation arrives pre-serialised up to its ``"id"`` (the last key), which only
    the parent can number.
    """

    def __init__(self, f) -> None:
        self.f = f
        self.num_annotations = 0

    def images(self, index: VersionIndex) -> None:
        self.f.write('{"images": [')
        for i, kf in enumerate(index.key_frames):
            if i:
                self.f.write(", ")
            self.f.write(json.dumps(dict(id=i, token=kf.token, file_name=kf.file_name,
                                         width=kf.width, height=kf.height)))
        self.f.write('], "annotations": [')

    def annotations(self, prefixes: list[str]) -> None:
        parts = []
        for p in prefixes:
            parts.append(f"{', ' if self.num_annotations else ''}{p}{self.num_annotations}}}")
            self.num_annotations += 1
        if parts:
            self.f.write("".join(parts))

    def finish(self) -> None:
        cats = [dict(id=i, name=n) for i, n in enumerate(NUS_CATEGORIES)]
        self.f.write('], "categories": ' + json.dumps(cats) + "}")


# --------------------------------------------------------------------------------------------------
# Work items and workers
# --------------------------------------------------------------------------------------------------

@dataclass
class _WorkerContext:
    seg_root: str
    object_path: str
    surface_path: str
    categories: dict[str, tuple[int, Optional[int]]]  # token -> (semantic index, coco id or None)
    manifest_path: str


# image index, token, file name, width, height, png rel path, manifest entry or None,
# surface rows [(offset, length)], object rows [(offset, length)]
_Item = tuple


@dataclass
class _ImageResult:
    png: str
    annotations: list[str]       # serialised annotation up to '"id": '
    per_class: list[int]         # coco id of each annotation
    max_value: int
    reused: bool
    entry: Optional[tuple[str, int, int, int]]
    objects: int
    surfaces: int
    null_objects: int
    null_surfaces: int
    painted_only: int


def _work_items(index: VersionIndex, png_rels: list[str], entries: dict, chunk_size: int) -> Iterator[list[_Item]]:
    chunk: list[_Item] = []
    for i, kf in enumerate(index.key_frames):
        chunk.append((i, kf.token, kf.file_name, kf.width, kf.height, png_rels[i], entries.get(png_rels[i]),
                      index.surfaces.rows_of(i), index.objects.rows_of(i)))
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _add_result(s: VersionSummary, r: _ImageResult) -> None:
    for c in r.per_class:
        s.annotations_per_class[NUS_CATEGORIES[c]] += 1
    s.objects += r.objects
    s.surfaces += r.surfaces
    s.null_object_masks += r.null_objects
    s.null_surface_masks += r.null_surfaces
    s.objects_painted_only += r.painted_only
    if r.reused:
        s.pngs_reused += 1
    else:
        s.pngs_written += 1
    s.max_semantic_index = r.max_value if s.max_semantic_index is None else max(s.max_semantic_index, r.max_value)


def _run_chunks(ctx: _WorkerContext, chunks: Iterator[list[_Item]], nproc: int) -> Iterator[list[_ImageResult]]:
    """Results of each chunk, in order; at most ``3 * nproc`` chunks in flight (bounded memory)."""
    if nproc <= 1:
        state = _WorkerState(ctx)
        try:
            for c in chunks:
                yield [state.process(item) for item in c]
        finally:
            state.close()
        return
    methods = multiprocessing.get_all_start_methods()
    mp = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = mp.Pool(nproc, initializer=_init_worker, initargs=(ctx,))
    ok = False
    try:
        pending: deque = deque()
        window = 3 * nproc
        for c in chunks:
            pending.append(pool.apply_async(_process_chunk, (c,)))
            if len(pending) >= window:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
        ok = True
    finally:
        if ok:
            pool.close()
        else:
            pool.terminate()
        pool.join()


_STATE: Optional["_WorkerState"] = None


def _init_worker(ctx: _WorkerContext) -> None:
    global _STATE
    # Ctrl-C reaches the whole process group: let the parent handle it and terminate the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _STATE = _WorkerState(ctx)
    signal.signal(signal.SIGTERM, _STATE.on_terminate)


def _process_chunk(items: list[_Item]) -> list[_ImageResult]:
    assert _STATE is not None
    return [_STATE.process(item) for item in items]


class _WorkerState:
    """Per-process state: open table files, the manifest descriptor, folders already created."""

    def __init__(self, ctx: _WorkerContext) -> None:
        import cv2  # imported here: only painting needs OpenCV

        self.cv2 = cv2
        self.ctx = ctx
        self.objects_f = open(ctx.object_path, "rb")
        self.surfaces_f = open(ctx.surface_path, "rb")
        self.manifest_fd = os.open(ctx.manifest_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.made_dirs: set[str] = set()
        self.current_tmp: Optional[str] = None

    def close(self) -> None:
        self.objects_f.close()
        self.surfaces_f.close()
        os.close(self.manifest_fd)

    def on_terminate(self, signum, frame) -> None:  # noqa: ARG002
        # The pool is being terminated (error or Ctrl-C in the parent): leave no temporary PNG.
        if self.current_tmp:
            with contextlib.suppress(OSError):
                os.unlink(self.current_tmp)
        os._exit(1)

    def process(self, item: _Item) -> _ImageResult:
        _, token, file_name, width, height, png, entry, surf_rows, obj_rows = item
        ctx = self.ctx
        surfaces = []
        null_s = 0
        for off, ln in surf_rows:
            row = read_row(self.surfaces_f, off, ln, ctx.surface_path)
            self._check_row(row, token, ctx.surface_path)
            if row.get("mask") is None:
                null_s += 1
                continue
            surfaces.append((row, ctx.categories[row["category_token"]][0]))
        objects = [read_row(self.objects_f, off, ln, ctx.object_path) for off, ln in obj_rows]
        for row in objects:
            self._check_row(row, token, ctx.object_path)
        objects.sort(key=lambda r: r["token"])

        fp = image_fingerprint(
            png, width, height,
            ((idx, r["mask"]["counts"]) for r, idx in surfaces),
            ((r["token"], ctx.categories[r["category_token"]][0], r["mask"]["counts"])
             for r in objects if r.get("mask") is not None))
        final = os.path.join(ctx.seg_root, png)
        reuse = False
        if entry is not None and entry[0] == fp:
            with contextlib.suppress(OSError):
                st = os.stat(final)
                reuse = st.st_size == entry[1] and st.st_mtime_ns == entry[2]

        flat = None if reuse else np.zeros(width * height, np.uint8)
        if flat is not None:
            for r, idx in surfaces:
                paint_runs(flat, self._runs(r, width, height, ctx.surface_path, "surface_ann"), idx)

        anns: list[str] = []
        per_class: list[int] = []
        null_o = painted_only = 0
        for r in objects:
            mask = r.get("mask")
            if mask is None:
                null_o += 1
                continue
            sem_idx, coco_id = ctx.categories[r["category_token"]]
            if flat is not None:
                paint_runs(flat, self._runs(r, width, height, ctx.object_path, "object_ann"), sem_idx)
            if coco_id is None:
                painted_only += 1
                continue
            x_min, y_min, x_max, y_max = r["bbox"]
            try:
                counts = mask_rle_string(mask).decode()
            except (CorruptMask, UnicodeDecodeError) as e:
                raise UserError(f"{ctx.object_path}: object_ann {r['token']}: corrupt mask ({e})") from None
            d = dict(image_id=item[0], category_id=coco_id,
                     bbox=[x_min, y_min, x_max - x_min, y_max - y_min],
                     area=(x_max - x_min) * (y_max - y_min),
                     segmentation=dict(counts=counts, size=mask["size"]), iscrowd=0)
            anns.append(json.dumps(d)[:-1] + ', "id": ')
            per_class.append(coco_id)

        if reuse:
            assert entry is not None
            max_value, new_entry = entry[3], None
        else:
            max_value = int(flat.max()) if flat.size else 0
            new_entry = self._write_png(flat, width, height, final, png, fp, max_value)
        return _ImageResult(png, anns, per_class, max_value, reuse, new_entry, len(objects),
                            len(surf_rows), null_o, null_s, painted_only)

    @staticmethod
    def _check_row(row: dict, token: str, path: str) -> None:
        if row.get("sample_data_token") != token:
            raise UserError(f"{path}: the table changed while it was being converted; run again")

    @staticmethod
    def _runs(row: dict, width: int, height: int, path: str, table: str) -> np.ndarray:
        mask = row["mask"]
        try:
            h, w = mask_size(mask)
            if (h, w) != (height, width):
                raise CorruptMask(f"mask size [{h}, {w}] differs from the image size [{height}, {width}]")
            return rle_string_to_counts(mask_rle_string(mask), h * w)
        except CorruptMask as e:
            raise UserError(f"{path}: {table} {row.get('token')}: corrupt mask ({e})") from None

    def _write_png(self, flat: np.ndarray, width: int, height: int, final: str, png: str, fp: str,
                   max_value: int) -> tuple[str, int, int, int]:
        folder = os.path.dirname(final)
        if folder not in self.made_dirs:
            os.makedirs(folder, exist_ok=True)
            self.made_dirs.add(folder)
        # The buffer is column-major (W x H in C order); cv2.transpose gives the H x W image.
        sem = self.cv2.transpose(flat.reshape(width, height)) if flat.size else flat.reshape(height, width)
        tmp = os.path.join(folder, f".{os.path.basename(final)}.{os.getpid()}.tmp.png")
        self.current_tmp = tmp
        try:
            # OpenCV's default PNG settings (as mmcv.imwrite): the fastest of its modes for these maps.
            if not self.cv2.imwrite(tmp, sem):
                raise UserError(f"{final}: cannot write the PNG (is the disk full or read-only?)")
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            self.current_tmp = None
        st = os.stat(final)
        entry = (fp, st.st_size, st.st_mtime_ns, max_value)
        os.write(self.manifest_fd, _manifest_line(png, entry).encode())
        return entry
