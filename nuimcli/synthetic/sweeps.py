"""One sample: its camera, the key frame and the sweeps before and after it (2 Hz, chained by
``prev``/``next``), their ego poses, and the ``sample`` row."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nuimcli.synthetic.rig import Log, quat_yaw
from nuimcli.synthetic.schema import CAMERAS
from nuimcli.synthetic.tables import make_token, rounded

SWEEP_INTERVAL_US = 500_000  # sweeps are 2 Hz


@dataclass
class SampleFrames:
    """The rows of one sample. ``sample_data`` and ``steps`` run in time order (oldest sweep
    first); ``steps[i]`` is how many sweep intervals frame ``i`` lies before the key frame
    (0 the key frame, negative for the sweeps after it)."""

    camera: str
    sample: dict
    sample_data: list[dict]
    ego_pose: list[dict]
    steps: list[int]

    @property
    def key_token(self) -> str:
        """The key frame's sample_data token."""
        return self.sample_data[self.steps.index(0)]["token"]


def record_sample(rng: np.random.Generator, namespace: str, index: int, log: Log, after_us: int,
                  sweeps_per_sample: int, width: int, height: int, sweeps_after: int = 0) -> SampleFrames:
    """Sample ``index`` of ``log``: a random camera, a key frame 8-40 s (plus its sweeps) after
    ``after_us``, the ego moving at a constant speed and yaw rate since the log started;
    ``sweeps_per_sample`` sweeps before the key frame and ``sweeps_after`` after it."""
    camera = CAMERAS[int(rng.integers(len(CAMERAS)))]
    t = after_us + int(rng.integers(8_000_000, 40_000_000))
    key_ts = t + (sweeps_per_sample + 1) * SWEEP_INTERVAL_US
    speed = float(rng.uniform(0, 12)) if rng.random() < 0.7 else 0.0
    yaw_rate = float(rng.normal(0, 0.03))
    sample_token = make_token(namespace, "sample", index)
    chain = []
    for k in range(sweeps_per_sample, -1, -1):  # oldest sweep first, key frame last
        ts = key_ts - k * SWEEP_INTERVAL_US + (int(rng.integers(-4000, 4001)) if k else 0)
        chain.append((k, ts, make_token(namespace, "sample_data", f"{index}/{k}"), rng))
    # The sweeps after the key frame draw from their own stream, so that a set written before
    # they existed (sweeps_after=0) comes out byte-identical: converter goldens depend on it.
    after_rng = np.random.default_rng([index, 0x5AFE, sweeps_after])
    for k in range(1, sweeps_after + 1):
        ts = key_ts + k * SWEEP_INTERVAL_US + int(after_rng.integers(-4000, 4001))
        chain.append((-k, ts, make_token(namespace, "sample_data", f"{index}/+{k}"), after_rng))
    sample_data, ego_pose = [], []
    for pos, (k, ts, sd_token, frame_rng) in enumerate(chain):
        seconds = (ts - log.start_us) / 1e6
        yaw = log.heading + yaw_rate * seconds
        xy = log.origin + speed * seconds * np.array([math.cos(log.heading), math.sin(log.heading)])
        ep_token = make_token(namespace, "ego_pose", f"{index}/{k}" if k >= 0 else f"{index}/+{-k}")
        ego_pose.append({
            "token": ep_token, "translation": rounded([xy[0], xy[1], 0.0], 6),
            "rotation": rounded(quat_yaw(yaw), 9), "timestamp": ts,
            "rotation_rate": rounded([frame_rng.normal(0, 0.005), frame_rng.normal(0, 0.005), yaw_rate], 6),
            "acceleration": rounded([frame_rng.normal(0, 0.3), frame_rng.normal(0, 0.3),
                                     frame_rng.normal(9.81, 0.05)], 6),
            "speed": round(speed + float(frame_rng.normal(0, 0.05)) if speed else 0.0, 6),
        })
        folder = "samples" if k == 0 else "sweeps"
        sample_data.append({
            "token": sd_token, "sample_token": sample_token, "ego_pose_token": ep_token,
            "calibrated_sensor_token": log.cs_tokens[camera],
            "filename": f"{folder}/{camera}/{log.logfile}__{camera}__{ts}.jpg",
            "fileformat": "jpg", "width": width, "height": height, "timestamp": ts,
            "is_key_frame": k == 0,
            "next": chain[pos + 1][2] if pos + 1 < len(chain) else "",
            "prev": chain[pos - 1][2] if pos > 0 else "",
        })
    sample = {"token": sample_token, "timestamp": key_ts, "log_token": log.token,
              "key_camera_token": chain[sweeps_per_sample][2]}
    return SampleFrames(camera, sample, sample_data, ego_pose, [k for k, _, _, _ in chain])
