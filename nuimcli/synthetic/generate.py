"""The generator's entry points: :func:`generate_nuimages` (one version) and
:func:`write_default_demo_set` (the demo's train and val versions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from nuimcli.errors import UserError
from nuimcli.synthetic.annotations import object_rows, surface_rows
from nuimcli.synthetic.layout import Scene, layout_scene
from nuimcli.synthetic.render import render_frame
from nuimcli.synthetic.rig import make_logs
from nuimcli.synthetic.styles import STYLES
from nuimcli.synthetic.sweeps import SampleFrames, record_sample
from nuimcli.synthetic.tables import rng_stream, vocabulary_tables, write_tables
from nuimcli.utils.io import atomic_write_bytes

_DEFAULT_PREFIX = "nuimcli-synthetic"


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


def _write_images(root: Path, scene: Scene, frames: SampleFrames, image_rng: np.random.Generator,
                  jpeg_quality: int) -> int:
    """Render and write the JPEGs of one sample (sweeps and key frame); returns how many."""
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    for row, k in zip(frames.sample_data, frames.steps):
        image = render_frame(scene, image_rng, step=k)
        ok, buf = cv2.imencode(".jpg", image, params)
        if not ok:  # pragma: no cover - OpenCV failure
            raise RuntimeError("OpenCV could not encode a JPEG")
        atomic_write_bytes(root / row["filename"], buf.tobytes())
    return len(frames.sample_data)


def generate_nuimages(root, version="v1.0-mini", num_samples=8, width=1600, height=900,
                      seed=0, sweeps_per_sample=2, objects_per_image=(3, 12),
                      null_mask_fraction=0.05, write_images=True, jpeg_quality=90,
                      token_prefix=None, sweeps_after_sample=0) -> SyntheticSummary:
    """Write a synthetic nuImages version in the official schema under ``root``.

    Writes ``<root>/<version>/{attribute,calibrated_sensor,category,ego_pose,log,object_ann,
    sample,sample_data,sensor,surface_ann}.json`` and, if ``write_images``,
    ``<root>/samples/<CAM>/<logfile>__<CAM>__<timestamp>.jpg`` (one key frame per sample) and
    ``<root>/sweeps/<CAM>/...jpg`` (``sweeps_per_sample`` unannotated frames at 2 Hz before each
    key frame, chained to it by ``prev``/``next``; ``sweeps_after_sample`` more after it, as in the
    real release's 6 + 6 — default 0 so that existing sets stay byte-identical).

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
    sweeps_after_sample = int(sweeps_after_sample)
    if sweeps_after_sample < 0:
        raise UserError(f"synthetic: sweeps_after_sample must be >= 0, got {sweeps_after_sample}")
    prefix = _DEFAULT_PREFIX if token_prefix is None else str(token_prefix)
    namespace = f"{prefix}/{version}/{int(seed)}"
    rng = rng_stream(int(seed), version, prefix)
    # Images draw from their own stream so that tables do not depend on write_images.
    image_rng = rng_stream(int(seed) + 1_000_003, version, prefix)

    category, attribute, sensor = vocabulary_tables()
    cat_token = {c["name"]: c["token"] for c in category}
    attr_token = {a["name"]: a["token"] for a in attribute}
    sensor_token = {s["channel"]: s["token"] for s in sensor}

    names = list(STYLES)
    probs = np.array([STYLES[n].weight for n in names], dtype=np.float64)
    probs /= probs.sum()

    log, calibrated_sensor, logs = make_logs(rng, namespace, num_samples, width, height, sensor_token)

    sample, sample_data, ego_pose, object_ann, surface_ann = [], [], [], [], []
    summary = SyntheticSummary(root=root, version=version, num_key_frames=num_samples,
                               num_sweeps=num_samples * (sweeps_per_sample + sweeps_after_sample), num_objects=0,
                               num_null_masks=0, width=width, height=height)
    clock: dict[int, int] = {}  # log index -> timestamp of its last key frame
    for si in range(num_samples):
        li = si * len(logs) // num_samples
        frames = record_sample(rng, namespace, si, logs[li], clock.get(li, logs[li].start_us),
                               sweeps_per_sample, width, height, sweeps_after_sample)
        clock[li] = frames.sample["timestamp"]
        ego_pose += frames.ego_pose
        sample_data += frames.sample_data
        sample.append(frames.sample)

        n_objects = int(rng.integers(lo, hi + 1))
        scene = layout_scene(rng, width, height, frames.camera, n_objects, names, probs)
        objects = object_rows(rng, scene, namespace, si, frames.key_token, cat_token, attr_token,
                              null_mask_fraction)
        object_ann += objects
        summary.num_objects += len(objects)
        summary.num_null_masks += sum(row["mask"] is None for row in objects)
        for obj in scene.objects:
            summary.objects_per_category[obj.category] = summary.objects_per_category.get(obj.category, 0) + 1
        surfaces = surface_rows(rng, scene, namespace, si, frames.key_token, cat_token, null_mask_fraction)
        surface_ann += surfaces
        summary.num_surfaces += len(surfaces)
        summary.num_null_surface_masks += sum(row["mask"] is None for row in surfaces)

        if write_images:
            summary.num_images_written += _write_images(root, scene, frames, image_rng, jpeg_quality)

    write_tables(root, version, {
        "attribute": attribute, "calibrated_sensor": calibrated_sensor, "category": category,
        "ego_pose": ego_pose, "log": log, "object_ann": object_ann, "sample": sample,
        "sample_data": sample_data, "sensor": sensor, "surface_ann": surface_ann,
    })
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
