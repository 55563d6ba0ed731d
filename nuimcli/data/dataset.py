"""COCO json (from ``nuim convert``) + images (+ semantic PNGs) → training samples.

Behaves like mmdet 2.x's ``CocoDataset`` in training mode:

* labels: the JSON category whose name is ``classes[i]`` gets label ``i`` (with a converter JSON
  this is also mmdet's JSON-order mapping; mapping by name cannot mislabel a reordered file);
* train filtering: images without any annotation of the classes are dropped
  (``filter_empty_gt``) and so are images whose shorter side is below 32 pixels;
* annotation skip rules (``_parse_ann_info``): ``ignore`` set, no overlap with the image,
  ``area <= 0``, width or height < 1, a category that is not one of the classes; ``iscrowd``
  boxes would be ignore-regions, which the assigner never uses, so they are dropped too;
* masks decoded from RLE / polygons to full-image bitmaps; HTC's semantic label map read from
  ``<semantic_root>/<file_name with jpg→png>`` unchanged.

Bad input is a :class:`~nuimcli.errors.UserError` that names the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils

from nuimcli.data.structures import RawSample, TrainSample
from nuimcli.errors import UserError
from nuimcli.presets import DataConfig, Preset

MIN_SIZE = 32  #: mmdet's ``_filter_imgs(min_size=32)``


@dataclass
class ImageRecord:
    """One image and its kept annotations (boxes x1y1x2y2 in original pixels)."""

    image_id: Any
    file_name: str
    width: int
    height: int
    bboxes: np.ndarray  #: float32 [N, 4]
    labels: np.ndarray  #: int64 [N]
    segmentations: list = field(default_factory=list)  #: N COCO segmentations (RLE dict or polygons)

    @property
    def aspect_flag(self) -> int:
        """mmdet's group flag: 1 for landscape (w / h > 1), else 0."""
        return 1 if self.width / self.height > 1 else 0


def _fail(path: Path, what: str) -> UserError:
    return UserError(f"{path}: not a COCO instances file: {what}")


