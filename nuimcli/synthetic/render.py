"""Rendering a laid-out scene as a BGR image: key frame or an earlier sweep."""

from __future__ import annotations

import math

import cv2
import numpy as np

from nuimcli.synthetic.layout import EGO, FIRST_OBJECT, ROAD, Scene, paint, window
from nuimcli.synthetic.styles import CATEGORY_RGB, EGO_RGB, ROAD_RGB, STYLES


def render_frame(scene: Scene, rng: np.random.Generator, step: int = 0) -> np.ndarray:
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
        cv2.fillPoly(labels, [scene.road], ROAD)
        if scene.ego is not None:
            cv2.ellipse(labels, scene.ego[:2], scene.ego[2:], 0, 0, 360, EGO, -1)
        for k, obj in enumerate(scene.objects):
            paint(labels, obj, FIRST_OBJECT + k, dx=-int(round(obj.vx * step)))

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

    palette = np.zeros((FIRST_OBJECT + len(scene.objects), 3), dtype=np.float32)
    palette[ROAD] = ROAD_RGB
    palette[EGO] = EGO_RGB
    for k, obj in enumerate(scene.objects):
        palette[FIRST_OBJECT + k] = np.array(CATEGORY_RGB[obj.category], np.float32) * obj.brightness
    palette = np.clip(palette, 0, 255).astype(np.uint8)
    labelled = labels > 0
    image[labelled] = palette[labels[labelled]]

    work = image.astype(np.int16)
    for k, obj in enumerate(scene.objects):
        dx = -int(round(obj.vx * step))
        win = window(obj.ox + dx, obj.oy, *obj.canvas.shape, width, height)
        if win is None:
            continue
        img_sl = win[0]
        mine = labels[img_sl] == FIRST_OBJECT + k
        if not mine.any():
            continue
        angle, period = STYLES[obj.category].texture
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
