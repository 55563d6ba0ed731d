"""Synthetic nuImages in the official schema: all ten tables, RLE masks and JPEG images.

The output loads in the official devkit (``nuimages.NuImages``) and in ``nuim convert``
exactly like a real release: same tables, fields, types and conventions (32-hex tokens,
``samples/<CAM>/<logfile>__<CAM>__<timestamp>.jpg`` key frames, ``sweeps/...`` sweeps linked
by ``prev``/``next``, amodal ``[xmin, ymin, xmax, ymax]`` int boxes, visible masks as base64
COCO compressed RLE, some ``null`` masks, ``flat.driveable_surface`` and ``vehicle.ego``
surfaces).

Scenes are built so that a small detector can learn from a few images: each object is a
class-specific silhouette standing on a road below the horizon, painted in a class colour
with a mild class texture. Objects are drawn far to near, so nearer (later) objects occlude
earlier ones; an object's mask is its visible part, its box the whole (amodal) shape clipped
to the image. The ego vehicle covers the bottom edge and occludes everything.

Masks are drawn per object on a small canvas and run-length encoded from that canvas (the
full-image mask is never materialised), so tables-only generation of 1,000 1600x900 key
frames with 10-30 objects takes seconds.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from nuimcli.errors import UserError
from nuimcli.utils.io import atomic_write_bytes, atomic_write_json

PathLike = Union[str, Path]

#: The six nuImages cameras, in the order of the real ``sensor.json``.
CAMERAS = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)

#: The 25 nuImages categories (name, description), in the order of the real ``category.json``.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("human.pedestrian.adult", "Adult subcategory."),
    ("human.pedestrian.child", "Child subcategory."),
    ("human.pedestrian.wheelchair",
     "Wheelchairs. If a person is in the wheelchair, include in the annotation."),
    ("human.pedestrian.stroller",
     "Strollers. If a person is in the stroller, include in the annotation."),
    ("human.pedestrian.personal_mobility",
     "A small electric or self-propelled vehicle, e.g. skateboard, segway, or scooters, on which "
     "the person typically travels in a upright position. Driver and (if applicable) rider should "
     "be included in the bounding box along with the vehicle."),
    ("human.pedestrian.police_officer", "Police officer."),
    ("human.pedestrian.construction_worker", "Construction worker"),
    ("animal", "All animals, e.g. cats, rats, dogs, deer, birds."),
    ("vehicle.car",
     "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, wagons, vans, "
     "mini-vans, SUVs and jeeps. If the vehicle is designed to carry more than 10 people use "
     "vehicle.bus. If it is primarily designed to haul cargo use vehicle.truck. "),
    ("vehicle.motorcycle",
     "Gasoline or electric powered 2-wheeled vehicle designed to move rapidly (at the speed of "
     "standard cars) on the road surface. This category includes all motorcycles, vespas and "
     "scooters."),
    ("vehicle.bicycle",
     "Human or electric powered 2-wheeled vehicle designed to travel at lower speeds either on "
     "road surface, sidewalks or bike paths."),
    ("vehicle.bus.bendy",
     "Bendy bus subcategory. Annotate each section of the bendy bus individually."),
    ("vehicle.bus.rigid", "Rigid bus subcategory."),
    ("vehicle.truck",
     "Vehicles primarily designed to haul cargo including pick-ups, lorrys, trucks and "
     "semi-tractors. Trailers hauled after a semi-tractor should be labeled as vehicle.trailer"),
    ("vehicle.construction",
     "Vehicles primarily designed for construction. Typically very slow moving or stationary. "
     "Cranes and extremities of construction vehicles are only included in annotations if they "
     "interfere with traffic. Trucks used to haul rocks or building materials are considered "
     "vehicle.truck rather than construction vehicles."),
    ("vehicle.emergency.ambulance", "All types of ambulances."),
    ("vehicle.emergency.police",
     "All types of police vehicles including police bicycles and motorcycles."),
    ("vehicle.trailer", "Any vehicle trailer, both for trucks, cars and bikes."),
    ("movable_object.barrier",
     "Temporary road barrier placed in the scene in order to redirect traffic. Commonly used at "
     "construction sites. This includes concrete barrier, metal barrier and water barrier. "
     "No fences."),
    ("movable_object.trafficcone", "All types of traffic cone."),
    ("movable_object.pushable_pullable",
     "Objects that a pedestrian may push or pull. For example dolleys, wheel barrows, "
     "garbage-bins, or shopping carts."),
    ("movable_object.debris",
     "Movable object that is left on the driveable surface that is too large to be driven over "
     "safely, e.g tree branch, full trash bag etc."),
    ("static_object.bicycle_rack",
     "Area or device intended to park or secure the bicycles in a row. It includes all the bikes "
     "parked in it and any empty slots that are intended for parking bikes."),
    ("flat.driveable_surface",
     "All paved or unpaved surfaces that a car can drive on with no concern of traffic rules."),
    ("vehicle.ego",
     "The vehicle on which the sensors are mounted, that are sometimes visible at the bottom of "
     "the image."),
)

#: The 12 nuImages attributes (name, description): the 8 of nuScenes plus 4 nuImages ones.
ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped",
     "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("vehicle.parked",
     "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
    ("vehicle_light.emergency.flashing", "The emergency lights on the vehicle are flashing."),
    ("vehicle_light.emergency.not_flashing",
     "The emergency lights on the vehicle are not flashing."),
    ("vertical_position.off_ground",
     "The object is not in the ground (e.g. it is flying, falling, jumping or positioned in a "
     "tree or on a vehicle)."),
    ("vertical_position.on_ground", "The object is on the ground plane."),
)

SURFACE_CATEGORY = "flat.driveable_surface"
EGO_CATEGORY = "vehicle.ego"


@dataclass(frozen=True)
class _Style:
    """How one object category looks and how often it occurs."""

    detection_class: Optional[str]  # the converter's class (NAME_MAPPING), None if unmapped
    rgb: tuple[int, int, int]  # base colour; classes the detector must tell apart differ clearly
    shape: str  # silhouette drawer, see _SHAPES
    height: float  # amodal height as a fraction of the image height, for the nearest objects
    aspect: tuple[float, float]  # width / height range
    weight: float  # relative frequency
    attributes: str  # attribute group, see _ATTRIBUTE_GROUPS
    texture: tuple[float, float]  # stripe direction (radians) and period (fraction of obj height)


_STYLES: dict[str, _Style] = {
    "vehicle.car": _Style("car", (210, 30, 30), "car", 0.34, (1.3, 2.1), 30, "vehicle", (1.571, 0.25)),
    "vehicle.truck": _Style("truck", (240, 130, 20), "truck", 0.55, (1.1, 1.8), 7, "vehicle", (0.0, 0.2)),
    "vehicle.trailer": _Style("trailer", (125, 75, 30), "trailer", 0.45, (1.5, 2.6), 3, "vehicle", (1.571, 0.12)),
    "vehicle.bus.rigid": _Style("bus", (240, 215, 20), "bus", 0.55, (1.5, 2.4), 4, "vehicle", (0.0, 0.3)),
    "vehicle.bus.bendy": _Style("bus", (240, 215, 20), "bus", 0.55, (1.8, 2.6), 1, "vehicle", (0.0, 0.3)),
    "vehicle.construction": _Style(
        "construction_vehicle", (250, 110, 200), "construction", 0.55, (1.0, 1.6), 3, "vehicle", (0.785, 0.2)),
    "vehicle.bicycle": _Style("bicycle", (30, 200, 200), "bicycle", 0.32, (1.0, 1.5), 5, "cycle", (0.785, 0.15)),
    "vehicle.motorcycle": _Style(
        "motorcycle", (140, 40, 200), "motorcycle", 0.32, (1.1, 1.6), 5, "cycle", (-0.785, 0.15)),
    "human.pedestrian.adult": _Style(
        "pedestrian", (30, 170, 40), "person", 0.42, (0.32, 0.45), 16, "pedestrian", (0.0, 0.1)),
    "human.pedestrian.child": _Style(
        "pedestrian", (30, 170, 40), "person", 0.32, (0.35, 0.5), 2, "pedestrian", (0.0, 0.1)),
    "human.pedestrian.construction_worker": _Style(
        "pedestrian", (30, 170, 40), "person", 0.42, (0.32, 0.45), 3, "pedestrian", (0.0, 0.1)),
    "human.pedestrian.police_officer": _Style(
        "pedestrian", (30, 170, 40), "person", 0.42, (0.32, 0.45), 1, "pedestrian", (0.0, 0.1)),
    "movable_object.trafficcone": _Style(
        "traffic_cone", (20, 50, 230), "cone", 0.18, (0.5, 0.7), 7, "none", (0.0, 0.3)),
    "movable_object.barrier": _Style(
        "barrier", (235, 235, 235), "barrier", 0.2, (2.0, 4.0), 7, "none", (1.571, 0.5)),
    # Categories the converter does not map to a detection class: painted, never detected.
    "animal": _Style(None, (60, 100, 90), "animal", 0.2, (1.2, 1.8), 1, "animal", (0.0, 0.2)),
    "human.pedestrian.personal_mobility": _Style(
        None, (200, 160, 120), "scooter", 0.45, (0.4, 0.6), 1, "pedestrian", (0.0, 0.1)),
    "human.pedestrian.stroller": _Style(None, (180, 120, 160), "stroller", 0.25, (0.8, 1.1), 1, "none", (0.0, 0.2)),
    "human.pedestrian.wheelchair": _Style(
        None, (80, 80, 130), "wheelchair", 0.35, (0.7, 1.0), 1, "none", (0.0, 0.2)),
    "movable_object.debris": _Style(None, (60, 60, 40), "blob", 0.1, (1.2, 2.5), 1, "none", (0.5, 0.3)),
    "movable_object.pushable_pullable": _Style(
        None, (0, 120, 120), "bin", 0.25, (0.6, 0.9), 1, "none", (1.571, 0.2)),
    "static_object.bicycle_rack": _Style(None, (160, 160, 100), "rack", 0.25, (2.0, 3.5), 1, "none", (0.0, 0.3)),
    "vehicle.emergency.ambulance": _Style(
        None, (200, 255, 230), "van", 0.45, (1.4, 2.0), 1, "emergency", (0.0, 0.25)),
    "vehicle.emergency.police": _Style(None, (30, 30, 90), "car", 0.34, (1.3, 2.1), 1, "emergency", (0.0, 0.25)),
}

#: Object category -> the converter's detection class (``None``: not mapped, no annotation).
CATEGORY_TO_CLASS: dict[str, Optional[str]] = {k: v.detection_class for k, v in _STYLES.items()}
#: Object category -> base RGB colour its visible pixels are painted with.
CATEGORY_RGB: dict[str, tuple[int, int, int]] = {k: v.rgb for k, v in _STYLES.items()}
ROAD_RGB = (85, 85, 90)
EGO_RGB = (45, 45, 50)

# Each group: a list of (probability, attribute names) choices.
_ATTRIBUTE_GROUPS: dict[str, list[tuple[float, tuple[str, ...]]]] = {
    "vehicle": [(0.4, ("vehicle.moving",)), (0.2, ("vehicle.stopped",)), (0.4, ("vehicle.parked",))],
    "emergency": [
        (0.3, ("vehicle.moving", "vehicle_light.emergency.flashing")),
        (0.3, ("vehicle.parked", "vehicle_light.emergency.not_flashing")),
        (0.4, ("vehicle.stopped", "vehicle_light.emergency.not_flashing")),
    ],
    "cycle": [(0.6, ("cycle.with_rider",)), (0.4, ("cycle.without_rider",))],
    "pedestrian": [
        (0.5, ("pedestrian.moving",)), (0.4, ("pedestrian.standing",)),
        (0.1, ("pedestrian.sitting_lying_down",)),
    ],
    "animal": [(0.9, ("vertical_position.on_ground",)), (0.1, ("vertical_position.off_ground",))],
    "none": [(1.0, ())],
}
_MOVING_ATTRIBUTES = {"vehicle.moving", "pedestrian.moving"}

# Nominal camera mounting: yaw of the optical axis (degrees, ego frame, left positive) and
# position on the ego vehicle (metres), close to the real nuImages calibrations.
_CAMERA_MOUNT = {
    "CAM_FRONT": (0.0, (1.70, 0.01, 1.51)),
    "CAM_FRONT_RIGHT": (-55.5, (1.55, -0.49, 1.50)),
    "CAM_BACK_RIGHT": (-110.5, (1.03, -0.48, 1.53)),
    "CAM_BACK": (180.0, (0.03, 0.00, 1.54)),
    "CAM_BACK_LEFT": (110.0, (1.04, 0.48, 1.53)),
    "CAM_FRONT_LEFT": (55.0, (1.53, 0.49, 1.51)),
}
# Probability that the ego vehicle is visible at the bottom edge, per camera.
_EGO_PROBABILITY = {
    "CAM_FRONT": 0.3, "CAM_FRONT_RIGHT": 0.3, "CAM_FRONT_LEFT": 0.3,
    "CAM_BACK": 0.9, "CAM_BACK_RIGHT": 0.6, "CAM_BACK_LEFT": 0.6,
}
_LOCATIONS = (
    ("boston-seaport", -4, ("n008", "n010")),
    ("singapore-onenorth", 8, ("n003", "n015")),
    ("singapore-queenstown", 8, ("n015", "n016")),
    ("singapore-hollandvillage", 8, ("n003", "n016")),
)

# Label-map values: 0 = unlabelled background, then road, ego, and objects from 3 on.
_ROAD, _EGO, _FIRST_OBJECT = 1, 2, 3
_MIN_VISIBLE_FRACTION = 0.3  # an object keeps at least this share of its amodal area visible
_SAMPLES_PER_LOG = 40
_SWEEP_INTERVAL_US = 500_000  # sweeps are 2 Hz


@dataclass
class SyntheticSummary:
    """What :func:`generate_nuimages` wrote for one version."""

    root: Path
    version: str
    num_key_frames: int
    num_sweeps: int
    num_objects: int
    num_null_masks: int  # object_ann rows with ``mask: null``
    num_surfaces: int = 0
    num_null_surface_masks: int = 0
    num_images_written: int = 0
    width: int = 0
    height: int = 0
    objects_per_category: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# RLE encoding


def encode_mask_crop(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> dict:
    """Encode a mask that is zero outside a window, the way nuImages stores masks.

    ``crop``: bool/0-1 array [h, w], the window of the full [height, width] mask whose top-left
    pixel is (x0, y0); the window must lie inside the image. Returns
    ``{"size": [height, width], "counts": <base64 str>}``: the base64 of the COCO compressed RLE
    string that ``pycocotools.mask.encode`` gives for the full mask, which is what
    ``nuimages.utils.utils.mask_decode`` reads back. Only the window is scanned.
    """
    crop = np.asarray(crop, dtype=bool)
    h, w = crop.shape
    if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
        raise ValueError(f"window {w}x{h} at ({x0}, {y0}) leaves the {width}x{height} image")
    # COCO RLE runs over the column-major flattening; pad each column with a zero above and
    # below so that a run's start / end shows as a +1 / -1 step inside its column.
    padded = np.zeros((w, h + 2), dtype=np.int8)
    padded[:, 1:-1] = crop.T
    steps = np.diff(padded, axis=1).ravel()
    flat = np.flatnonzero(steps)  # alternating starts (+1) and ends (-1), in order
    cols, rows = np.divmod(flat, h + 1)
    where = (x0 + cols) * height + y0 + rows
    starts, ends = where[0::2], where[1::2]
    if starts.size:
        # A run that reaches the bottom row continues at the top of the next column.
        joined = ends[:-1] == starts[1:]
        if joined.any():
            starts = starts[np.concatenate(([True], ~joined))]
            ends = ends[np.concatenate((~joined, [True]))]
        counts = np.empty(2 * starts.size + 1, dtype=np.int64)
        counts[0] = starts[0]
        counts[1::2] = ends - starts
        counts[2:-1:2] = starts[1:] - ends[:-1]
        counts[-1] = height * width - ends[-1]
        if counts[-1] == 0:  # pycocotools never ends on an empty run of zeros
            counts = counts[:-1]
    else:
        counts = np.array([height * width], dtype=np.int64)
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
    return {"size": [height, width], "counts": base64.b64encode(rle["counts"]).decode("ascii")}


def encode_mask(mask: np.ndarray) -> dict:
    """Encode a full [H, W] bool/0-1 mask as a nuImages mask dict (base64 COCO compressed RLE)."""
    mask = np.asarray(mask)
    return encode_mask_crop(mask, 0, 0, mask.shape[0], mask.shape[1])


# --------------------------------------------------------------------------------------
# Silhouettes. Each drawer fills a [h, w] uint8 canvas with 1 on the object's full shape.


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x)), int(round(y))


def _poly(c: np.ndarray, pts: list[tuple[float, float]]) -> None:
    cv2.fillPoly(c, [np.array([_pt(x, y) for x, y in pts], dtype=np.int32)], 1)


def _rect(c: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> None:
    cv2.rectangle(c, _pt(x0, y0), _pt(x1, y1), 1, thickness=-1)


def _disc(c: np.ndarray, x: float, y: float, r: float) -> None:
    cv2.circle(c, _pt(x, y), max(1, int(round(r))), 1, thickness=-1)


def _ellipse(c: np.ndarray, x: float, y: float, ax: float, ay: float) -> None:
    cv2.ellipse(c, _pt(x, y), (max(1, int(round(ax))), max(1, int(round(ay)))), 0, 0, 360, 1, -1)


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
    cv2.line(c, _pt(0.5 * w, 0.45 * h), _pt(0.95 * w, 0.04 * h), 1,
             thickness=max(2, int(round(0.07 * h))))
    _rect(c, 0.0, 0.85 * h, w - 1, h - 1)


def _draw_cycle(c, w, h, rng, heavy: bool):
    r = min(0.21 * h, 0.22 * w)
    _wheels(c, w, h, (0.2, 0.8), r)
    thick = max(1, int(round((0.09 if heavy else 0.04) * h)))
    hub_y = h - 1 - r
    for a, b in (((0.2, hub_y), (0.45, 0.45 * h)), ((0.45, 0.45 * h), (0.8, hub_y)),
                 ((0.2, hub_y), (0.8, hub_y))):
        cv2.line(c, _pt(a[0] * w, a[1]), _pt(b[0] * w, b[1]), 1, thickness=thick)
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
    cv2.line(c, _pt(0.8 * w, 0.4 * h), _pt(w - 1, 0.0), 1, thickness=max(1, int(0.06 * h)))
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


_SHAPES: dict[str, Callable[[np.ndarray, int, int, np.random.Generator], None]] = {
    "car": _draw_car, "van": _draw_van, "truck": _draw_truck, "bus": _draw_bus,
    "trailer": _draw_trailer, "construction": _draw_construction, "bicycle": _draw_bicycle,
    "motorcycle": _draw_motorcycle, "person": _draw_person, "scooter": _draw_scooter,
    "stroller": _draw_stroller, "wheelchair": _draw_wheelchair, "cone": _draw_cone,
    "barrier": _draw_barrier, "animal": _draw_animal, "blob": _draw_blob, "bin": _draw_bin,
    "rack": _draw_rack,
}


# --------------------------------------------------------------------------------------
# Scene layout


@dataclass
class _Object:
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
class _Scene:
    width: int
    height: int
    horizon: int
    road: np.ndarray  # int32 [4, 2] polygon
    ego: Optional[tuple[int, int, int, int]]  # ellipse centre x, centre y, half axes
    objects: list[_Object]
    labels: np.ndarray  # int16 [H, W] label map of the key frame
    buildings: list[tuple[int, int, int, int, tuple[int, int, int]]]


def _window(ox: int, oy: int, h: int, w: int, width: int, height: int):
    """Intersection of a canvas placed at (ox, oy) with the image: image and canvas slices."""
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + w, width), min(oy + h, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox))


def _paint(labels: np.ndarray, obj: _Object, value: int, dx: int = 0) -> None:
    """Paint an object's shape into the label map: under the ego vehicle, and if the object is
    ``behind``, also under every object already painted."""
    win = _window(obj.ox + dx, obj.oy, *obj.canvas.shape, labels.shape[1], labels.shape[0])
    if win is None:
        return
    (img_sl, can_sl) = win
    region = labels[img_sl]
    where = obj.canvas[can_sl] & (region != _EGO)
    if obj.behind:
        where &= region < _FIRST_OBJECT
    np.copyto(region, np.int16(value), where=where)


def _sample_object(
    rng: np.random.Generator, names: list[str], probs: np.ndarray, width: int, height: int,
) -> tuple[str, np.ndarray, float]:
    """Choose a category and draw its silhouette; returns (category, canvas, foot depth 0..1)."""
    name = names[int(rng.choice(len(names), p=probs))]
    style = _STYLES[name]
    # Depth factor: 1 = standing on the bottom edge; far (small) objects are more common.
    depth = 0.22 + 0.85 * rng.random() ** 1.3
    h = max(10.0, 0.05 * height, style.height * depth * height)
    w = min(max(6.0, h * rng.uniform(*style.aspect)), 0.7 * width)
    hi, wi = int(round(h)), int(round(w))
    canvas = np.zeros((hi, wi), dtype=np.uint8)
    _SHAPES[style.shape](canvas, wi, hi, rng)
    canvas = canvas.astype(bool)
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
    return name, np.ascontiguousarray(canvas), depth


def _layout(
    rng: np.random.Generator, width: int, height: int, camera: str, n_objects: int,
    names: list[str], probs: np.ndarray,
) -> _Scene:
    """Lay out road, ego vehicle and objects of one key frame and build its label map."""
    horizon = int(round(height * rng.uniform(0.42, 0.5)))
    vx = width * rng.uniform(0.35, 0.65)
    top = horizon + max(2, int(0.02 * height))
    half_top = width * rng.uniform(0.02, 0.06)
    road = np.array([
        _pt(vx - half_top, top), _pt(vx + half_top, top),
        _pt(width * rng.uniform(0.95, 1.4), height - 1), _pt(width * rng.uniform(-0.4, 0.05), height - 1),
    ], dtype=np.int32)
    labels = np.zeros((height, width), dtype=np.int16)
    cv2.fillPoly(labels, [road], _ROAD)

    ego = None
    if rng.random() < _EGO_PROBABILITY[camera]:
        ego = (int(round(width * rng.uniform(0.4, 0.6))), int(round(height * 1.02)),
               int(round(width * rng.uniform(0.45, 0.7))), int(round(height * rng.uniform(0.08, 0.13))))
        cv2.ellipse(labels, ego[:2], ego[2:], 0, 0, 360, _EGO, -1)

    buildings = []
    for _ in range(int(rng.integers(2, 6))):
        bw, bh = width * rng.uniform(0.08, 0.25), height * rng.uniform(0.08, 0.3)
        bx = width * rng.uniform(-0.05, 1.0)
        grey = int(rng.integers(110, 170))
        tint = int(rng.integers(-12, 13))
        buildings.append((int(bx), int(horizon - bh), int(bx + bw), horizon,
                          (grey + tint, grey, grey - tint)))

    objects: list[_Object] = []
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
            win = _window(ox, oy, ch, cw, width, height)
            if win is None:
                continue
            img_sl, can_sl = win
            shape = canvas[can_sl]
            area = int(np.count_nonzero(shape))
            if area < 16:
                continue
            region = labels[img_sl]
            if region.max() <= _ROAD:  # common case: only road and background underneath
                covered = np.zeros(_FIRST_OBJECT + len(objects), dtype=np.int64)
            else:
                covered = np.bincount(region[shape], minlength=_FIRST_OBJECT + len(objects))
            hidden = covered[_EGO] + (covered[_FIRST_OBJECT:].sum() if behind else 0)
            mine = area - int(hidden)
            if mine < max(12, _MIN_VISIBLE_FRACTION * area):
                continue
            covered = covered[_FIRST_OBJECT:]
            hit = np.nonzero(covered)[0] if not behind else ()
            if any(visible[j] - covered[j] < max(12, _MIN_VISIBLE_FRACTION * objects[j].area)
                   for j in hit):
                continue
            rows, cols = shape.any(axis=1), shape.any(axis=0)
            bbox = (img_sl[1].start + int(cols.argmax()), img_sl[0].start + int(rows.argmax()),
                    img_sl[1].start + len(cols) - 1 - int(cols[::-1].argmax()),
                    img_sl[0].start + len(rows) - 1 - int(rows[::-1].argmax()))
            obj = _Object(name, canvas, ox, oy, bbox, area, float(rng.uniform(0.88, 1.12)),
                          behind=behind)
            for j in hit:
                visible[j] -= int(covered[j])
            visible.append(mine)
            _paint(labels, obj, _FIRST_OBJECT + len(objects))
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
    return _Scene(width, height, horizon, road, ego, objects, labels, buildings)


# --------------------------------------------------------------------------------------
# Rendering


def _render(scene: _Scene, rng: np.random.Generator, step: int = 0) -> np.ndarray:
    """Render the key frame (step 0) or the sweep ``step`` frames earlier as a BGR uint8 image.

    Each object's visible pixels get its class colour times a per-instance brightness, plus a
    class stripe texture; boundaries between labels are darkened so touching instances of one
    class stay apart; mild noise on everything.
    """
    height, width, horizon = scene.height, scene.width, scene.horizon
    if step == 0:
        labels = scene.labels
    else:
        labels = np.zeros((height, width), dtype=np.int16)
        cv2.fillPoly(labels, [scene.road], _ROAD)
        if scene.ego is not None:
            cv2.ellipse(labels, scene.ego[:2], scene.ego[2:], 0, 0, 360, _EGO, -1)
        for k, obj in enumerate(scene.objects):
            _paint(labels, obj, _FIRST_OBJECT + k, dx=-int(round(obj.vx * step)))

    # Background: sky gradient above the horizon, buildings, pavement / verge below.
    rows = np.arange(height, dtype=np.float32)[:, None]
    t_sky = np.clip(rows / max(horizon, 1), 0, 1)
    sky = np.array([120, 165, 225], np.float32) * (1 - t_sky) + np.array([205, 220, 235], np.float32) * t_sky
    t_gnd = np.clip((rows - horizon) / max(height - horizon, 1), 0, 1)
    ground = np.array([150, 145, 130], np.float32) * (1 - t_gnd) + np.array([115, 125, 95], np.float32) * t_gnd
    row_rgb = np.where(rows < horizon, sky, ground).astype(np.uint8)
    image = np.ascontiguousarray(np.broadcast_to(row_rgb[:, None, :], (height, width, 3)))
    for x0, y0, x1, y1, rgb in scene.buildings:
        cv2.rectangle(image, (x0, y0), (x1, y1), rgb, thickness=-1)

    palette = np.zeros((_FIRST_OBJECT + len(scene.objects), 3), dtype=np.float32)
    palette[_ROAD] = ROAD_RGB
    palette[_EGO] = EGO_RGB
    for k, obj in enumerate(scene.objects):
        palette[_FIRST_OBJECT + k] = np.array(CATEGORY_RGB[obj.category], np.float32) * obj.brightness
    palette = np.clip(palette, 0, 255).astype(np.uint8)
    labelled = labels > 0
    image[labelled] = palette[labels[labelled]]

    work = image.astype(np.int16)
    for k, obj in enumerate(scene.objects):
        dx = -int(round(obj.vx * step))
        win = _window(obj.ox + dx, obj.oy, *obj.canvas.shape, width, height)
        if win is None:
            continue
        img_sl = win[0]
        mine = labels[img_sl] == _FIRST_OBJECT + k
        if not mine.any():
            continue
        angle, period = _STYLES[obj.category].texture
        yy, xx = np.mgrid[img_sl[0], img_sl[1]]
        phase = (xx - obj.ox - dx) * math.cos(angle) + (yy - obj.oy) * math.sin(angle)
        stripes = 14.0 * np.sin(phase * (2 * np.pi / max(2.0, period * obj.canvas.shape[0])))
        work[img_sl][mine] += stripes[mine].astype(np.int16)[:, None]

    edge = np.zeros((height, width), dtype=bool)
    horiz = labels[:, 1:] != labels[:, :-1]
    vert = labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= horiz
    edge[:, :-1] |= horiz
    edge[1:, :] |= vert
    edge[:-1, :] |= vert
    work[edge] = (work[edge] * 6) // 10
    work += rng.integers(-6, 7, size=work.shape, dtype=np.int16)
    return np.ascontiguousarray(np.clip(work, 0, 255).astype(np.uint8)[:, :, ::-1])


# --------------------------------------------------------------------------------------
# Tables


def _token(namespace: str, kind: str, key: object) -> str:
    """A 32-hex token, stable for (namespace, kind, key)."""
    return hashlib.md5(f"{namespace}/{kind}/{key}".encode()).hexdigest()


def _stream(seed: int, version: str, prefix: str) -> np.random.Generator:
    key = [int(seed) & 0xFFFFFFFF, zlib.crc32(version.encode()), zlib.crc32(prefix.encode())]
    return np.random.default_rng(np.random.SeedSequence(key))


def _quat_yaw(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])


# Camera frame (x right, y down, z forward) to ego frame (x forward, y left, z up).
_CAM_TO_EGO = np.array([0.5, -0.5, 0.5, -0.5])


def _r(values, nd: int) -> list[float]:
    return [round(float(v), nd) for v in values]


def _validate(version, num_samples, width, height, sweeps_per_sample, objects_per_image,
              null_mask_fraction, jpeg_quality) -> tuple[int, int]:
    if not isinstance(version, str) or not version or "/" in version or "\\" in version:
        raise UserError(f"synthetic: version {version!r} must be a folder name like 'v1.0-mini'")
    if int(num_samples) < 0:
        raise UserError(f"synthetic: num_samples must be >= 0, got {num_samples}")
    if int(width) < 32 or int(height) < 32:
        raise UserError(f"synthetic: image size {width}x{height} is too small (min 32x32)")
    if int(sweeps_per_sample) < 0:
        raise UserError(f"synthetic: sweeps_per_sample must be >= 0, got {sweeps_per_sample}")
    try:
        lo, hi = (int(v) for v in objects_per_image)
    except (TypeError, ValueError):
        raise UserError(f"synthetic: objects_per_image must be (min, max), got {objects_per_image!r}")
    if not 0 <= lo <= hi:
        raise UserError(f"synthetic: objects_per_image must satisfy 0 <= min <= max, got {objects_per_image!r}")
    if not 0.0 <= float(null_mask_fraction) <= 1.0:
        raise UserError(f"synthetic: null_mask_fraction must be in [0, 1], got {null_mask_fraction}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise UserError(f"synthetic: jpeg_quality must be in [1, 100], got {jpeg_quality}")
    return lo, hi


def generate_nuimages(root, version="v1.0-mini", num_samples=8, width=1600, height=900,
                      seed=0, sweeps_per_sample=2, objects_per_image=(3, 12),
                      null_mask_fraction=0.05, write_images=True, jpeg_quality=90,
                      token_prefix=None) -> SyntheticSummary:
    """Write a synthetic nuImages version in the official schema under ``root``.

    Writes ``<root>/<version>/{attribute,calibrated_sensor,category,ego_pose,log,object_ann,
    sample,sample_data,sensor,surface_ann}.json`` and, if ``write_images``,
    ``<root>/samples/<CAM>/<logfile>__<CAM>__<timestamp>.jpg`` (one key frame per sample) and
    ``<root>/sweeps/<CAM>/...jpg`` (``sweeps_per_sample`` unannotated frames at 2 Hz before each
    key frame, chained to it by ``prev``/``next``).

    Each key frame gets ``objects_per_image`` = (min, max) objects (inclusive). Objects are
    placed far to near, each keeping at least 30% of its shape visible; one that finds no place
    in front is replaced by an object standing behind the others (in very crowded small images
    a few may still be missing). Each key frame also gets a
    ``flat.driveable_surface`` surface and, mostly on back cameras, a ``vehicle.ego`` surface.
    A ``null_mask_fraction`` share of object (and surface) masks is written as ``null``.
    Output is byte-identical for the same arguments. Tokens derive from
    (``token_prefix`` or a fixed namespace, version, seed), so versions written into one root
    have distinct tokens; category, attribute and sensor tokens are shared by all versions,
    as in the real release. Returns a :class:`SyntheticSummary`.
    """
    lo, hi = _validate(version, num_samples, width, height, sweeps_per_sample, objects_per_image,
                       null_mask_fraction, jpeg_quality)
    root = Path(root)
    num_samples, width, height = int(num_samples), int(width), int(height)
    sweeps_per_sample = int(sweeps_per_sample)
    prefix = "nuimcli-synthetic" if token_prefix is None else str(token_prefix)
    namespace = f"{prefix}/{version}/{int(seed)}"
    rng = _stream(int(seed), version, prefix)
    # Images draw from their own stream so that tables do not depend on write_images.
    image_rng = _stream(int(seed) + 1_000_003, version, prefix)

    shared = "nuimcli-synthetic"
    category = [{"token": _token(shared, "category", n), "name": n, "description": d}
                for n, d in CATEGORIES]
    cat_token = {c["name"]: c["token"] for c in category}
    attribute = [{"token": _token(shared, "attribute", n), "name": n, "description": d}
                 for n, d in ATTRIBUTES]
    attr_token = {a["name"]: a["token"] for a in attribute}
    sensor = [{"token": _token(shared, "sensor", c), "channel": c, "modality": "camera"}
              for c in CAMERAS]
    sensor_token = {s["channel"]: s["token"] for s in sensor}

    names = list(_STYLES)
    probs = np.array([_STYLES[n].weight for n in names], dtype=np.float64)
    probs /= probs.sum()

    # Logs: contiguous blocks of samples, each with its own calibration.
    num_logs = max(1, math.ceil(num_samples / _SAMPLES_PER_LOG)) if num_samples else 0
    log, calibrated_sensor = [], []
    log_info = []
    for li in range(num_logs):
        location, tz, vehicles = _LOCATIONS[int(rng.integers(len(_LOCATIONS)))]
        vehicle = vehicles[int(rng.integers(len(vehicles)))]
        local = dt.datetime(2018, 5, 1, 7) + dt.timedelta(
            days=int(rng.integers(0, 180)), seconds=int(rng.integers(0, 11 * 3600)))
        logfile = f"{vehicle}-{local:%Y-%m-%d-%H-%M-%S}{'+' if tz >= 0 else '-'}{abs(tz):02d}00"
        start_us = int((local - dt.timedelta(hours=tz)).replace(tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
        token = _token(namespace, "log", li)
        log.append({"token": token, "logfile": logfile, "vehicle": vehicle,
                    "date_captured": f"{local:%Y-%m-%d}", "location": location})
        cs_tokens = {}
        for cam in CAMERAS:
            yaw_deg, pos = _CAMERA_MOUNT[cam]
            yaw = math.radians(yaw_deg + rng.normal(0, 0.5))
            rot = _quat_mul(_quat_yaw(yaw), _CAM_TO_EGO)
            f = 1260.0 * width / 1600 * rng.uniform(0.99, 1.03)
            cx = width / 2 + rng.normal(0, 8) * width / 1600
            cy = height / 2 + rng.normal(0, 6) * height / 900
            dist = [rng.normal(-0.3, 0.04), rng.normal(0.1, 0.06), rng.normal(0, 4e-4),
                    rng.normal(0, 4e-4), rng.normal(0, 0.02)]
            if cam == "CAM_BACK":  # the fish-eye back camera has a 6th parameter
                dist.append(rng.normal(0, 5e-4))
            cs_tokens[cam] = _token(namespace, "calibrated_sensor", f"{li}/{cam}")
            calibrated_sensor.append({
                "token": cs_tokens[cam], "sensor_token": sensor_token[cam],
                "translation": _r(np.array(pos) + rng.normal(0, 0.01, 3), 6),
                "rotation": _r(rot, 9),
                "camera_intrinsic": [_r([f, 0.0, cx], 4), _r([0.0, f, cy], 4), [0.0, 0.0, 1.0]],
                "camera_distortion": _r(dist, 6),
            })
        origin = rng.uniform(300, 2000, 2)
        heading = rng.uniform(-math.pi, math.pi)
        log_info.append((token, logfile, start_us, cs_tokens, origin, heading))

    sample, sample_data, ego_pose, object_ann, surface_ann = [], [], [], [], []
    summary = SyntheticSummary(root=root, version=version, num_key_frames=num_samples,
                               num_sweeps=num_samples * sweeps_per_sample, num_objects=0,
                               num_null_masks=0, width=width, height=height)
    clock = {}
    for si in range(num_samples):
        li = si * num_logs // num_samples
        log_token, logfile, start_us, cs_tokens, origin, heading = log_info[li]
        camera = CAMERAS[int(rng.integers(len(CAMERAS)))]
        t = clock.get(li, start_us) + int(rng.integers(8_000_000, 40_000_000))
        key_ts = t + (sweeps_per_sample + 1) * _SWEEP_INTERVAL_US
        clock[li] = key_ts
        speed = float(rng.uniform(0, 12)) if rng.random() < 0.7 else 0.0
        yaw_rate = float(rng.normal(0, 0.03))
        sample_token = _token(namespace, "sample", si)
        chain = []
        for k in range(sweeps_per_sample, -1, -1):  # oldest sweep first, key frame last
            ts = key_ts - k * _SWEEP_INTERVAL_US + (int(rng.integers(-4000, 4001)) if k else 0)
            chain.append((k, ts, _token(namespace, "sample_data", f"{si}/{k}")))
        for pos, (k, ts, sd_token) in enumerate(chain):
            seconds = (ts - start_us) / 1e6
            yaw = heading + yaw_rate * seconds
            xy = origin + speed * seconds * np.array([math.cos(heading), math.sin(heading)])
            ep_token = _token(namespace, "ego_pose", f"{si}/{k}")
            ego_pose.append({
                "token": ep_token, "translation": _r([xy[0], xy[1], 0.0], 6),
                "rotation": _r(_quat_yaw(yaw), 9), "timestamp": ts,
                "rotation_rate": _r([rng.normal(0, 0.005), rng.normal(0, 0.005), yaw_rate], 6),
                "acceleration": _r([rng.normal(0, 0.3), rng.normal(0, 0.3), rng.normal(9.81, 0.05)], 6),
                "speed": round(speed + float(rng.normal(0, 0.05)) if speed else 0.0, 6),
            })
            folder = "samples" if k == 0 else "sweeps"
            sample_data.append({
                "token": sd_token, "sample_token": sample_token, "ego_pose_token": ep_token,
                "calibrated_sensor_token": cs_tokens[camera],
                "filename": f"{folder}/{camera}/{logfile}__{camera}__{ts}.jpg",
                "fileformat": "jpg", "width": width, "height": height, "timestamp": ts,
                "is_key_frame": k == 0,
                "next": chain[pos + 1][2] if pos + 1 < len(chain) else "",
                "prev": chain[pos - 1][2] if pos > 0 else "",
            })
        key_sd = chain[-1][2]
        sample.append({"token": sample_token, "timestamp": key_ts, "log_token": log_token,
                       "key_camera_token": key_sd})

        n_objects = int(rng.integers(lo, hi + 1))
        scene = _layout(rng, width, height, camera, n_objects, names, probs)
        for oi, obj in enumerate(scene.objects):
            choices = _ATTRIBUTE_GROUPS[_STYLES[obj.category].attributes]
            pick = int(rng.choice(len(choices), p=[p for p, _ in choices]))
            obj.attributes = choices[pick][1]
            if _MOVING_ATTRIBUTES & set(obj.attributes):
                obj.vx = float(rng.uniform(-0.015, 0.015) * width)
            obj.null_mask = bool(rng.random() < null_mask_fraction)
            mask = None
            if not obj.null_mask:
                x0, y0, x1, y1 = obj.bbox
                crop = scene.labels[y0:y1 + 1, x0:x1 + 1] == _FIRST_OBJECT + oi
                mask = encode_mask_crop(crop, x0, y0, height, width)
            object_ann.append({
                "token": _token(namespace, "object_ann", f"{si}/{oi}"),
                "sample_data_token": key_sd,
                "category_token": cat_token[obj.category],
                "attribute_tokens": [attr_token[a] for a in obj.attributes],
                "bbox": list(obj.bbox),
                "mask": mask,
            })
            summary.num_objects += 1
            summary.num_null_masks += obj.null_mask
            summary.objects_per_category[obj.category] = summary.objects_per_category.get(obj.category, 0) + 1

        surfaces = [(SURFACE_CATEGORY, _ROAD, int(scene.road[:, 1].min()), height)]
        if scene.ego is not None:
            surfaces.append((EGO_CATEGORY, _EGO, max(0, scene.ego[1] - scene.ego[3]), height))
        for ki, (name, value, y0, y1) in enumerate(surfaces):
            null = bool(rng.random() < null_mask_fraction)
            surface_ann.append({
                "token": _token(namespace, "surface_ann", f"{si}/{ki}"),
                "sample_data_token": key_sd,
                "category_token": cat_token[name],
                "mask": None if null else encode_mask_crop(scene.labels[y0:y1] == value, 0, y0, height, width),
            })
            summary.num_surfaces += 1
            summary.num_null_surface_masks += null

        if write_images:
            params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
            for pos, (k, ts, _sd) in enumerate(chain):
                image = _render(scene, image_rng, step=k)
                ok, buf = cv2.imencode(".jpg", image, params)
                if not ok:  # pragma: no cover - OpenCV failure
                    raise RuntimeError("OpenCV could not encode a JPEG")
                atomic_write_bytes(root / sample_data[-len(chain) + pos]["filename"], buf.tobytes())
                summary.num_images_written += 1

    tables = {
        "attribute": attribute, "calibrated_sensor": calibrated_sensor, "category": category,
        "ego_pose": ego_pose, "log": log, "object_ann": object_ann, "sample": sample,
        "sample_data": sample_data, "sensor": sensor, "surface_ann": surface_ann,
    }
    for name, rows in tables.items():
        atomic_write_json(root / version / f"{name}.json", rows)
    return summary


def write_default_demo_set(root, seed=0) -> list[SyntheticSummary]:
    """Write the small demo dataset: v1.0-train (24 samples) and v1.0-val (8) at 384x216.

    3-8 objects per key frame, images included; used by ``nuim demo`` and tests.
    """
    return [
        generate_nuimages(root, version=version, num_samples=n, width=384, height=216, seed=seed,
                          sweeps_per_sample=1, objects_per_image=(3, 8), null_mask_fraction=0.05,
                          write_images=True)
        for version, n in (("v1.0-train", 24), ("v1.0-val", 8))
    ]
