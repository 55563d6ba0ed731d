"""Merge the categories of a COCO instances file into new classes (e.g. car + truck + bus → vehicle).

Used to make a data set with its own class list out of one you have, such as the nuImages COCO
files that ``nuim convert`` writes (or the synthetic set of ``nuim demo``)::

    python -m nuimcli.data.merge_classes IN.json OUT.json \\
        --map vehicle=car,truck,trailer,bus,construction_vehicle,bicycle,motorcycle \\
        --map person=pedestrian --map cone=traffic_cone

Each ``--map NEW=OLD1,OLD2,...`` makes one category ``NEW`` (ids 1, 2, ... in the order given);
annotations of the old categories move to it; annotations of categories no map names are
dropped. Images, file names and annotation ids stay as they are, so the images are shared with
the input file. Exit codes: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from nuimcli.errors import UserError
from nuimcli.utils.io import atomic_write_json


def parse_maps(items: Sequence[str]) -> dict[str, list[str]]:
    """``["vehicle=car,truck", "person=pedestrian"]`` → ``{"vehicle": ["car", "truck"], ...}``."""
    out: dict[str, list[str]] = {}
    used: dict[str, str] = {}
    for item in items:
        new, sep, olds = item.partition("=")
        names = [n.strip() for n in olds.split(",") if n.strip()]
        if not sep or not new.strip() or not names:
            raise UserError(f"--map {item!r}: expected NEW=OLD[,OLD...], e.g. vehicle=car,truck")
        new = new.strip()
        if new in out:
            raise UserError(f"--map {item!r}: class {new!r} is mapped twice")
        for n in names:
            if n in used:
                raise UserError(f"--map {item!r}: category {n!r} already goes to {used[n]!r}")
            used[n] = new
        out[new] = names
    if not out:
        raise UserError("give at least one --map NEW=OLD[,OLD...]")
    return out


def merge_classes(coco: dict, maps: dict[str, list[str]], where: str = "input") -> dict:
    """A new COCO dict whose categories are the keys of ``maps`` (ids 1..N in order); every
    annotation of an old category named in ``maps`` gets its new category, the others are dropped.
    A name in ``maps`` that is not a category of ``coco`` is a :class:`UserError`."""
    by_name = {c["name"]: c["id"] for c in coco.get("categories", [])}
    new_id: dict[object, int] = {}
    for i, (new, olds) in enumerate(maps.items(), 1):
        for old in olds:
            if old not in by_name:
                raise UserError(f"{where}: has no category named {old!r} (it has {', '.join(by_name)})")
            new_id[by_name[old]] = i
    anns = [{**a, "category_id": new_id[a["category_id"]]} for a in coco.get("annotations", [])
            if a.get("category_id") in new_id]
    cats = [{"id": i, "name": new, "supercategory": new} for i, new in enumerate(maps, 1)]
    return {**coco, "annotations": anns, "categories": cats}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nuimcli.data.merge_classes IN OUT --map NEW=OLD,...``: write the merged file."""
    ap = argparse.ArgumentParser(prog="python -m nuimcli.data.merge_classes",
                                 description="Merge the categories of a COCO instances file into new classes.")
    ap.add_argument("input", type=Path, help="COCO instances JSON to read")
    ap.add_argument("output", type=Path, help="COCO instances JSON to write (atomically)")
    ap.add_argument("--map", dest="maps", action="append", default=[], metavar="NEW=OLD[,OLD...]",
                    help="one new class and the categories it takes (repeat for each class)")
    args = ap.parse_args(argv)
    try:
        maps = parse_maps(args.maps)
        try:
            coco = json.loads(args.input.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{args.input}: cannot read a COCO JSON file ({e})") from None
        merged = merge_classes(coco, maps, str(args.input))
        atomic_write_json(args.output, merged)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = {c["name"]: 0 for c in merged["categories"]}
    for a in merged["annotations"]:
        counts[merged["categories"][a["category_id"] - 1]["name"]] += 1
    print(f"wrote {args.output}: " + ", ".join(f"{n} {k}" for n, k in counts.items())
          + f" ({len(coco.get('annotations', [])) - len(merged['annotations'])} annotations of other categories dropped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
