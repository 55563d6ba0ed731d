"""Reading nuImages tables with bounded memory: streamed rows, token indexes, category mapping, masks.

The official devkit (``nuimages.NuImages``) ``json.load``s every table it touches, so its memory is
a few times the size of the JSON files (several GB for ``v1.0-train``). Here a table is streamed row
by row (:func:`iter_table`) and only what the converter needs is kept:

* ``sample_data``: the key frames (token, file name, size, in table order) and a sorted array of
  64-bit hashes of the other tokens (so that an annotation on a sweep can be told from one whose
  token does not exist);
* ``object_ann`` / ``surface_ann``: per row only (key-frame index, byte offset, byte length) — the
  row itself is read back from the file by whoever paints that image (:meth:`VersionIndex.read_rows`).

Memory therefore grows with the number of key frames (~0.3 kB each) and annotation rows (~24 bytes
each), not with the size of the masks. Masks use the devkit's format: ``{"size": [h, w], "counts":
base64(COCO compressed RLE string)}`` (column-major run lengths starting with a run of zeros).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import os
import re
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from nuimcli.errors import UserError

#: Tables the converter reads; the other six (attribute, calibrated_sensor, ego_pose, log, sample,
#: sensor) are never opened, as in the reference converter.
CONVERTER_TABLES = ("category", "sample_data", "object_ann", "surface_ann")

#: The 10 detection classes, in the order that gives their COCO category ids 0..9 (mmdet3d v0.7.0+).
NUS_CATEGORIES = (
    "car", "truck", "trailer", "bus", "construction_vehicle",
    "bicycle", "motorcycle", "pedestrian", "traffic_cone", "barrier",
)

#: nuImages category name -> detection class (the reference converter's ``NAME_MAPPING``).
#: Object categories not listed are still painted into the semantic map but get no instance annotation.
NAME_MAPPING = {
    "movable_object.barrier": "barrier",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
}

#: Fixed semantic indices of the devkit (``nuimages.utils.utils.name_to_index_mapping``).
DRIVEABLE_SURFACE, EGO_VEHICLE = "flat.driveable_surface", "vehicle.ego"
DRIVEABLE_SURFACE_INDEX, EGO_VEHICLE_INDEX = 24, 31

_WS = re.compile(r"[ \t\n\r]*")


# --------------------------------------------------------------------------------------------------
# Streaming a table
# --------------------------------------------------------------------------------------------------

def table_path(data_root: str | os.PathLike, version: str, table: str) -> Path:
    """``<data_root>/<version>/<table>.json``."""
    return Path(data_root) / version / f"{table}.json"


def iter_table(
    path: str | os.PathLike,
    chunk_bytes: int = 1 << 20,
    on_bytes: Optional[Callable[[int], None]] = None,
) -> Iterator[tuple[dict, int, int]]:
    """Stream the rows of a table file (a JSON array of objects) without loading the whole file.

    Yields ``(row, byte_offset, byte_length)``: ``row`` is the parsed object, and the raw bytes
    ``file[byte_offset : byte_offset + byte_length]`` are exactly its JSON text (so the row can be
    read back later with :func:`read_row`). Memory: one chunk (``chunk_bytes``) plus one row.
    ``on_bytes(n)`` is called with the number of bytes consumed after each chunk (for progress bars).

    Raises :class:`UserError` naming the file if it is missing, not UTF-8, not valid JSON, not an
    array, or holds something other than objects.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: table file is missing") from None
    except OSError as e:
        raise UserError(f"{path}: cannot open table file ({e.strerror})") from None
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    with f:
        buf = ""          # decoded text not yet consumed
        buf_ascii = True  # if True, character offsets in buf equal byte offsets
        base = 0          # byte offset of buf[0] in the file
        pos = 0           # character position in buf
        eof = False
        read_size = chunk_bytes
        state = "start"   # start -> first -> (value -> sep)* -> end
        index = 0

        def fail(msg: str, at_char: int) -> UserError:
            return UserError(f"{path}: not valid JSON at byte {base + _byte_len(buf, 0, at_char, buf_ascii)}: {msg}")

        def refill() -> bool:
            nonlocal buf, buf_ascii, base, pos, eof, read_size
            if eof:
                return False
            base += _byte_len(buf, 0, pos, buf_ascii)
            rest = buf[pos:]
            if len(rest) * 2 > read_size:  # one row larger than the chunk: read more at once
                read_size *= 2
            raw = f.read(read_size)
            try:
                text = utf8.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise UserError(f"{path}: not UTF-8 text near byte {base + len(rest.encode()) + e.start}") from None
            if not raw:
                eof = True
            buf = rest + text
            buf_ascii = buf.isascii()
            pos = 0
            if on_bytes is not None and raw:
                on_bytes(len(raw))
            return bool(raw)

        refill()
        while True:
            m = _WS.match(buf, pos)
            pos = m.end()
            if pos >= len(buf):
                if refill():
                    continue
                if state != "end":
                    raise fail("unexpected end of file (truncated table?)", pos)
                return
            ch = buf[pos]
            if state == "start":
                if ch != "[":
                    raise UserError(f"{path}: expected a JSON array of rows, found {ch!r} at the start")
                pos += 1
                state = "first"
            elif state in ("first", "value"):
                if ch == "]" and state == "first":
                    pos += 1
                    state = "end"
                    continue
                if ch != "{":
                    raise fail(f"row {index} is not a JSON object", pos)
                try:
                    row, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as e:
                    # A row cut by the chunk boundary fails near the end of the buffer (or as an
                    # unterminated string); anything else is a real syntax error.
                    truncated = e.msg.startswith("Unterminated string") or e.pos >= len(buf) - 16
                    if truncated and not eof and refill():
                        continue
                    raise fail(e.msg, e.pos) from None
                offset = base + _byte_len(buf, 0, pos, buf_ascii)
                length = _byte_len(buf, pos, end, buf_ascii)
                pos = end
                yield row, offset, length
                index += 1
                state = "sep"
            elif state == "sep":
                if ch == ",":
                    state = "value"
                elif ch == "]":
                    state = "end"
                else:
                    raise fail(f"expected ',' or ']' after row {index - 1}", pos)
                pos += 1
            else:  # end
                raise fail("extra data after the closing ']'", pos)


