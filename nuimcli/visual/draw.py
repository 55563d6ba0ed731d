"""The one palette and the drawing of instances (detections or ground truth) on images.

Every picture the tool makes (``nuim predict``, ``nuim eval --show-dir``, ``nuim browse``, the
figures of ``nuim eval --plots``) takes its class colours from :data:`CLASS_COLORS_BGR`, so a
class looks the same everywhere.
"""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from nuimcli import CLASSES

#: One BGR colour per class (CLASSES order), distinct and visible on road scenes.
CLASS_COLORS_BGR: tuple[tuple[int, int, int], ...] = (
    (60, 20, 220),    # car: crimson
    (0, 140, 255),    # truck: orange
    (180, 105, 255),  # trailer: pink
    (0, 215, 255),    # bus: gold
    (19, 69, 139),    # construction_vehicle: brown
    (255, 144, 30),   # bicycle: dodger blue
    (226, 43, 138),   # motorcycle: violet
    (50, 205, 50),    # pedestrian: lime
    (0, 255, 255),    # traffic_cone: yellow
    (211, 206, 0),    # barrier: teal
)


def class_color(label: int) -> tuple[int, int, int]:
    """BGR colour of class ``label`` (labels beyond the palette get a stable pseudo-random colour)."""
    if 0 <= label < len(CLASS_COLORS_BGR):
        return CLASS_COLORS_BGR[label]
    rng = np.random.default_rng(label)
    return tuple(int(v) for v in rng.integers(64, 256, 3))  # type: ignore[return-value]


def semantic_palette(n: int = 256) -> np.ndarray:
    """``[n, 3]`` uint8 BGR colours for semantic label maps (label 0, background, is black)."""
    rng = np.random.default_rng(12345)
    pal = rng.integers(40, 256, size=(n, 3)).astype(np.uint8)
    pal[0] = 0
    return pal


# --------------------------------------------------------------------------- drawing


def draw_predictions(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: Optional[np.ndarray],
    labels: np.ndarray,
    masks: Optional[np.ndarray] = None,
    semantic: Optional[np.ndarray] = None,
    classes: Sequence[str] = CLASSES,
    mask_alpha: float = 0.5,
    semantic_alpha: float = 0.4,
    texts: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """Draw detections on a copy of ``image`` (BGR uint8 ``[H, W, 3]``) and return it.

    ``boxes`` [N, 4] x1, y1, x2, y2; ``scores`` [N] (None for ground truth: tags show the class
    name only); ``labels`` [N]; ``texts`` [N] replaces the tags (e.g. class and attributes);
    ``masks`` bool [N, H, W] or
    None; ``semantic`` uint8 [H, W] label map (0 = background, not drawn) or None. Masks are
    blended at ``mask_alpha`` in the class colour (lowest score first, so the best detection
    is on top), then boxes, then the ``"<class> <score>"`` tags so no mask covers a tag.
    """
    out = image.copy()
    h, w = out.shape[:2]
    if semantic is not None:
        sem = np.asarray(semantic)
        fg = sem > 0
        if fg.any():
            colours = semantic_palette()[sem[fg]].astype(np.float32)
            out[fg] = (out[fg].astype(np.float32) * (1 - semantic_alpha) + colours * semantic_alpha).round().astype(np.uint8)
    if scores is None:
        order = np.arange(len(labels))
    else:
        order = np.argsort(np.asarray(scores), kind="stable")  # ascending: best drawn last
    thick = max(1, int(round((h + w) / 1000)))
    if masks is not None:
        for i in order:
            m = np.asarray(masks[i], dtype=bool)
            if not m.any():
                continue
            col = np.array(class_color(int(labels[i])), np.float32)
            out[m] = (out[m].astype(np.float32) * (1 - mask_alpha) + col * mask_alpha).round().astype(np.uint8)
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, class_color(int(labels[i])), 1, lineType=cv2.LINE_AA)
    for i in order:
        x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), class_color(int(labels[i])), thick, lineType=cv2.LINE_AA)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, (h + w) / 4000)
    for i in order:
        lab = int(labels[i])
        name = classes[lab] if 0 <= lab < len(classes) else str(lab)
        if texts is not None:
            text = texts[i]
        else:
            text = name if scores is None else f"{name} {float(scores[i]):.2f}"
        (tw, th), base = cv2.getTextSize(text, font, scale, 1)
        x1, y1 = int(round(float(boxes[i][0]))), int(round(float(boxes[i][1])))
        x1 = min(max(x1, 0), max(w - tw - 2, 0))
        top = y1 - th - base - 2
        if top < 0:  # no room above the box: put the tag inside it
            top = max(y1, 0)
        col = class_color(lab)
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), col, -1)
        light = 0.114 * col[0] + 0.587 * col[1] + 0.299 * col[2] > 140
        cv2.putText(out, text, (x1 + 1, top + th + 1), font, scale, (0, 0, 0) if light else (255, 255, 255), 1,
                    lineType=cv2.LINE_AA)
    return out


def class_color_rgb01(label: int) -> tuple[float, float, float]:
    """:func:`class_color` as a matplotlib RGB triple in [0, 1] (figures use the same colours as pictures)."""
    b, g, r = class_color(label)
    return (r / 255.0, g / 255.0, b / 255.0)


def side_by_side(left: np.ndarray, right: np.ndarray, titles: Sequence[str] = ("ground truth", "prediction"),
                 gap: int = 8) -> np.ndarray:
    """Two same-height BGR images next to each other with a white gap and a title strip above each."""
    h = max(left.shape[0], right.shape[0])
    strip = max(18, h // 20)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, strip / 30

    def framed(img: np.ndarray, title: str) -> np.ndarray:
        canvas = np.full((h + strip, img.shape[1], 3), 255, np.uint8)
        canvas[strip : strip + img.shape[0]] = img
        cv2.putText(canvas, title, (4, strip - 5), font, scale, (0, 0, 0), 1, lineType=cv2.LINE_AA)
        return canvas

    sep = np.full((h + strip, gap, 3), 255, np.uint8)
    return np.concatenate([framed(left, titles[0]), sep, framed(right, titles[1])], axis=1)
