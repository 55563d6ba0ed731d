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
* A worker (:mod:`nuimcli.data.convert_worker`) reads its image's rows back, paints the semantic
  map straight from the RLE runs (no full-frame mask per object), writes the PNG atomically and
  journals it in the manifest.
* The parent streams the COCO json to a temporary file in image order and renames it at the end;
  on any error no json is written for that version.
* Resume (:mod:`nuimcli.data.convert_manifest`): ``<out>/.nuim-convert-manifest.jsonl`` records,
  per PNG, a fingerprint of its inputs and the PNG's size and mtime. A PNG is repainted only when
  it is missing, its fingerprint changed, or the file on disk is not the one recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from nuimcli.data.convert_manifest import MANIFEST_NAME, Manifest, png_paths
from nuimcli.data.convert_worker import ImageResult, WorkerContext, run_chunks, work_items
from nuimcli.data.nuimages import CONVERTER_TABLES, NUS_CATEGORIES, VersionIndex, index_version, version_dir
from nuimcli.errors import UserError

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
        """JSON-ready form (what ``nuim convert --json`` prints per version)."""
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
    png_rels = png_paths(index)

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{extra_tag}_{version}.json"
    summary = VersionSummary(version=version, json_path=str(json_path), semantic_dir=str(out_dir / SEMANTIC_DIR),
                             images=len(index.key_frames),
                             non_key_frame_annotations=index.objects.num_non_key_frame + index.surfaces.num_non_key_frame)
    manifest = Manifest(out_dir / MANIFEST_NAME)
    ctx = WorkerContext(
        seg_root=str(out_dir / SEMANTIC_DIR),
        object_path=str(index.objects.path),
        surface_path=str(index.surfaces.path),
        categories={t: (c.semantic_index, c.coco_id) for t, c in index.categories.items()},
        manifest_path=str(manifest.path),
    )
    n = len(index.key_frames)
    if chunk_size is None:
        chunk_size = max(1, min(16, -(-n // max(1, 4 * max(nproc, 1)))))
    items = work_items(index, png_rels, manifest.entries, chunk_size)

    progress.stage(f"{version}: converting", n, "img")
    tmp_json = out_dir / f".{json_path.name}.{os.getpid()}.tmp"
    try:
        with open(tmp_json, "w", encoding="utf-8") as f:
            writer = _CocoWriter(f)
            writer.images(index)
            # closing(): on an error the pool must be stopped before the manifest is compacted.
            with contextlib.closing(run_chunks(ctx, items, nproc)) as results:
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
        # the pool is joined by now (closing() above): what its killed workers were writing goes
        _remove_stale_temps(out_dir)
        raise
    finally:
        manifest.compact()
    summary.annotations = writer.num_annotations
    summary.seconds = time.perf_counter() - t0
    return summary


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


def _add_result(s: VersionSummary, r: ImageResult) -> None:
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
