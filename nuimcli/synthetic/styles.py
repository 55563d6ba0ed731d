"""How each object category looks and behaves in a synthetic scene: colour, silhouette, size,
frequency, texture, attributes; and which detection class the converter maps it to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Style:
    """How one object category looks and how often it occurs."""

    detection_class: Optional[str]  # the converter's class (NAME_MAPPING), None if unmapped
    rgb: tuple[int, int, int]  # base colour; classes the detector must tell apart differ clearly
    shape: str  # silhouette drawer, see SHAPES
    height: float  # amodal height as a fraction of the image height, for the nearest objects
    aspect: tuple[float, float]  # width / height range
    weight: float  # relative frequency
    attributes: str  # attribute group, see ATTRIBUTE_GROUPS
    texture: tuple[float, float]  # stripe direction (radians) and period (fraction of obj height)


STYLES: dict[str, Style] = {
    "vehicle.car": Style("car", (210, 30, 30), "car", 0.34, (1.3, 2.1), 30, "vehicle", (1.571, 0.25)),
    "vehicle.truck": Style("truck", (240, 130, 20), "truck", 0.55, (1.1, 1.8), 7, "vehicle", (0.0, 0.2)),
    "vehicle.trailer": Style("trailer", (125, 75, 30), "trailer", 0.45, (1.5, 2.6), 3, "vehicle", (1.571, 0.12)),
    "vehicle.bus.rigid": Style("bus", (240, 215, 20), "bus", 0.55, (1.5, 2.4), 4, "vehicle", (0.0, 0.3)),
    "vehicle.bus.bendy": Style("bus", (240, 215, 20), "bus", 0.55, (1.8, 2.6), 1, "vehicle", (0.0, 0.3)),
    "vehicle.construction": Style(
        "construction_vehicle", (250, 110, 200), "construction", 0.55, (1.0, 1.6), 3, "vehicle", (0.785, 0.2)),
    "vehicle.bicycle": Style("bicycle", (30, 200, 200), "bicycle", 0.32, (1.0, 1.5), 5, "cycle", (0.785, 0.15)),
    "vehicle.motorcycle": Style(
        "motorcycle", (140, 40, 200), "motorcycle", 0.32, (1.1, 1.6), 5, "cycle", (-0.785, 0.15)),
    "human.pedestrian.adult": Style(
        "pedestrian", (30, 170, 40), "person", 0.42, (0.32, 0.45), 16, "pedestrian", (0.0, 0.1)),
    "human.pedestrian.child": Style(
        "pedestrian", (30, 170, 40), "person", 0.32, (0.35, 0.5), 2, "pedestrian", (0.0, 0.1)),
    "human.pedestrian.construction_worker": Style(
        "pedestrian", (30, 170, 40), "person", 0.42, (0.32, 0.45), 3, "pedestrian", (0.0, 0.1)),
    "human.pedestrian.police_officer": Style(
        "pedestrian", (30, 170, 40), "person", 0.42, (0.32, 0.45), 1, "pedestrian", (0.0, 0.1)),
    "movable_object.trafficcone": Style(
        "traffic_cone", (20, 50, 230), "cone", 0.18, (0.5, 0.7), 7, "none", (0.0, 0.3)),
    "movable_object.barrier": Style(
        "barrier", (235, 235, 235), "barrier", 0.2, (2.0, 4.0), 7, "none", (1.571, 0.5)),
    # Categories the converter does not map to a detection class: painted, never detected.
    "animal": Style(None, (60, 100, 90), "animal", 0.2, (1.2, 1.8), 1, "animal", (0.0, 0.2)),
    "human.pedestrian.personal_mobility": Style(
        None, (200, 160, 120), "scooter", 0.45, (0.4, 0.6), 1, "pedestrian", (0.0, 0.1)),
    "human.pedestrian.stroller": Style(None, (180, 120, 160), "stroller", 0.25, (0.8, 1.1), 1, "none", (0.0, 0.2)),
    "human.pedestrian.wheelchair": Style(
        None, (80, 80, 130), "wheelchair", 0.35, (0.7, 1.0), 1, "none", (0.0, 0.2)),
    "movable_object.debris": Style(None, (60, 60, 40), "blob", 0.1, (1.2, 2.5), 1, "none", (0.5, 0.3)),
    "movable_object.pushable_pullable": Style(
        None, (0, 120, 120), "bin", 0.25, (0.6, 0.9), 1, "none", (1.571, 0.2)),
    "static_object.bicycle_rack": Style(None, (160, 160, 100), "rack", 0.25, (2.0, 3.5), 1, "none", (0.0, 0.3)),
    "vehicle.emergency.ambulance": Style(
        None, (200, 255, 230), "van", 0.45, (1.4, 2.0), 1, "emergency", (0.0, 0.25)),
    "vehicle.emergency.police": Style(None, (30, 30, 90), "car", 0.34, (1.3, 2.1), 1, "emergency", (0.0, 0.25)),
}

#: Object category -> the converter's detection class (``None``: not mapped, no annotation).
CATEGORY_TO_CLASS: dict[str, Optional[str]] = {k: v.detection_class for k, v in STYLES.items()}
#: Object category -> base RGB colour its visible pixels are painted with.
CATEGORY_RGB: dict[str, tuple[int, int, int]] = {k: v.rgb for k, v in STYLES.items()}
ROAD_RGB = (85, 85, 90)
EGO_RGB = (45, 45, 50)

# Each group: a list of (probability, attribute names) choices.
ATTRIBUTE_GROUPS: dict[str, list[tuple[float, tuple[str, ...]]]] = {
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
MOVING_ATTRIBUTES = {"vehicle.moving", "pedestrian.moving"}