def read_coco_json(ann_file: str | Path) -> dict:
    """Read a COCO instances JSON and check its top-level structure (images / annotations /
    categories lists, category entries with ``id`` and ``name``). UserError naming the file else."""
    path = Path(ann_file)
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found (run `nuim convert` or pass --train-ann)")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _fail(path, f"not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise _fail(path, f"top level is a {type(data).__name__}, expected an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise _fail(path, f"no '{key}' list")
    for c in data["categories"]:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise _fail(path, f"category entry {c!r} lacks 'id'/'name'")
    return data


def load_coco_records(ann_file: str | Path, classes: Sequence[str], data: Optional[dict] = None,
                      with_mask: bool = False) -> tuple[list[ImageRecord], int]:
    """Parse a COCO instances JSON into one :class:`ImageRecord` per image (no filtering yet).

    Returns ``(records, num_skipped_annotations)``. ``data``: the file already read by
    :func:`read_coco_json`. Raises UserError naming ``ann_file`` when the file is missing, not
    JSON, or lacks the COCO structure, and for what would silently train on wrong targets: an
    annotation whose ``category_id`` is not in ``categories``, one on an image that is not
    listed, and (``with_mask``) a kept annotation without a mask or with one that does not fit
    its image (see :func:`check_segmentation`). Annotations of categories that are not among
    ``classes`` are skipped, as mmdet does.
    """
    path = Path(ann_file)
    if data is None:
        data = read_coco_json(path)

    name_to_label = {n: i for i, n in enumerate(classes)}
    cat_to_label: dict[Any, int] = {}
    for c in data["categories"]:
        if c["name"] in name_to_label:
            cat_to_label[c["id"]] = name_to_label[c["name"]]
    known_cats = {c["id"] for c in data["categories"]}

    images: dict[Any, dict] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or not all(k in im for k in ("id", "file_name", "width", "height")):
            raise _fail(path, f"image entry lacks one of id/file_name/width/height: {str(im)[:120]}")
        images[im["id"]] = im
    anns_by_image: dict[Any, list] = {}
    for a in data["annotations"]:
        if not isinstance(a, dict) or not all(k in a for k in ("image_id", "category_id", "bbox")):
            raise _fail(path, f"annotation entry lacks one of image_id/category_id/bbox: {str(a)[:120]}")
        if a["image_id"] not in images:
            raise _fail(path, f"annotation {a.get('id')!r} refers to image_id {a['image_id']!r} that is not listed")
        if a["category_id"] not in known_cats:
            raise UserError(f"{path}: annotation {a.get('id')!r} has category_id {a['category_id']!r}, which is not "
                            f"in 'categories' (ids {_ids_text(known_cats)})")
        anns_by_image.setdefault(a["image_id"], []).append(a)

    records: list[ImageRecord] = []
    skipped = 0
    no_mask: list[Any] = []
    for img_id, im in images.items():
        w, h = int(im["width"]), int(im["height"])
        boxes, labels, segs = [], [], []
        for a in anns_by_image.get(img_id, []):
            keep = _parse_annotation(a, w, h, cat_to_label, path)
            if keep is None:
                skipped += 1
                continue
            seg = a.get("segmentation")
            if with_mask:
                if not seg:
                    no_mask.append(a.get("id"))
                else:
                    check_segmentation(seg, a.get("id"), im, path)
            boxes.append(keep[0])
            labels.append(keep[1])
            segs.append(seg)
        records.append(
            ImageRecord(
                image_id=img_id,
                file_name=str(im["file_name"]),
                width=w,
                height=h,
                bboxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                labels=np.asarray(labels, dtype=np.int64),
                segmentations=segs,
            )
        )
    if no_mask:
        # Refused rather than trained box-only: every preset has a mask head, and an all-zero
        # target would teach it to predict empty masks for these objects.
        raise UserError(
            f"{path}: {len(no_mask)} of the annotations used for training have no mask (annotation "
            f"{no_mask[0]!r} has no 'segmentation'): the presets train instance masks, so each object "
            f"needs a polygon or RLE mask (box-only training is not supported)")
    return records, skipped


def _ids_text(ids: set) -> str:
    shown = sorted(ids, key=str)[:10]
    return ", ".join(map(str, shown)) + (" …" if len(ids) > 10 else "")


def check_segmentation(seg: Any, ann_id: Any, image: dict, path: Path) -> None:
    """UserError when a mask does not fit its image: an RLE whose ``size`` is not the image's
    ``[height, width]``, or a polygon with a point more than 1 px outside the image (polygon
    tools put border points at x = width, so that much is allowed), or a malformed mask."""
    w, h = int(image["width"]), int(image["height"])
    where = f"{path}: annotation {ann_id!r} (image {image['id']!r}, {w}x{h})"
    if isinstance(seg, dict):
        size = seg.get("size")
        if not isinstance(size, (list, tuple)) or len(size) != 2 or "counts" not in seg:
            raise UserError(f"{where}: RLE mask needs 'size' [height, width] and 'counts'")
        if [int(size[0]), int(size[1])] != [h, w]:
            raise UserError(f"{where}: RLE mask is {int(size[1])}x{int(size[0])}, not the image's {w}x{h}")
        return
    if not isinstance(seg, list) or not all(isinstance(p, (list, tuple)) for p in seg):
        raise UserError(f"{where}: segmentation must be a list of polygons [[x1, y1, x2, y2, ...], ...] or an RLE object")
    for poly in seg:
        if len(poly) < 6 or len(poly) % 2:
            raise UserError(f"{where}: a polygon needs at least 3 points as x, y pairs, got {len(poly)} numbers")
        xs, ys = np.asarray(poly[0::2], np.float64), np.asarray(poly[1::2], np.float64)
        if xs.min() < -1 or xs.max() > w + 1 or ys.min() < -1 or ys.max() > h + 1:
            raise UserError(f"{where}: polygon reaches ({xs.min():g}..{xs.max():g}, {ys.min():g}..{ys.max():g}), "
                            f"outside the image")


def _parse_annotation(a: dict, w: int, h: int, cat_to_label: dict, path: Path) -> Optional[tuple[list[float], int]]:
    """mmdet ``_parse_ann_info`` rules for one annotation; None when it is skipped."""
    if a.get("ignore", False) or a.get("iscrowd", False):
        return None
    bbox = a["bbox"]
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise _fail(path, f"annotation {a.get('id')!r}: bbox must be [x, y, w, h], got {bbox!r}")
    x1, y1, bw, bh = (float(v) for v in bbox)
    inter_w = max(0.0, min(x1 + bw, w) - max(x1, 0.0))
    inter_h = max(0.0, min(y1 + bh, h) - max(y1, 0.0))
    if inter_w * inter_h == 0:
        return None
    if float(a.get("area", bw * bh)) <= 0 or bw < 1 or bh < 1:
        return None
    if a["category_id"] not in cat_to_label:
        return None
    return [x1, y1, x1 + bw, y1 + bh], cat_to_label[a["category_id"]]


def filter_train_records(records: list[ImageRecord], min_size: int = MIN_SIZE) -> list[ImageRecord]:
    """mmdet's train-time ``_filter_imgs``: keep images with >= 1 kept annotation and min side >= 32.

    (mmdet keeps an image if it has any annotation of the classes, even one later skipped by
    the box rules; here an image needs a usable box, which only differs for degenerate files.)
    """
    return [r for r in records if len(r.labels) > 0 and min(r.width, r.height) >= min_size]


def semantic_path(semantic_root: Path, file_name: str) -> Path:
    """``seg_prefix + file_name.replace('jpg', 'png')`` as mmdet builds it (every 'jpg' replaced)."""
    return Path(semantic_root) / file_name.replace("jpg", "png")


def decode_masks(segmentations: list, height: int, width: int) -> np.ndarray:
    """COCO segmentations (compressed / uncompressed RLE, polygons) → uint8 [N, height, width]."""
    out = np.zeros((len(segmentations), height, width), dtype=np.uint8)
    for i, seg in enumerate(segmentations):
        if seg is None:
            continue
        if isinstance(seg, list):  # polygons: merge the parts of one object
            if not seg:
                continue
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = dict(seg)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        m = mask_utils.decode(rle)
        if m.shape[:2] != (height, width):
            m = cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST)
        out[i] = m
    return out