def _byte_len(buf: str, start: int, end: int, ascii_only: bool) -> int:
    """Number of UTF-8 bytes of ``buf[start:end]``."""
    if ascii_only:
        return end - start
    return len(buf[start:end].encode("utf-8"))


def load_table(path: str | os.PathLike) -> list[dict]:
    """All rows of a (small) table, e.g. ``category.json``; errors as in :func:`iter_table`."""
    return [row for row, _, _ in iter_table(path)]


def read_row(f, offset: int, length: int, path: str | os.PathLike) -> dict:
    """Read back one row streamed by :func:`iter_table` from the open binary file ``f``."""
    f.seek(offset)
    raw = f.read(length)
    try:
        row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        row = None
    if not isinstance(row, dict):
        raise UserError(f"{path}: the table changed while it was being converted (row at byte {offset}); run again")
    return row


# --------------------------------------------------------------------------------------------------
# Categories
# --------------------------------------------------------------------------------------------------

def name_to_index_mapping(category_rows: list[dict]) -> dict[str, int]:
    """Semantic index of every category name, exactly as the devkit's ``name_to_index_mapping``.

    Names sorted alphabetically, ``vehicle.ego`` and ``flat.driveable_surface`` skipped, the rest
    numbered from 1; then ``flat.driveable_surface`` = 24 and ``vehicle.ego`` = 31. 0 = unlabelled.
    With the official 25 categories: 1 animal … 23 vehicle.truck (see ``reference``).
    """
    names = sorted(r["name"] for r in category_rows)
    mapping: dict[str, int] = {}
    i = 1
    for name in names:
        if name not in (EGO_VEHICLE, DRIVEABLE_SURFACE):
            mapping[name] = i
            i += 1
    if i - 1 > 23:
        raise UserError(
            f"category.json: {i - 1} categories besides {EGO_VEHICLE} and {DRIVEABLE_SURFACE}, "
            "but the nuImages semantic index space has room for 23")
    mapping[DRIVEABLE_SURFACE] = DRIVEABLE_SURFACE_INDEX
    mapping[EGO_VEHICLE] = EGO_VEHICLE_INDEX
    return mapping


@dataclass(frozen=True)
class Category:
    """One row of ``category.json`` as the converter uses it."""

    token: str
    name: str
    semantic_index: int          # pixel value in the semantic PNG (devkit numbering)
    coco_id: Optional[int]       # 0..9 into NUS_CATEGORIES, or None if not an instance class


