"""``nuim browse``: the ground truth of a converted split drawn on its images — instance masks,
boxes, class names with their attributes (from the raw tables when they are there) and,
optionally, the semantic PNG underneath — one ``<out>/<image stem>.jpg`` per image."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from nuimcli.errors import UserError


@dataclass
class BrowseItem:
    """One image: where it came from, what was written, how many instances, or why it failed."""

    image: str
    out: Optional[str] = None
    instances: int = 0
    error: Optional[str] = None


def pick_images(gt: dict, extras: object, sample: Optional[str], n: int) -> list[dict]:
    """The image entries to draw: the one ``sample`` names (a sample or sample_data token when the
    raw tables are there, or a file name or its stem), else the first ``n``."""
    images = gt["images"]
    if sample is None:
        return images[: max(0, n)]
    tokens = getattr(extras, "tokens", {}) or {}
    want = tokens.get(sample, sample)
    hits = [im for im in images if im["file_name"] == want or Path(im["file_name"]).stem == want]
    if not hits:
        how = "a sample or sample_data token of a key frame, an image file name or its stem" if tokens \
            else "an image file name or its stem (tokens need the raw tables under --data-root/<version>)"
        raise UserError(f"--sample {sample}: no such image in the split (give {how})")
    return hits


def browse(data_root: str | os.PathLike, version: str, out_dir: str | os.PathLike, sample: Optional[str] = None,
           n: int = 10, semantic: bool = False, progress: bool = True) -> list[BrowseItem]:
    """Draw the chosen images of ``version`` into ``out_dir``; an image or semantic PNG that cannot
    be read is recorded on its item (the others are still drawn)."""
    import cv2
    from pycocotools import mask as mask_util

    from nuimcli.analysis.dataset_gt import annotation_attributes, by_image, load_raw_extras, load_split, semantic_png
    from nuimcli.data.transforms import load_image
    from nuimcli.utils.io import atomic_path
    from nuimcli.utils.progress import make_progress
    from nuimcli.visual.draw import draw_predictions

    gt = load_split(data_root, version)
    extras = load_raw_extras(data_root, version)
    chosen = pick_images(gt, extras, sample, n)
    attrs = annotation_attributes(gt, extras)
    anns = by_image(gt)
    names = {c["id"]: c.get("name", str(c["id"])) for c in gt["categories"]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = []
    bar = make_progress("img", transient=True)
    with bar if progress else _Null():
        task = bar.add_task("browse", total=len(chosen)) if progress else None
        for im in chosen:
            item = BrowseItem(image=im["file_name"])
            items.append(item)
            try:
                img = load_image(Path(data_root) / im["file_name"])
                sem = None
                if semantic:
                    png = semantic_png(data_root, im["file_name"])
                    sem = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
                    if sem is None:
                        raise UserError(f"semantic PNG {png}: missing or unreadable")
                a = anns.get(im["id"], [])
                boxes = np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (x["bbox"] for x in a)],
                                 np.float64).reshape(-1, 4)
                labels = np.array([x["category_id"] for x in a], np.int64)
                masks = np.stack([mask_util.decode(x["segmentation"]).astype(bool) for x in a]) if a else None
                texts = [" ".join([names.get(x["category_id"], "?"), *(t.split(".")[-1] for t in attrs.get(x["id"], []))])
                         for x in a]
                pic = draw_predictions(img, boxes, None, labels, masks, semantic=sem, texts=texts)
                dest = out / f"{Path(im['file_name']).stem}.jpg"
                with atomic_path(dest) as tmp:
                    if not cv2.imwrite(str(tmp), pic, [cv2.IMWRITE_JPEG_QUALITY, 92]):
                        raise UserError(f"{dest}: could not write the picture")
                item.out, item.instances = str(dest), len(a)
            except UserError as e:
                item.error = str(e)
            if progress:
                bar.advance(task)
    return items


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