class TrainDataset(torch.utils.data.Dataset):
    """Training samples: ``dataset[(index, seed)]`` → a :class:`~nuimcli.data.structures.TrainSample`.

    The seed drives every random choice of the augmentation (scale, flip), so a sample is a pure
    function of (index, seed) whatever worker loads it — which makes resume and DDP exact.
    """

    def __init__(
        self,
        records: list[ImageRecord],
        img_root: str | Path,
        data_cfg: DataConfig,
        semantic_root: Optional[str | Path] = None,
        with_mask: bool = True,
        ann_file: str | Path = "",
    ) -> None:
        self.records = records
        self.img_root = Path(img_root)
        self.data_cfg = data_cfg
        self.semantic_root = Path(semantic_root) if semantic_root is not None else None
        self.with_mask = with_mask
        self.ann_file = str(ann_file)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def aspect_flags(self) -> np.ndarray:
        """uint8 [N]: 1 for landscape images (w > h), for aspect-ratio grouping."""
        return np.asarray([r.aspect_flag for r in self.records], dtype=np.uint8)

    def load_raw(self, index: int) -> RawSample:
        """The un-augmented sample: BGR uint8 image, boxes, labels, masks [N,H,W], semantic [H,W]."""
        r = self.records[index]
        path = self.img_root / r.file_name
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise UserError(f"{path}: cannot read the image (missing file or not an image)")
        h, w = img.shape[:2]
        if (h, w) != (r.height, r.width):
            raise UserError(
                f"{path}: image is {w}x{h} but {self.ann_file or 'the annotation file'} says {r.width}x{r.height}")
        sample: RawSample = {
            "img": img,
            "bboxes": r.bboxes.copy(),
            "labels": r.labels.copy(),
            "file_name": r.file_name,
            "image_id": r.image_id,
        }
        if self.with_mask:
            sample["masks"] = decode_masks(r.segmentations, h, w)
        if self.semantic_root is not None:
            sp = semantic_path(self.semantic_root, r.file_name)
            seg = cv2.imread(str(sp), cv2.IMREAD_UNCHANGED)
            if seg is None:
                raise UserError(f"{sp}: cannot read the semantic mask PNG (run `nuim convert` to write it)")
            if seg.ndim == 3:
                seg = seg[:, :, 0]
            if seg.shape[:2] != (h, w):
                raise UserError(f"{sp}: semantic mask is {seg.shape[1]}x{seg.shape[0]}, image is {w}x{h}")
            sample["semantic"] = seg
        return sample

    def __getitem__(self, item: tuple[int, int] | int) -> TrainSample:
        from nuimcli.data.augment import train_transform

        index, seed = item if isinstance(item, tuple) else (int(item), int(item))
        sample = self.load_raw(index)
        out = train_transform(sample, self.data_cfg, np.random.default_rng(seed))
        out.img_meta = out.img_meta.with_seed(seed)  # the samplers of the loss draw from it
        return out