def load_categories(path: str | os.PathLike) -> dict[str, Category]:
    """``category.json`` -> {token: Category}; raises :class:`UserError` on malformed rows."""
    rows = load_table(path)
    for i, r in enumerate(rows):
        for key in ("token", "name"):
            if not isinstance(r.get(key), str):
                raise UserError(f"{path}: row {i}: field {key!r} is missing or not a string")
    name_to_index = name_to_index_mapping(rows)
    cat2id = {name: i for i, name in enumerate(NUS_CATEGORIES)}
    out: dict[str, Category] = {}
    for r in rows:
        mapped = NAME_MAPPING.get(r["name"])
        out[r["token"]] = Category(r["token"], r["name"], name_to_index[r["name"]],
                                   None if mapped is None else cat2id[mapped])
    return out


# --------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------

class CorruptMask(ValueError):
    """A mask that the devkit could not decode into an image-sized 0/1 array."""


def mask_rle_string(mask: dict) -> bytes:
    """The COCO compressed RLE string of a nuImages mask: ``base64.b64decode(mask["counts"])``."""
    counts = mask.get("counts")
    if not isinstance(counts, str):
        raise CorruptMask("'counts' is not a string")
    try:
        return base64.b64decode(counts)
    except (binascii.Error, ValueError) as e:
        raise CorruptMask(f"'counts' is not base64 ({e})") from None


def rle_string_to_counts(s: bytes, num_pixels: int) -> np.ndarray:
    """Decode a COCO compressed RLE string into run lengths (int64 [M]), as pycocotools does.

    Runs alternate 0, 1, 0, … over the column-major pixels, starting with (possibly empty) zeros.
    The inverse of pycocotools' ``rleToString``: each count is a little-endian sequence of 5-bit
    groups (char - 48, bit 0x20 = more follows, bit 0x10 of the last group = sign), and from the
    fourth count on the value is stored as a difference to the count two places earlier.
    Raises :class:`CorruptMask` unless the runs are non-negative and cover exactly ``num_pixels``.
    """
    a = np.frombuffer(s, dtype=np.uint8)
    if a.size == 0:
        if num_pixels == 0:
            return np.zeros(0, np.int64)
        raise CorruptMask("empty RLE")
    if a.min() < 48 or a.max() > 48 + 63:
        raise CorruptMask("RLE string has characters outside the COCO alphabet")
    c = a.astype(np.int64) - 48
    more = (c & 0x20) != 0
    if more[-1]:
        raise CorruptMask("RLE string is truncated")
    ends = np.flatnonzero(~more)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > 7:
        raise CorruptMask("RLE count too large")
    k = np.arange(c.size, dtype=np.int64) - np.repeat(starts, lengths)
    vals = np.bitwise_or.reduceat((c & 0x1F) << (5 * k), starts)
    neg = (c[ends] & 0x10) != 0
    if neg.any():
        vals[neg] |= np.left_shift(-1, 5 * lengths[neg])
    counts = vals
    if counts.size > 3:
        counts = vals.copy()
        counts[3::2] = vals[1] + np.cumsum(vals[3::2])
        counts[4::2] = vals[2] + np.cumsum(vals[4::2])
    if counts.min() < 0:
        raise CorruptMask("RLE has a negative run length")
    total = int(counts.sum())
    if total != num_pixels:
        raise CorruptMask(f"RLE covers {total} pixels, the mask size says {num_pixels}")
    return counts


def mask_size(mask: dict) -> tuple[int, int]:
    """``(h, w)`` of a nuImages mask dict; raises :class:`CorruptMask` if malformed."""
    size = mask.get("size")
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)):
        raise CorruptMask(f"'size' is {size!r}, expected [height, width]")
    return size[0], size[1]


def mask_runs(mask: dict) -> np.ndarray:
    """Run lengths (int64 [M]) of a nuImages mask dict, validated (see :func:`rle_string_to_counts`)."""
    h, w = mask_size(mask)
    return rle_string_to_counts(mask_rle_string(mask), h * w)


