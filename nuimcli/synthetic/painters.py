"""Silhouettes. Each drawer fills a [h, w] uint8 canvas with 1 on the object's full (amodal)
shape; :data:`SHAPES` names them for :data:`nuimcli.synthetic.styles.STYLES`."""

from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np


def pt(x: float, y: float) -> tuple[int, int]:
    """A point rounded to the integer pixel OpenCV draws at."""
    return int(round(x)), int(round(y))


def _poly(c: np.ndarray, pts: list[tuple[float, float]]) -> None:
    cv2.fillPoly(c, [np.array([pt(x, y) for x, y in pts], dtype=np.int32)], 1)


def _rect(c: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> None:
    cv2.rectangle(c, pt(x0, y0), pt(x1, y1), 1, thickness=-1)


def _disc(c: np.ndarray, x: float, y: float, r: float) -> None:
    cv2.circle(c, pt(x, y), max(1, int(round(r))), 1, thickness=-1)


def _ellipse(c: np.ndarray, x: float, y: float, ax: float, ay: float) -> None:
    cv2.ellipse(c, pt(x, y), (max(1, int(round(ax))), max(1, int(round(ay)))), 0, 0, 360, 1, -1)


def _wheels(c: np.ndarray, w: int, h: int, xs: tuple[float, ...], r: float) -> None:
    for x in xs:
        _disc(c, x * w, h - 1 - r, r)


def _draw_car(c, w, h, rng):
    r = min(0.16 * h, 0.11 * w)
    _poly(c, [(0.0, 0.45 * h), (0.12 * w, 0.38 * h), (0.88 * w, 0.38 * h), (w - 1, 0.48 * h),
              (w - 1, 0.85 * h), (0.0, 0.85 * h)])
    _poly(c, [(0.2 * w, 0.40 * h), (0.32 * w, 0.0), (0.7 * w, 0.0), (0.82 * w, 0.40 * h)])
    _wheels(c, w, h, (0.2, 0.8), r)


def _draw_van(c, w, h, rng):
    r = min(0.14 * h, 0.1 * w)
    _poly(c, [(0.0, 0.05 * h), (0.75 * w, 0.0), (0.9 * w, 0.35 * h), (w - 1, 0.45 * h),
              (w - 1, 0.86 * h), (0.0, 0.86 * h)])
    _wheels(c, w, h, (0.18, 0.8), r)


def _draw_truck(c, w, h, rng):
    r = min(0.12 * h, 0.08 * w)
    _rect(c, 0, 0, 0.7 * w, 0.86 * h)
    _poly(c, [(0.72 * w, 0.25 * h), (0.9 * w, 0.25 * h), (w - 1, 0.5 * h), (w - 1, 0.86 * h),
              (0.72 * w, 0.86 * h)])
    _rect(c, 0.68 * w, 0.6 * h, 0.74 * w, 0.86 * h)
    _wheels(c, w, h, (0.12, 0.3, 0.85), r)


def _draw_bus(c, w, h, rng):
    r = min(0.11 * h, 0.06 * w)
    _poly(c, [(0.02 * w, 0.0), (0.98 * w, 0.0), (w - 1, 0.06 * h), (w - 1, 0.88 * h),
              (0.0, 0.88 * h), (0.0, 0.06 * h)])
    _wheels(c, w, h, (0.15, 0.8), r)


def _draw_trailer(c, w, h, rng):
    r = min(0.12 * h, 0.07 * w)
    _rect(c, 0.08 * w, 0.0, w - 1, 0.82 * h)
    _rect(c, 0.0, 0.62 * h, 0.1 * w, 0.7 * h)
    _wheels(c, w, h, (0.62, 0.8), r)


def _draw_construction(c, w, h, rng):
    _rect(c, 0.05 * w, 0.45 * h, 0.95 * w, 0.85 * h)
    _rect(c, 0.15 * w, 0.12 * h, 0.5 * w, 0.47 * h)
    cv2.line(c, pt(0.5 * w, 0.45 * h), pt(0.95 * w, 0.04 * h), 1,
             thickness=max(2, int(round(0.07 * h))))
    _rect(c, 0.0, 0.85 * h, w - 1, h - 1)


def _draw_cycle(c, w, h, rng, heavy: bool):
    r = min(0.21 * h, 0.22 * w)
    _wheels(c, w, h, (0.2, 0.8), r)
    thick = max(1, int(round((0.09 if heavy else 0.04) * h)))
    hub_y = h - 1 - r
    for a, b in (((0.2, hub_y), (0.45, 0.45 * h)), ((0.45, 0.45 * h), (0.8, hub_y)),
                 ((0.2, hub_y), (0.8, hub_y))):
        cv2.line(c, pt(a[0] * w, a[1]), pt(b[0] * w, b[1]), 1, thickness=thick)
    if heavy:
        _ellipse(c, 0.5 * w, 0.55 * h, 0.25 * w, 0.12 * h)
    if rng.random() < 0.6:  # rider
        _ellipse(c, 0.45 * w, 0.3 * h, 0.09 * w, 0.17 * h)
        _disc(c, 0.47 * w, 0.08 * h, 0.08 * h)


def _draw_bicycle(c, w, h, rng):
    _draw_cycle(c, w, h, rng, heavy=False)


def _draw_motorcycle(c, w, h, rng):
    _draw_cycle(c, w, h, rng, heavy=True)


def _draw_person(c, w, h, rng):
    _disc(c, 0.5 * w, 0.08 * h, min(0.08 * h, 0.3 * w))
    _ellipse(c, 0.5 * w, 0.33 * h, 0.42 * w, 0.18 * h)
    step = rng.uniform(0.0, 0.25)
    _poly(c, [(0.28 * w, 0.45 * h), (0.5 * w, 0.48 * h), ((0.42 - step) * w, h - 1),
              ((0.22 - step) * w, h - 1)])
    _poly(c, [(0.5 * w, 0.48 * h), (0.72 * w, 0.45 * h), ((0.78 + step) * w, h - 1),
              ((0.58 + step) * w, h - 1)])


def _draw_scooter(c, w, h, rng):
    _draw_person(c, w, int(0.88 * h), rng)
    _rect(c, 0.0, 0.9 * h, w - 1, 0.95 * h)
    _disc(c, 0.1 * w, h - 1 - 0.05 * h, 0.05 * h)
    _disc(c, 0.9 * w, h - 1 - 0.05 * h, 0.05 * h)


def _draw_stroller(c, w, h, rng):
    _ellipse(c, 0.45 * w, 0.35 * h, 0.38 * w, 0.3 * h)
    _rect(c, 0.1 * w, 0.35 * h, 0.8 * w, 0.7 * h)
    cv2.line(c, pt(0.8 * w, 0.4 * h), pt(w - 1, 0.0), 1, thickness=max(1, int(0.06 * h)))
    _wheels(c, w, h, (0.2, 0.7), 0.14 * h)


def _draw_wheelchair(c, w, h, rng):
    _disc(c, 0.4 * w, h - 1 - 0.3 * h, 0.3 * h)
    _disc(c, 0.4 * w, 0.1 * h, 0.1 * h)
    _ellipse(c, 0.4 * w, 0.38 * h, 0.16 * w, 0.2 * h)
    _rect(c, 0.4 * w, 0.5 * h, 0.85 * w, 0.62 * h)
    _rect(c, 0.75 * w, 0.5 * h, 0.88 * w, h - 1)


def _draw_cone(c, w, h, rng):
    _poly(c, [(0.42 * w, 0.0), (0.58 * w, 0.0), (0.9 * w, 0.9 * h), (0.1 * w, 0.9 * h)])
    _rect(c, 0.0, 0.88 * h, w - 1, h - 1)


def _draw_barrier(c, w, h, rng):
    _rect(c, 0.0, 0.05 * h, w - 1, 0.7 * h)
    _rect(c, 0.08 * w, 0.7 * h, 0.16 * w, h - 1)
    _rect(c, 0.84 * w, 0.7 * h, 0.92 * w, h - 1)


def _draw_animal(c, w, h, rng):
    _ellipse(c, 0.55 * w, 0.45 * h, 0.33 * w, 0.22 * h)
    _disc(c, 0.15 * w, 0.28 * h, 0.2 * h)
    for x in (0.3, 0.42, 0.68, 0.8):
        _rect(c, (x - 0.03) * w, 0.45 * h, (x + 0.03) * w, h - 1)


def _draw_blob(c, w, h, rng):
    n = 7
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.6, 1.0, n)
    _poly(c, [(0.5 * w + 0.5 * w * r * math.cos(a), 0.5 * h + 0.5 * h * r * math.sin(a))
              for a, r in zip(angles, radii)])


