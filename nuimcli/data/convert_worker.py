"""The workers of ``nuim convert``: each paints the semantic PNGs of its images straight from
the RLE runs (no full-frame mask per object), writes them atomically, journals them in the
manifest, and returns the images' serialised annotations. The parent keeps at most a few chunks
of work in flight (:func:`run_chunks`), so memory does not grow with the dataset.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from nuimcli.data.convert_manifest import image_fingerprint, manifest_line
from nuimcli.data.nuimages import (
    CorruptMask,
    VersionIndex,
    mask_rle_string,
    mask_size,
    paint_runs,
    read_row,
    rle_string_to_counts,
)
from nuimcli.errors import UserError


@dataclass
class WorkerContext:
    """What every worker needs: where PNGs go, the two annotation tables, the categories, the manifest."""

    seg_root: str
    object_path: str
    surface_path: str
    categories: dict[str, tuple[int, Optional[int]]]  # token -> (semantic index, coco id or None)
    manifest_path: str


# image index, token, file name, width, height, png rel path, manifest entry or None,
# surface rows [(offset, length)], object rows [(offset, length)]
Item = tuple


@dataclass
class ImageResult:
    """What a worker reports for one image: its annotations (serialised) and counts."""

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


def work_items(index: VersionIndex, png_rels: list[str], entries: dict, chunk_size: int) -> Iterator[list[Item]]:
    """The key frames as chunks of ``chunk_size`` work items, in order."""
    chunk: list[Item] = []
    for i, kf in enumerate(index.key_frames):
        chunk.append((i, kf.token, kf.file_name, kf.width, kf.height, png_rels[i], entries.get(png_rels[i]),
                      index.surfaces.rows_of(i), index.objects.rows_of(i)))
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_chunks(ctx: WorkerContext, chunks: Iterator[list[Item]], nproc: int) -> Iterator[list[ImageResult]]:
    """Results of each chunk, in order; at most ``3 * nproc`` chunks in flight (bounded memory)."""
    if nproc <= 1:
        state = WorkerState(ctx)
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


_STATE: Optional["WorkerState"] = None


def _init_worker(ctx: WorkerContext) -> None:
    global _STATE
    # Ctrl-C reaches the whole process group: let the parent handle it and terminate the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Pool.terminate() ends the workers with SIGTERM: the default action, which the kernel carries
    # out wherever the worker is. A Python handler could be lost: a SIGTERM landing just before
    # the worker blocks on the task queue's lock (held by the terminating parent) left it waiting
    # forever and the parent in join() (seen once in CI). The parent removes the killed workers'
    # temporary PNGs once the pool is joined (convert.convert_version).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _STATE = WorkerState(ctx)


def _process_chunk(items: list[Item]) -> list[ImageResult]:
    assert _STATE is not None
    return [_STATE.process(item) for item in items]


class WorkerState:
    """Per-process state: open table files, the manifest descriptor, folders already created."""

    def __init__(self, ctx: WorkerContext) -> None:
        import cv2  # imported here: only painting needs OpenCV

        self.cv2 = cv2
        self.ctx = ctx
        self.objects_f = open(ctx.object_path, "rb")
        self.surfaces_f = open(ctx.surface_path, "rb")
        self.manifest_fd = os.open(ctx.manifest_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.made_dirs: set[str] = set()

    def close(self) -> None:
        """Close the table files and the manifest descriptor."""
        self.objects_f.close()
        self.surfaces_f.close()
        os.close(self.manifest_fd)

    def process(self, item: Item) -> ImageResult:
        """Read the image's rows, paint and write its PNG (unless the recorded one still holds),
        and serialise its annotations."""
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
        return ImageResult(png, anns, per_class, max_value, reuse, new_entry, len(objects),
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
        try:
            # OpenCV's default PNG settings (as mmcv.imwrite): the fastest of its modes for these maps.
            if not self.cv2.imwrite(tmp, sem):
                raise UserError(f"{final}: cannot write the PNG (is the disk full or read-only?)")
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        st = os.stat(final)
        entry = (fp, st.st_size, st.st_mtime_ns, max_value)
        os.write(self.manifest_fd, manifest_line(png, entry).encode())
        return entry
