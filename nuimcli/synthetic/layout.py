"""Scene layout: road, ego vehicle, buildings and objects of one key frame, and its label map.

Objects are placed far to near, so nearer (later) objects occlude earlier ones; each keeps at
least 30% of its shape visible. The label map (int16 [H, W]) holds 0 for background, then
:data:`ROAD`, :data:`EGO`, and ``FIRST_OBJECT + k`` for the k-th object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from nuimcli.synthetic.painters import SHAPES, pt
from nuimcli.synthetic.styles import STYLES

# Label-map values: 0 = unlabelled background, then road, ego, and objects from 3 on.
ROAD, EGO, FIRST_OBJECT = 1, 2, 3
_MIN_VISIBLE_FRACTION = 0.3  # an object keeps at least this share of its amodal area visible

# Probability that the ego vehicle is visible at the bottom edge, per camera.
_EGO_PROBABILITY = {
    "CAM_FRONT": 0.3, "CAM_FRONT_RIGHT": 0.3, "CAM_FRONT_LEFT": 0.3,
    "CAM_BACK": 0.9, "CAM_BACK_RIGHT": 0.6, "CAM_BACK_LEFT": 0.6,
}


@dataclass
class SceneObject:
    """One placed object: its silhouette canvas, where it stands, its box and how it looks."""

    category: str
    canvas: np.ndarray  # bool [h, w], the whole (amodal) shape
    ox: int  # canvas top-left in image coordinates (may lie outside the image)
    oy: int
    bbox: tuple[int, int, int, int]  # amodal, clipped to the image, inclusive max
    area: int  # amodal pixels inside the image
    brightness: float
    vx: float = 0.0  # pixels per sweep step, for moving objects in sweep images
    attributes: tuple[str, ...] = ()
    null_mask: bool = False
    behind: bool = False  # placed behind all objects painted before it


@dataclass
class Scene:
    """One key frame laid out: horizon, road, ego vehicle, buildings, objects and label map."""

    width: int
    height: int
    horizon: int
    road: np.ndarray  # int32 [4, 2] polygon
    ego: Optional[tuple[int, int, int, int]]  # ellipse centre x, centre y, half axes
    objects: list[SceneObject]
    labels: np.ndarray  # int16 [H, W] label map of the key frame
    buildings: list[tuple[int, int, int, int, tuple[int, int, int]]]


def window(ox: int, oy: int, h: int, w: int, width: int, height: int):
    """Intersection of a canvas placed at (ox, oy) with the image: image and canvas slices."""
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + w, width), min(oy + h, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox))


def paint(labels: np.ndarray, obj: SceneObject, value: int, dx: int = 0) -> None:
    """Paint an object's shape into the label map: under the ego vehicle, and if the object is
    ``behind``, also under every object already painted."""
    win = window(obj.ox + dx, obj.oy, *obj.canvas.shape, labels.shape[1], labels.shape[0])
    if win is None:
        return
    (img_sl, can_sl) = win
    region = labels[img_sl]
    where = obj.canvas[can_sl] & (region != EGO)
    if obj.behind:
        where &= region < FIRST_OBJECT
    np.copyto(region, np.int16(value), where=where)


def _sample_object(
    rng: np.random.Generator, names: list[str], probs: np.ndarray, width: int, height: int,
) -> tuple[str, np.ndarray, float]:
    """Choose a category and draw its silhouette; returns (category, canvas, foot depth 0..1)."""
    name = names[int(rng.choice(len(names), p=probs))]
    style = STYLES[name]
    # Depth factor: 1 = standing on the bottom edge; far (small) objects are more common.
    depth = 0.22 + 0.85 * rng.random() ** 1.3
    h = max(10.0, 0.05 * height, style.height * depth * height)
    w = min(max(6.0, h * rng.uniform(*style.aspect)), 0.7 * width)
    hi, wi = int(round(h)), int(round(w))
    canvas = np.zeros((hi, wi), dtype=np.uint8)
    SHAPES[style.shape](canvas, wi, hi, rng)
    canvas = canvas.astype(bool)
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
    return name, np.ascontiguousarray(canvas), depth


def layout_scene(
    rng: np.random.Generator, width: int, height: int, camera: str, n_objects: int,
    names: list[str], probs: np.ndarray,
) -> Scene:
    """Lay out road, ego vehicle and objects of one key frame and build its label map."""
    horizon = int(round(height * rng.uniform(0.42, 0.5)))
    vx = width * rng.uniform(0.35, 0.65)
    top = horizon + max(2, int(0.02 * height))
    half_top = width * rng.uniform(0.02, 0.06)
    road = np.array([
        pt(vx - half_top, top), pt(vx + half_top, top),
        pt(width * rng.uniform(0.95, 1.4), height - 1), pt(width * rng.uniform(-0.4, 0.05), height - 1),
    ], dtype=np.int32)
    labels = np.zeros((height, width), dtype=np.int16)
    cv2.fillPoly(labels, [road], ROAD)

    ego = None
    if rng.random() < _EGO_PROBABILITY[camera]:
        ego = (int(round(width * rng.uniform(0.4, 0.6))), int(round(height * 1.02)),
               int(round(width * rng.uniform(0.45, 0.7))), int(round(height * rng.uniform(0.08, 0.13))))
        cv2.ellipse(labels, ego[:2], ego[2:], 0, 0, 360, EGO, -1)

    buildings = []
    for _ in range(int(rng.integers(2, 6))):
        bw, bh = width * rng.uniform(0.08, 0.25), height * rng.uniform(0.08, 0.3)
        bx = width * rng.uniform(-0.05, 1.0)
        grey = int(rng.integers(110, 170))
        tint = int(rng.integers(-12, 13))
        buildings.append((int(bx), int(horizon - bh), int(bx + bw), horizon,
                          (grey + tint, grey, grey - tint)))

    objects: list[SceneObject] = []
    visible: list[int] = []

    def place(name: str, canvas: np.ndarray, depth: float, behind: bool) -> bool:
        """Try a few horizontal positions; paint the object at the first acceptable one.

        In front (``behind=False``) the object covers what is already there, as long as every
        covered object keeps enough of itself visible; behind, it shows only where nothing
        but road or background has been painted.
        """
        ch, cw = canvas.shape
        oy = int(round(horizon + depth * (height - horizon))) - ch
        for _attempt in range(6):
            ox = int(round(rng.uniform(-0.08, 1.08) * width - cw / 2))
            win = window(ox, oy, ch, cw, width, height)
            if win is None:
                continue
            img_sl, can_sl = win
            shape = canvas[can_sl]
            area = int(np.count_nonzero(shape))
            if area < 16:
                continue
            region = labels[img_sl]
            if region.max() <= ROAD:  # common case: only road and background underneath
                covered = np.zeros(FIRST_OBJECT + len(objects), dtype=np.int64)
            else:
                covered = np.bincount(region[shape], minlength=FIRST_OBJECT + len(objects))
            hidden = covered[EGO] + (covered[FIRST_OBJECT:].sum() if behind else 0)
            mine = area - int(hidden)
            if mine < max(12, _MIN_VISIBLE_FRACTION * area):
                continue
            covered = covered[FIRST_OBJECT:]
            hit = np.nonzero(covered)[0] if not behind else ()
            if any(visible[j] - covered[j] < max(12, _MIN_VISIBLE_FRACTION * objects[j].area)
                   for j in hit):
                continue
            rows, cols = shape.any(axis=1), shape.any(axis=0)
            bbox = (img_sl[1].start + int(cols.argmax()), img_sl[0].start + int(rows.argmax()),
                    img_sl[1].start + len(cols) - 1 - int(cols[::-1].argmax()),
                    img_sl[0].start + len(rows) - 1 - int(rows[::-1].argmax()))
            obj = SceneObject(name, canvas, ox, oy, bbox, area, float(rng.uniform(0.88, 1.12)),
                          behind=behind)
            for j in hit:
                visible[j] -= int(covered[j])
            visible.append(mine)
            paint(labels, obj, FIRST_OBJECT + len(objects))
            objects.append(obj)
            return True
        return False

    candidates = [_sample_object(rng, names, probs, width, height) for _ in range(n_objects)]
    # Far to near: nearer objects are painted later and occlude the farther ones.
    for name, canvas, depth in sorted(candidates, key=lambda c: c[2]):
        place(name, canvas, depth, behind=False)
    # Objects that found no place are replaced by new ones standing behind everything so far.
    for _ in range(4 * (n_objects - len(objects))):
        if len(objects) >= n_objects:
            break
        place(*_sample_object(rng, names, probs, width, height), behind=True)
    return Scene(width, height, horizon, road, ego, objects, labels, buildings)
