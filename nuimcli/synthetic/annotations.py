"""Annotation rows of a laid-out key frame: ``object_ann`` (attributes, amodal box, visible
mask) and ``surface_ann`` (the driveable surface and the ego vehicle)."""

from __future__ import annotations

import numpy as np

from nuimcli.synthetic.layout import EGO, FIRST_OBJECT, ROAD, Scene
from nuimcli.synthetic.rle import encode_mask_crop
from nuimcli.synthetic.schema import EGO_CATEGORY, SURFACE_CATEGORY
from nuimcli.synthetic.styles import ATTRIBUTE_GROUPS, MOVING_ATTRIBUTES, STYLES
from nuimcli.synthetic.tables import make_token


def object_rows(rng: np.random.Generator, scene: Scene, namespace: str, index: int, key_token: str,
                cat_token: dict[str, str], attr_token: dict[str, str], null_mask_fraction: float) -> list[dict]:
    """One ``object_ann`` row per object of ``scene`` (sample ``index``, key frame ``key_token``).

    Draws each object's attributes (a moving one also gets a horizontal speed, ``vx``, for its
    sweep images) and whether its mask is written as ``null``; sets both on the scene's objects.
    """
    height, width = scene.height, scene.width
    rows = []
    for oi, obj in enumerate(scene.objects):
        choices = ATTRIBUTE_GROUPS[STYLES[obj.category].attributes]
        pick = int(rng.choice(len(choices), p=[p for p, _ in choices]))
        obj.attributes = choices[pick][1]
        if MOVING_ATTRIBUTES & set(obj.attributes):
            obj.vx = float(rng.uniform(-0.015, 0.015) * width)
        obj.null_mask = bool(rng.random() < null_mask_fraction)
        mask = None
        if not obj.null_mask:
            x0, y0, x1, y1 = obj.bbox
            crop = scene.labels[y0:y1 + 1, x0:x1 + 1] == FIRST_OBJECT + oi
            mask = encode_mask_crop(crop, x0, y0, height, width)
        rows.append({
            "token": make_token(namespace, "object_ann", f"{index}/{oi}"),
            "sample_data_token": key_token,
            "category_token": cat_token[obj.category],
            "attribute_tokens": [attr_token[a] for a in obj.attributes],
            "bbox": list(obj.bbox),
            "mask": mask,
        })
    return rows


def surface_rows(rng: np.random.Generator, scene: Scene, namespace: str, index: int, key_token: str,
                 cat_token: dict[str, str], null_mask_fraction: float) -> list[dict]:
    """The ``surface_ann`` rows of ``scene``: the road and, when visible, the ego vehicle."""
    height, width = scene.height, scene.width
    surfaces = [(SURFACE_CATEGORY, ROAD, int(scene.road[:, 1].min()), height)]
    if scene.ego is not None:
        surfaces.append((EGO_CATEGORY, EGO, max(0, scene.ego[1] - scene.ego[3]), height))
    rows = []
    for ki, (name, value, y0, y1) in enumerate(surfaces):
        null = bool(rng.random() < null_mask_fraction)
        rows.append({
            "token": make_token(namespace, "surface_ann", f"{index}/{ki}"),
            "sample_data_token": key_token,
            "category_token": cat_token[name],
            "mask": None if null else encode_mask_crop(scene.labels[y0:y1] == value, 0, y0, height, width),
        })
    return rows
