"""The nuImages vocabulary the generator writes: cameras, categories and attributes, in the
order and with the descriptions of the real release's ``sensor.json``, ``category.json`` and
``attribute.json``."""

from __future__ import annotations

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