def paint_runs(flat_colmajor: np.ndarray, counts: np.ndarray, value: int) -> None:
    """Set the mask's pixels to ``value`` in a flat column-major image buffer (uint8 [H*W]).

    Only the foreground runs are touched (one slice assignment per run), so the cost is the
    number of runs plus the number of painted pixels — no full-frame mask is ever built.
    """
    if counts.size < 2:
        return
    ends = np.cumsum(counts)
    fg_end = ends[1::2].tolist()
    fg_start = ends[0::2][: len(fg_end)].tolist()
    for s, e in zip(fg_start, fg_end):
        if e > s:
            flat_colmajor[s:e] = value


def decode_mask(mask: dict) -> np.ndarray:
    """Full HxW uint8 0/1 array of a nuImages mask (what the devkit's ``mask_decode`` returns)."""
    h, w = mask_size(mask)
    flat = np.zeros(h * w, np.uint8)
    paint_runs(flat, mask_runs(mask), 1)
    return flat.reshape(w, h).T


# --------------------------------------------------------------------------------------------------
# Indexing a version
# --------------------------------------------------------------------------------------------------

@dataclass
class KeyFrame:
    """A key-frame ``sample_data`` row: one image of the COCO json."""

    __slots__ = ("token", "file_name", "width", "height")  # one per key frame: keep it small
    token: str
    file_name: str
    width: int
    height: int


@dataclass
class AnnIndex:
    """Where the rows of one annotation table are, grouped by key frame.

    Rows of image ``i`` are ``order[bounds[i]:bounds[i+1]]`` (table order within an image);
    ``offsets`` / ``lengths`` locate each row's bytes in ``path``.
    """

    path: Path
    offsets: np.ndarray  # int64 [R]
    lengths: np.ndarray  # int64 [R]
    order: np.ndarray    # int64 [R]
    bounds: np.ndarray   # int64 [num_images + 1]
    num_rows: int = 0
    num_non_key_frame: int = 0  # rows on sweeps (ignored, as by the reference)

    def rows_of(self, image_index: int) -> list[tuple[int, int]]:
        """``[(offset, length), ...]`` of the rows of one image, in table order."""
        sel = self.order[self.bounds[image_index]: self.bounds[image_index + 1]]
        return list(zip(self.offsets[sel].tolist(), self.lengths[sel].tolist()))


@dataclass
class VersionIndex:
    """Everything the converter needs to know about one version, in bounded memory."""

    data_root: Path
    version: str
    categories: dict[str, Category]
    key_frames: list[KeyFrame]
    objects: AnnIndex
    surfaces: AnnIndex
    num_sample_data: int = 0


def version_dir(data_root: str | os.PathLike, version: str) -> Path:
    """``<data_root>/<version>``, checked to exist (:class:`UserError` otherwise)."""
    root = Path(data_root)
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist (set --data-root to the folder holding {version}/)")
    vdir = root / version
    if not vdir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v1.0"))
        hint = f" (found: {', '.join(found)})" if found else ""
        raise UserError(f"version folder {vdir} does not exist{hint}")
    return vdir


def _field(row: dict, key: str, types, path: Path, i: int, what: str = "row"):
    v = row.get(key, _MISSING)
    if v is _MISSING or not isinstance(v, types) or (isinstance(v, bool) and bool not in _as_tuple(types)):
        tok = row.get("token")
        where = f"{what} {tok}" if isinstance(tok, str) else f"row {i}"
        problem = "is missing" if v is _MISSING else f"has the wrong type ({type(v).__name__})"
        raise UserError(f"{path}: {where}: field {key!r} {problem}")
    return v


def _as_tuple(t):
    return t if isinstance(t, tuple) else (t,)


_MISSING = object()


def _check_mask_field(row: dict, path: Path, i: int) -> None:
    m = row.get("mask", _MISSING)
    if m is None:
        return
    if not isinstance(m, dict) or not isinstance(m.get("counts"), str) or not isinstance(m.get("size"), list):
        tok = row.get("token")
        raise UserError(f"{path}: {'token ' + tok if isinstance(tok, str) else f'row {i}'}: "
                        "field 'mask' must be null or {\"size\": [h, w], \"counts\": \"...\"}")


