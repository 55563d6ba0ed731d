"""matplotlib figures of the diagnostics: PR curves, confusion matrix, error breakdown, training
curves. Each function takes the JSON-ready numbers (what is also written next to the PNG) and
writes one PNG atomically. The Agg backend is used, so no display is needed."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from nuimcli import CLASSES
from nuimcli.utils.io import atomic_path
from nuimcli.visual.draw import class_color_rgb01

#: Colours of the error-analysis stages (those of the COCO analysis tool's plots).
ERROR_COLORS: dict[str, tuple[float, float, float]] = {
    "C75": (1.0, 1.0, 1.0), "C50": (0.31, 0.51, 0.74), "Loc": (0.67, 0.82, 0.96), "Sim": (0.37, 0.73, 0.37),
    "Oth": (1.0, 0.6, 0.0), "BG": (0.95, 0.35, 0.35), "FN": (0.55, 0.35, 0.7),
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never try a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)


def _label_of(name: str) -> int:
    return CLASSES.index(name) if name in CLASSES else len(CLASSES) + hash(name) % 97


def _grid(n: int, cols: int = 5) -> tuple[int, int]:
    return max(1, math.ceil(n / cols)), min(cols, max(n, 1))


def pr_figure(pr: dict[str, Any], path: str | os.PathLike, title: str) -> Path:
    """One panel per class: precision over recall at IoU 0.5, 0.75 and 0.5:0.95 (from :func:`nuimcli.analysis.coco_diag.pr_curves`)."""
    plt = _plt()
    names = list(pr["classes"])
    rows, cols = _grid(len(names))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    rec = pr["recall"]
    styles = {"0.5": "-", "0.75": "--", "0.5:0.95": ":"}
    for ax, name in zip(axes.flat, names):
        entry = pr["classes"][name]
        col = class_color_rgb01(_label_of(name))
        for key, ls in styles.items():
            if entry[key] is not None:
                ax.plot(rec, entry[key], ls, color=col, lw=1.8, label=f"IoU {key}")
        ap = entry.get("AP")
        ax.set_title(f"{name}  AP {100 * ap:.1f}" if ap is not None else f"{name}  (no GT)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.supxlabel("recall")
    fig.supylabel("precision")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def confusion_figure(cm: dict[str, Any], path: str | os.PathLike, title: str) -> Path:
    """The confusion matrix (rows ground truth, columns prediction, last = background): colour is
    the share of the row, the text the count (from :meth:`ConfusionResult.to_dict`)."""
    plt = _plt()
    mat = np.asarray(cm["matrix"], np.float64)
    names = cm["names"]
    share = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(9, 8))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if mat[i, j]:
                ax.text(j, i, f"{int(mat[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(f"{title}\nIoU {cm['iou_thr']}, score >= {cm['score_thr']}; colour = share of the row", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, path)


def errors_figure(err: dict[str, Any], path: str | os.PathLike, title: str) -> Path:
    """The COCO analysis tool's stacked PR areas: one panel for the mean over classes, then one
    per class with ground truth; the legend gives each stage's AP
    (from :func:`nuimcli.analysis.coco_diag.error_analysis`)."""
    from nuimcli.analysis.coco_diag import ERROR_KEYS

    plt = _plt()
    rec = np.asarray(err["recall"])
    panels: list[tuple[str, dict[str, Any]]] = []
    present = {n: c for n, c in err["classes"].items() if c is not None}
    if present:
        mean_curves = {k: np.mean([c["curves"][k] for c in present.values()], axis=0) for k in ERROR_KEYS}
        panels.append(("all classes", {"curves": mean_curves, "ap": err["overall"]}))
    panels += list(present.items())
    rows, cols = _grid(len(panels), 4)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.3 * rows), squeeze=False)
    for ax, (name, c) in zip(axes.flat, panels):
        # Draw from the outermost stage (FN) inwards so each band shows what that stage adds.
        for key in reversed(ERROR_KEYS):
            ax.fill_between(rec, np.asarray(c["curves"][key]), color=ERROR_COLORS[key], lw=0,
                            label=f"[{c['ap'][key]:.3f}] {key}")
        ax.plot(rec, c["curves"]["C75"], color="black", lw=0.6)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], fontsize=6, loc="lower left", framealpha=0.8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.supxlabel("recall")
    fig.supylabel("precision")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def curves_figure(runs: Sequence[tuple[str, dict[str, list[tuple[float, float]]]]], path: str | os.PathLike,
                  title: str = "training curves", smoothed: bool = False) -> Path:
    """Training curves: one panel per key, one line per run. ``runs`` = [(run name, {key: [(x, y)]})];
    ``smoothed`` marks the loss panels as smoothed."""
    plt = _plt()
    keys: list[str] = []
    for _, series in runs:
        keys += [k for k in series if k not in keys]
    rows, cols = _grid(len(keys), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, series in runs:
            pts = series.get(key)
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, ms=3, lw=1.3, label=name)
        ax.set_title(key + (" (smoothed)" if smoothed and "loss" in key else ""), fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("epoch", fontsize=8)
        if len(runs) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _edge_labels(edges: Sequence[Optional[float]]) -> list[str]:
    def f(v: Optional[float]) -> str:
        if v is None:
            return "inf"
        return f"{int(v) // 1000}k" if v >= 10000 else f"{int(v)}"

    return [f"{f(a)}-{f(b)}" if b is not None else f">{f(a)}" for a, b in zip(edges, edges[1:])]


def stats_figure(doc: dict[str, Any], path: str | os.PathLike, title: str) -> Path:
    """The panels of ``nuim stats`` (from :func:`nuimcli.analysis.stats.split_stats`, with
    ``ap_per_camera`` under ``doc["ap_per_camera"]`` when there): objects per class, objects per
    image, box sizes, mask areas, attributes per class or null masks, AP per camera."""
    plt = _plt()
    panels = ["classes", "per_image", "box", "area"]
    if doc.get("attributes_per_class"):
        panels.append("attributes")
    if doc.get("null_masks") is not None:
        panels.append("null")
    if doc.get("ap_per_camera"):
        panels.append("cameras")
    rows, cols = _grid(len(panels), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.8 * rows), squeeze=False)
    from matplotlib.ticker import MaxNLocator

    for ax, kind in zip(axes.flat, panels):
        ax.tick_params(labelsize=7)
        # Counts are whole numbers: no 0.25 ticks on a small split.
        (ax.yaxis if kind in ("per_image", "box", "area") else ax.xaxis).set_major_locator(MaxNLocator(integer=True))
        if kind == "classes":
            names = list(doc["objects_per_class"])
            ax.barh(names, [doc["objects_per_class"][n] for n in names],
                    color=[class_color_rgb01(_label_of(n)) for n in names])
            ax.invert_yaxis()
            ax.set_title(f"objects per class ({doc['objects']} in {doc['images']} images)", fontsize=9)
        elif kind == "per_image":
            h = doc["objects_per_image"]["histogram"]
            ax.bar(range(len(h)), h, color="0.4")
            ax.set_xlabel("objects in an image", fontsize=8)
            ax.set_title(f"objects per image (mean {doc['objects_per_image']['mean']:.1f})", fontsize=9)
        elif kind in ("box", "area"):
            d = doc["box_size"] if kind == "box" else doc["mask_area"]
            labels = _edge_labels(d["edges"])
            ax.bar(range(len(labels)), d["histogram"], color="0.4")
            ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
            ax.set_title("box size sqrt(w·h), px" if kind == "box" else "mask area, px²", fontsize=9)
        elif kind == "attributes":
            per = doc["attributes_per_class"]
            attrs = sorted({a for c in per.values() for a in c})
            cmap = plt.get_cmap("tab20")
            left = np.zeros(len(per))
            for k, a in enumerate(attrs):
                vals = np.array([per[c].get(a, 0) for c in per], np.float64)
                ax.barh(list(per), vals, left=left, color=cmap(k % 20), label=a)  # full name: "moving" is both vehicle.* and pedestrian.*
                left += vals
            ax.invert_yaxis()
            ax.legend(fontsize=6, loc="lower right", ncol=2)
            ax.set_title("attributes per class", fontsize=9)
        elif kind == "null":
            names = list(doc["null_masks"])
            ax.barh(names, [doc["null_masks"][n] for n in names], color=[class_color_rgb01(_label_of(n)) for n in names])
            ax.invert_yaxis()
            ax.set_title("key-frame objects with a null mask (not converted)", fontsize=9)
        else:
            cams = doc["ap_per_camera"]
            names = list(cams)
            x = np.arange(len(names))
            for off, key, lab in ((-0.2, "bbox_AP", "box AP"), (0.2, "segm_AP", "mask AP")):
                ax.bar(x + off, [100 * (cams[c][key] or 0) for c in names], width=0.4, label=lab)
            ax.set_xticks(x, [c.replace("CAM_", "") for c in names], rotation=45, ha="right")
            ax.legend(fontsize=7)
            ax.set_title("AP per camera (%)", fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