def build_train_dataset(
    ann_file: str | Path,
    img_root: str | Path,
    preset: Preset,
    semantic_root: Optional[str | Path] = None,
    check_files: bool = True,
    data: Optional[dict] = None,
) -> TrainDataset:
    """Load, filter and check a training split.

    ``semantic_root`` is required (and checked) when the preset has HTC's semantic head.
    ``data``: the annotation file already read (:func:`read_coco_json`).
    Raises UserError for a missing/non-COCO annotation file, listed images that are not on
    disk, missing semantic PNGs, or a split left empty by the filtering.
    """
    records, _ = load_coco_records(ann_file, preset.data.classes, data=data, with_mask=True)
    kept = filter_train_records(records)
    if not kept:
        raise UserError(
            f"{ann_file}: no training image left: {len(records)} images, none with an annotation of "
            f"the {len(preset.data.classes)} classes and a side >= {MIN_SIZE}px")
    with_semantic = bool(preset.model.semantic.enabled)
    if with_semantic and (semantic_root is None or not Path(semantic_root).is_dir()):
        # Refused rather than trained without the semantic loss: that model exists as its own
        # preset, whose checkpoints then say what they hold.
        where = f" ({semantic_root} is not a folder)" if semantic_root is not None else ""
        raise UserError(
            f"preset '{preset.name}' trains HTC's semantic head, which needs semantic label PNGs (`nuim convert` "
            f"writes them for nuImages){where}; for data without them use htc-r50-nosemantic-1x")
    if check_files:
        require_files([Path(img_root) / r.file_name for r in kept], f"image listed in {ann_file}")
        if with_semantic:
            require_files([semantic_path(Path(semantic_root), r.file_name) for r in kept],
                          "semantic mask PNG (written by `nuim convert`)")
    return TrainDataset(kept, img_root, preset.data, semantic_root if with_semantic else None,
                        with_mask=True, ann_file=ann_file)


def require_files(paths: Sequence[Path], what: str) -> None:
    """UserError naming the first of ``paths`` that is not a file (and how many more are missing)."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more of {len(paths)})" if len(missing) > 1 else ""
        raise UserError(f"{missing[0]}: {what} not found{more}")