"""Rows of the nuImages tables: stable tokens, seeded random streams, rounding, the vocabulary
tables every version shares, and writing the ten JSON files."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np

from nuimcli.synthetic.schema import ATTRIBUTES, CAMERAS, CATEGORIES
from nuimcli.utils.io import atomic_write_json

#: Token namespace of the category, attribute and sensor rows: shared by all versions, as in
#: the real release.
SHARED_NAMESPACE = "nuimcli-synthetic"


def make_token(namespace: str, kind: str, key: object) -> str:
    """A 32-hex token, stable for (namespace, kind, key)."""
    return hashlib.md5(f"{namespace}/{kind}/{key}".encode()).hexdigest()


def rng_stream(seed: int, version: str, prefix: str) -> np.random.Generator:
    """An independent random stream for (seed, version, token prefix)."""
    key = [int(seed) & 0xFFFFFFFF, zlib.crc32(version.encode()), zlib.crc32(prefix.encode())]
    return np.random.default_rng(np.random.SeedSequence(key))


def rounded(values, nd: int) -> list[float]:
    """``values`` as Python floats rounded to ``nd`` decimals (the tables' JSON stays short)."""
    return [round(float(v), nd) for v in values]


def vocabulary_tables() -> tuple[list[dict], list[dict], list[dict]]:
    """The ``category``, ``attribute`` and ``sensor`` rows (the same for every version)."""
    category = [{"token": make_token(SHARED_NAMESPACE, "category", n), "name": n, "description": d}
                for n, d in CATEGORIES]
    attribute = [{"token": make_token(SHARED_NAMESPACE, "attribute", n), "name": n, "description": d}
                 for n, d in ATTRIBUTES]
    sensor = [{"token": make_token(SHARED_NAMESPACE, "sensor", c), "channel": c, "modality": "camera"}
              for c in CAMERAS]
    return category, attribute, sensor


def write_tables(root: Path, version: str, tables: dict[str, list[dict]]) -> None:
    """Write ``<root>/<version>/<name>.json`` for each table (atomically, one file at a time)."""
    for name, rows in tables.items():
        atomic_write_json(root / version / f"{name}.json", rows)
