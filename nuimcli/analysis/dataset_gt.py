"""The ground truth of a converted split, for ``nuim browse`` and ``nuim stats``: the COCO file
``nuim convert`` wrote, its semantic PNGs, and — when the raw nuImages tables are still under the
data root — what the conversion drops: object attributes, null masks, tokens.

Converted annotations carry no token, so the raw rows are joined to them by (image file name,
class, box): the converter copies ``object_ann.bbox`` into the COCO box unchanged.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from nuimcli.engine.coco_metrics import load_ground_truth
from nuimcli.errors import UserError

#: Tables read for attributes and null masks (all four must be there).
RAW_TABLES = ("sample_data", "object_ann", "category", "attribute")


def ann_file(data_root: str | os.PathLike, version: str) -> Path:
    """``<data_root>/annotations/nuimages_<version>.json`` (what ``nuim convert`` writes)."""
    return Path(data_root) / "annotations" / f"nuimages_{version}.json"


def semantic_png(data_root: str | os.PathLike, file_name: str) -> Path:
    """The semantic PNG ``nuim convert`` wrote for the image ``file_name``."""
    from nuimcli.data.convert import SEMANTIC_DIR
    from nuimcli.data.convert_manifest import png_rel_path

    return Path(data_root) / "annotations" / SEMANTIC_DIR / png_rel_path(file_name)


def box_key(file_name: str, category: int, xyxy: tuple) -> tuple:
    """The join key of a raw object row and a COCO annotation (boxes rounded to 1e-3 px)."""
    return (file_name, int(category), tuple(round(float(v), 3) for v in xyxy))


@dataclass
class RawExtras:
    """What the raw tables add: attribute names per annotation key, sample tokens of each image,
    and the key-frame objects whose mask is null (never converted), per class."""

    attributes: dict[tuple, list[str]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  #: sample or sample_data token -> file name
    null_masks: Counter = field(default_factory=Counter)  #: class name -> count


def load_raw_extras(data_root: str | os.PathLike, version: str) -> Optional[RawExtras]:
    """Read the raw tables of ``version`` (streamed), or None when they are not all there."""
    from nuimcli.data.nuimages import NAME_MAPPING, NUS_CATEGORIES, iter_table, load_table, table_path

    paths = {t: table_path(data_root, version, t) for t in RAW_TABLES}
    if not all(p.is_file() for p in paths.values()):
        return None
    extras = RawExtras()
    cls = {r["token"]: NAME_MAPPING.get(r.get("name", "")) for r in load_table(paths["category"])}
    attr = {r["token"]: r.get("name", r["token"]) for r in load_table(paths["attribute"])}
    key_frames: dict[str, str] = {}
    for r, _, _ in iter_table(paths["sample_data"]):
        if r.get("is_key_frame"):
            key_frames[r["token"]] = r["filename"]
            extras.tokens[r["token"]] = r["filename"]
            if r.get("sample_token"):
                extras.tokens[r["sample_token"]] = r["filename"]
    for r, _, _ in iter_table(paths["object_ann"]):
        fn = key_frames.get(r.get("sample_data_token"))
        name = cls.get(r.get("category_token"))
        if fn is None or name is None:
            continue  # a sweep, or a category that is not one of the 10 classes
        if r.get("mask") is None:
            extras.null_masks[name] += 1
            continue
        names = [attr.get(t, t) for t in r.get("attribute_tokens") or []]
        extras.attributes[box_key(fn, NUS_CATEGORIES.index(name), r["bbox"])] = names
    return extras


def load_split(data_root: str | os.PathLike, version: str) -> dict:
    """The converted COCO file of ``version``; a missing one is a :class:`UserError` saying how to make it."""
    path = ann_file(data_root, version)
    if not path.is_file():
        raise UserError(f"annotation file {path}: no such file (convert the split first: "
                        f"nuim convert --data-root {data_root} --version {version})")
    return load_ground_truth(path)


def annotation_attributes(gt: dict, extras: Optional[RawExtras]) -> dict[int, list[str]]:
    """Annotation id -> attribute names (empty without raw tables or for an unmatched annotation)."""
    if extras is None:
        return {}
    files = {im["id"]: im["file_name"] for im in gt["images"]}
    out = {}
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        out[a["id"]] = extras.attributes.get(box_key(files[a["image_id"]], a["category_id"], (x, y, x + w, y + h)), [])
    return out


def camera_of(file_name: str) -> str:
    """The camera of a nuImages image path ``samples/<CAM>/...`` (``?`` for another layout)."""
    parts = Path(file_name).parts
    return parts[1] if len(parts) >= 3 and parts[0] in ("samples", "sweeps") else "?"


def by_image(gt: dict) -> dict[int, list[dict]]:
    """Image id -> its annotations, in file order."""
    out: dict[int, list[dict]] = defaultdict(list)
    for a in gt["annotations"]:
        out[a["image_id"]].append(a)
    return out