def _draw_bin(c, w, h, rng):
    _poly(c, [(0.05 * w, 0.12 * h), (0.95 * w, 0.12 * h), (0.85 * w, h - 1), (0.15 * w, h - 1)])
    _rect(c, 0.0, 0.0, w - 1, 0.12 * h)


def _draw_rack(c, w, h, rng):
    _rect(c, 0.0, 0.1 * h, w - 1, 0.25 * h)
    bars = max(3, int(w / max(h, 1) * 3))
    for i in range(bars):
        x = (i + 0.5) / bars * w
        _rect(c, x - 0.04 * h, 0.1 * h, x + 0.04 * h, h - 1)


SHAPES: dict[str, Callable[[np.ndarray, int, int, np.random.Generator], None]] = {
    "car": _draw_car, "van": _draw_van, "truck": _draw_truck, "bus": _draw_bus,
    "trailer": _draw_trailer, "construction": _draw_construction, "bicycle": _draw_bicycle,
    "motorcycle": _draw_motorcycle, "person": _draw_person, "scooter": _draw_scooter,
    "stroller": _draw_stroller, "wheelchair": _draw_wheelchair, "cone": _draw_cone,
    "barrier": _draw_barrier, "animal": _draw_animal, "blob": _draw_blob, "bin": _draw_bin,
    "rack": _draw_rack,
}
