"""The recording rig: logs (vehicle, location, date) and each log's six calibrated cameras."""

from __future__ import annotations

import datetime as dt
import math
from typing import NamedTuple

import numpy as np

from nuimcli.synthetic.schema import CAMERAS
from nuimcli.synthetic.tables import make_token, rounded

#: Key frames per log: consecutive samples share a log and its calibration.
SAMPLES_PER_LOG = 40

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
_LOCATIONS = (
    ("boston-seaport", -4, ("n008", "n010")),
    ("singapore-onenorth", 8, ("n003", "n015")),
    ("singapore-queenstown", 8, ("n015", "n016")),
    ("singapore-hollandvillage", 8, ("n003", "n016")),
)
# Camera frame (x right, y down, z forward) to ego frame (x forward, y left, z up).
_CAM_TO_EGO = np.array([0.5, -0.5, 0.5, -0.5])


class Log(NamedTuple):
    """What the samples of one log need: its token and file name, its start (UTC microseconds),
    its cameras' calibrated_sensor tokens, and where and which way the ego vehicle starts."""

    token: str
    logfile: str
    start_us: int
    cs_tokens: dict[str, str]
    origin: np.ndarray
    heading: float


def quat_yaw(yaw: float) -> np.ndarray:
    """The quaternion (w, x, y, z) of a rotation by ``yaw`` radians about z."""
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


def make_logs(rng: np.random.Generator, namespace: str, num_samples: int, width: int, height: int,
              sensor_token: dict[str, str]) -> tuple[list[dict], list[dict], list[Log]]:
    """The ``log`` and ``calibrated_sensor`` rows for ``num_samples`` key frames, and each log's
    :class:`Log`. Logs are contiguous blocks of :data:`SAMPLES_PER_LOG` samples, each with its
    own calibration (intrinsics scaled to the image size)."""
    num_logs = max(1, math.ceil(num_samples / SAMPLES_PER_LOG)) if num_samples else 0
    log, calibrated_sensor = [], []
    log_info = []
    for li in range(num_logs):
        location, tz, vehicles = _LOCATIONS[int(rng.integers(len(_LOCATIONS)))]
        vehicle = vehicles[int(rng.integers(len(vehicles)))]
        local = dt.datetime(2018, 5, 1, 7) + dt.timedelta(
            days=int(rng.integers(0, 180)), seconds=int(rng.integers(0, 11 * 3600)))
        logfile = f"{vehicle}-{local:%Y-%m-%d-%H-%M-%S}{'+' if tz >= 0 else '-'}{abs(tz):02d}00"
        start_us = int((local - dt.timedelta(hours=tz)).replace(tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
        token = make_token(namespace, "log", li)
        log.append({"token": token, "logfile": logfile, "vehicle": vehicle,
                    "date_captured": f"{local:%Y-%m-%d}", "location": location})
        cs_tokens = {}
        for cam in CAMERAS:
            yaw_deg, pos = _CAMERA_MOUNT[cam]
            yaw = math.radians(yaw_deg + rng.normal(0, 0.5))
            rot = _quat_mul(quat_yaw(yaw), _CAM_TO_EGO)
            f = 1260.0 * width / 1600 * rng.uniform(0.99, 1.03)
            cx = width / 2 + rng.normal(0, 8) * width / 1600
            cy = height / 2 + rng.normal(0, 6) * height / 900
            dist = [rng.normal(-0.3, 0.04), rng.normal(0.1, 0.06), rng.normal(0, 4e-4),
                    rng.normal(0, 4e-4), rng.normal(0, 0.02)]
            if cam == "CAM_BACK":  # the fish-eye back camera has a 6th parameter
                dist.append(rng.normal(0, 5e-4))
            cs_tokens[cam] = make_token(namespace, "calibrated_sensor", f"{li}/{cam}")
            calibrated_sensor.append({
                "token": cs_tokens[cam], "sensor_token": sensor_token[cam],
                "translation": rounded(np.array(pos) + rng.normal(0, 0.01, 3), 6),
                "rotation": rounded(rot, 9),
                "camera_intrinsic": [rounded([f, 0.0, cx], 4), rounded([0.0, f, cy], 4), [0.0, 0.0, 1.0]],
                "camera_distortion": rounded(dist, 6),
            })
        origin = rng.uniform(300, 2000, 2)
        heading = rng.uniform(-math.pi, math.pi)
        log_info.append(Log(token, logfile, start_us, cs_tokens, origin, heading))
    return log, calibrated_sensor, log_info