def index_version(
    data_root: str | os.PathLike,
    version: str,
    on_stage: Optional[Callable[[str, int], None]] = None,
    on_bytes: Optional[Callable[[int], None]] = None,
) -> VersionIndex:
    """Stream the four tables of ``<data_root>/<version>`` once and index them.

    ``on_stage(description, total_bytes)`` (once) and ``on_bytes(n)`` report reading progress.
    Raises :class:`UserError` (naming file and token) for a missing folder or table, invalid JSON,
    a row without a required field, a duplicate key-frame token, or an annotation whose
    ``sample_data_token`` or ``category_token`` does not exist.
    """
    vdir = version_dir(data_root, version)
    for t in CONVERTER_TABLES:
        if not (vdir / f"{t}.json").is_file():
            raise UserError(f"{vdir / (t + '.json')}: table file is missing (the converter needs "
                            f"{', '.join(x + '.json' for x in CONVERTER_TABLES)})")

    if on_stage is not None:
        on_stage(f"{version}: reading tables", sum((vdir / f"{t}.json").stat().st_size for t in CONVERTER_TABLES))

    def stage(t: str) -> Path:
        return vdir / f"{t}.json"

    categories = load_categories(stage("category"))
    if on_bytes is not None:
        on_bytes((vdir / "category.json").stat().st_size)

    path = stage("sample_data")
    key_frames: list[KeyFrame] = []
    key_index: dict[str, int] = {}
    other = array("q")
    n_sd = 0
    for row, _, _ in iter_table(path, on_bytes=on_bytes):
        i = n_sd
        n_sd += 1
        token = _field(row, "token", str, path, i)
        if _field(row, "is_key_frame", bool, path, i, "sample_data"):
            if token in key_index:
                raise UserError(f"{path}: sample_data {token}: duplicate token")
            fn = _field(row, "filename", str, path, i, "sample_data")
            w = _field(row, "width", int, path, i, "sample_data")
            h = _field(row, "height", int, path, i, "sample_data")
            if w <= 0 or h <= 0:
                raise UserError(f"{path}: sample_data {token}: width/height {w}x{h} must be positive")
            key_index[token] = len(key_frames)
            key_frames.append(KeyFrame(token, fn, w, h))
        else:
            other.append(hash(token))
    non_key = np.sort(np.frombuffer(other, dtype=np.int64)) if len(other) else np.zeros(0, np.int64)
    del other

    def is_non_key(token: str) -> bool:
        h = hash(token)
        j = int(np.searchsorted(non_key, h))
        return j < non_key.size and int(non_key[j]) == h

    def index_ann(table: str) -> AnnIndex:
        path = stage(table)
        img, off, ln = array("q"), array("q"), array("q")
        n_rows = n_non_key = 0
        for row, o, n in iter_table(path, on_bytes=on_bytes):
            i = n_rows
            n_rows += 1
            sd = _field(row, "sample_data_token", str, path, i, table)
            cat = _field(row, "category_token", str, path, i, table)
            if table == "object_ann":
                _field(row, "token", str, path, i, table)
                bbox = _field(row, "bbox", list, path, i, table)
                if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
                    raise UserError(f"{path}: object_ann {row['token']}: 'bbox' must be [xmin, ymin, xmax, ymax]")
            _check_mask_field(row, path, i)
            if cat not in categories:
                tok = row.get("token", f"row {i}")
                raise UserError(f"{path}: {table} {tok}: category_token {cat} is not in category.json")
            k = key_index.get(sd)
            if k is None:
                if is_non_key(sd):
                    n_non_key += 1
                    continue
                tok = row.get("token", f"row {i}")
                raise UserError(f"{path}: {table} {tok}: sample_data_token {sd} is not in sample_data.json")
            img.append(k)
            off.append(o)
            ln.append(n)
        img_a = np.frombuffer(img, dtype=np.int64) if len(img) else np.zeros(0, np.int64)
        order = np.argsort(img_a, kind="stable")
        bounds = np.searchsorted(img_a[order], np.arange(len(key_frames) + 1), side="left")
        return AnnIndex(path=path,
                        offsets=np.frombuffer(off, dtype=np.int64).copy() if len(off) else np.zeros(0, np.int64),
                        lengths=np.frombuffer(ln, dtype=np.int64).copy() if len(ln) else np.zeros(0, np.int64),
                        order=order, bounds=bounds.astype(np.int64), num_rows=n_rows, num_non_key_frame=n_non_key)

    surfaces = index_ann("surface_ann")
    objects = index_ann("object_ann")
    return VersionIndex(Path(data_root), version, categories, key_frames, objects, surfaces, num_sample_data=n_sd)
