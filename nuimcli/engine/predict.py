"""Prediction on image files: batched inference, pictures with the detections drawn, and one JSON
file of machine-readable results per image.

For each input ``<stem>.<ext>`` it writes ``<out>/<stem>.jpg`` (the input's size; translucent
masks one colour per class, boxes, class names and scores; optionally HTC's semantic map
underneath) and ``<out>/<stem>.json``::

    {"image": "<file name>", "source": "<path as given>", "width": W, "height": H,
     "score_thr": 0.3,
     "detections": [{"bbox": [x1, y1, x2, y2], "score": s, "label": 0..9,
                     "category": "car", "mask": {"size": [H, W], "counts": "<RLE>"}}]}

A file that cannot be read as an image is reported by name and skipped; the others are still
written.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import cv2
import numpy as np

from nuimcli import CLASSES
from nuimcli.errors import UserError
from nuimcli.utils.io import atomic_path, atomic_write_json

#: Image suffixes picked up when a folder is given (explicit files and globs are tried whatever their suffix).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Drawing moved to nuimcli.visual (one palette for every picture the tool makes); re-exported
# here so existing imports keep working.
from nuimcli.visual.draw import CLASS_COLORS_BGR, class_color, draw_predictions  # noqa: E402,F401


@dataclass
class PredictItem:
    """One input and what became of it."""

    source: str  #: the path as found (or the argument, for one that matched nothing)
    ok: bool = False
    error: Optional[str] = None
    width: int = 0
    height: int = 0
    num_detections: int = 0
    classes: dict[str, int] = field(default_factory=dict)  #: class name -> count (kept detections)
    image_out: Optional[str] = None
    json_out: Optional[str] = None
    semantic_out: Optional[str] = None  #: <stem>_semantic.png with --semantic

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def expand_inputs(args: Iterable[str]) -> tuple[list[Path], list[PredictItem]]:
    """Image arguments → (files to try, failures).

    An existing file is taken as is; a folder gives its image files (by suffix, sorted, not
    recursive); anything else is a glob pattern (``**`` recursive). A missing file or a pattern
    matching nothing is a failure named by the argument. Duplicates are dropped.
    """
    files: list[Path] = []
    failed: list[PredictItem] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            files.append(p)

    for arg in args:
        p = Path(arg).expanduser()
        if p.is_file():
            add(p)
        elif p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                failed.append(PredictItem(source=arg, error="folder has no image files"))
            for q in found:
                add(q)
        elif glob.has_magic(arg):
            found = sorted(Path(q) for q in glob.glob(os.path.expanduser(arg), recursive=True) if Path(q).is_file())
            if not found:
                failed.append(PredictItem(source=arg, error="no file matches"))
            for q in found:
                add(q)
        else:
            failed.append(PredictItem(source=arg, error="no such file"))
    return files, failed


def output_stems(files: Sequence[Path], out_dir: Path) -> list[str]:
    """``<stem>`` per file; a stem used twice gets ``-2``, ``-3`` … so no output overwrites another
    (or an input that lives in ``out_dir``)."""
    inputs = {f.resolve() for f in files}
    used: set[str] = set()
    stems = []
    for f in files:
        base, stem, k = f.stem, f.stem, 1
        while stem in used or (out_dir / f"{stem}.jpg").resolve() in inputs or (out_dir / f"{stem}.json").resolve() in inputs:
            k += 1
            stem = f"{base}-{k}"
        used.add(stem)
        stems.append(stem)
    return stems


# --------------------------------------------------------------------------- records


def detection_records(pred: Any, keep: np.ndarray, classes: Sequence[str] = CLASSES) -> list[dict]:
    """The kept detections of a :class:`~nuimcli.models.detector.Prediction` as JSON-ready dicts."""
    from nuimcli.engine.evaluate import mask_to_rle

    out = []
    for i in np.flatnonzero(keep):
        lab = int(pred.labels[i])
        out.append({
            "bbox": [round(float(v), 2) for v in pred.boxes[i]],
            "score": round(float(pred.scores[i]), 5),
            "label": lab,
            "category": classes[lab] if 0 <= lab < len(classes) else str(lab),
            "mask": mask_to_rle(pred.masks[i]) if pred.masks is not None else None,
        })
    return out


def _write_jpeg(path: Path, image: np.ndarray, quality: int = 95) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image, [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise UserError(f"cannot write {path}")


def _read_image(path: Path) -> np.ndarray:
    """BGR uint8 [H, W, 3]; raises ``ValueError`` with a short reason for anything unreadable."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise ValueError(f"cannot read: {e.strerror or e}") from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ValueError("not an image (or a corrupt one)")
    return img


# --------------------------------------------------------------------------- the job


def predict_files(
    model: Any,
    inputs: Sequence[str],
    out_dir: str | os.PathLike,
    score_thr: float = 0.3,
    batch_size: int = 2,
    show_semantic: bool = False,
    progress: bool = True,
    semantic: bool = False,
) -> list[PredictItem]:
    """Predict every image named by ``inputs`` (files, folders, globs) and write the pictures and
    JSON files into ``out_dir``. Returns one :class:`PredictItem` per input file (and per argument
    that matched nothing), failures included, in input order.

    ``model``: a :class:`~nuimcli.models.detector.Detector` (``predict(arrays, batch_size)``).
    Only detections with ``score >= score_thr`` are drawn and written. ``semantic``: also write
    each image's semantic map as ``<stem>_semantic.png`` in the encoding of ``nuim convert``'s
    semantic PNGs (devkit index per pixel; see :mod:`nuimcli.engine.semantic`).
    """
    import torch

    from nuimcli.utils.progress import make_progress

    if not 0.0 <= score_thr <= 1.0:
        raise UserError(f"--score-thr {score_thr}: must be between 0 and 1")
    classes = tuple(getattr(model, "classes", CLASSES))  # the checkpoint's class names
    out = Path(out_dir)
    files, failed = expand_inputs(inputs)
    if not files and not failed:
        raise UserError("no input images given")
    stems = output_stems(files, out)
    items = [PredictItem(source=str(f)) for f in files]
    batch_size = max(1, int(batch_size))
    if files:
        out.mkdir(parents=True, exist_ok=True)
    bar = make_progress("img")
    with bar if (progress and len(files) > 1) else _Null():
        task = bar.add_task("predict", total=len(files))
        for start in range(0, len(files), batch_size):
            chunk = list(range(start, min(start + batch_size, len(files))))
            arrays, ok_idx = [], []
            for i in chunk:
                try:
                    arrays.append(_read_image(files[i]))
                    ok_idx.append(i)
                except ValueError as e:
                    items[i].error = str(e)
            if arrays:
                with torch.no_grad():
                    preds = model.predict(arrays, batch_size=batch_size)
                for i, img, pred in zip(ok_idx, arrays, preds):
                    _write_one(items[i], files[i], stems[i], out, img, pred, score_thr, show_semantic, semantic,
                               classes)
            bar.update(task, advance=len(chunk))
    return items + failed


def _write_one(item: PredictItem, src: Path, stem: str, out: Path, img: np.ndarray, pred: Any,
               score_thr: float, show_semantic: bool, semantic: bool = False,
               classes: Sequence[str] = CLASSES) -> None:
    h, w = img.shape[:2]
    keep = np.asarray(pred.scores) >= score_thr
    dets = detection_records(pred, keep, classes)
    picture = draw_predictions(
        img, pred.boxes[keep], pred.scores[keep], pred.labels[keep],
        masks=None if pred.masks is None else pred.masks[keep],
        semantic=pred.semantic if show_semantic else None, classes=classes,
    )
    jpg, js = out / f"{stem}.jpg", out / f"{stem}.json"
    _write_jpeg(jpg, picture)
    record = {"image": src.name, "source": str(src), "width": w, "height": h, "score_thr": score_thr,
              "detections": dets}
    if semantic and pred.semantic is not None:
        from nuimcli.engine.semantic import write_semantic_png

        png = write_semantic_png(out / f"{stem}_semantic.png", pred.semantic)
        record["semantic"] = png.name
        item.semantic_out = str(png)
    atomic_write_json(js, record, indent=1)
    item.ok, item.width, item.height = True, w, h
    item.num_detections = len(dets)
    item.classes = dict(Counter(d["category"] for d in dets).most_common())
    item.image_out, item.json_out = str(jpg), str(js)


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def load_prediction_json(path: str | os.PathLike) -> dict:
    """Read a ``<stem>.json`` written by :func:`predict_files` (masks stay RLE dicts)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- from a checkpoint argument


def predict_checkpoint(
    inputs: Sequence[str],
    out_dir: str | os.PathLike,
    checkpoint: Optional[str] = None,
    preset: Optional[str] = None,
    device: str = "cpu",
    score_thr: float = 0.3,
    batch_size: int = 2,
    show_semantic: bool = False,
    threads: Optional[int] = None,
    seed: int = 0,
    trust_checkpoint: bool = False,
    exact: bool = False,
    half: bool = False,
    semantic: bool = False,
) -> tuple[Any, list[PredictItem]]:
    """The library entry point of ``nuim predict``: load the model (``checkpoint`` a file, URL or
    zoo name; None: ``preset``'s released file, or the best released one) and run
    :func:`predict_files`. Returns ``(model, items)``.

    Nothing readable among ``inputs``, or ``show_semantic`` for a model without a semantic head,
    is a :class:`UserError` raised before any prediction. ``exact`` / ``half``: see
    :func:`nuimcli.models.inference_mode.prepare_for_inference`. ``semantic``: also save each
    semantic map (see :func:`predict_files`).
    """
    files, _ = expand_inputs(inputs)
    if not files:
        raise UserError(f"no readable input among {', '.join(inputs[:3])}{' …' if len(inputs) > 3 else ''}: "
                        "give image files, folders or glob patterns")
    flags = [name for name, on in (("--show-semantic", show_semantic), ("--semantic", semantic)) if on]
    model = load_predict_model(checkpoint, preset, device, threads, seed, trust_checkpoint, exact=exact, half=half,
                               semantic_flags=flags)
    items = predict_files(model, inputs, out_dir, score_thr=score_thr, batch_size=batch_size,
                          show_semantic=show_semantic, semantic=semantic)
    return model, items


def load_predict_model(checkpoint: Optional[str], preset: Optional[str], device: str, threads: Optional[int],
                       seed: int, trust_checkpoint: bool, exact: bool = False, half: bool = False,
                       semantic_flags: Sequence[str] = ()) -> Any:
    """The model of ``nuim predict`` — images, videos and sequences alike: ``checkpoint`` a file,
    URL or zoo name (None: ``preset``'s released file, or the best released one), fast inference
    unless ``exact``, ``half`` precision on request. ``semantic_flags``: the options given that
    need a semantic head; on a model without one the first is refused (:class:`UserError`)."""
    import nuimcli
    from nuimcli.utils.device import resolve_device
    from nuimcli.utils.seeding import setup_process

    device = resolve_device(device)
    setup_process(threads, seed)
    if checkpoint is None:
        checkpoint, preset = _released_file(preset), None
    model = nuimcli.load(checkpoint, preset=preset, device=device, trust_checkpoint=trust_checkpoint,
                         exact=exact, half=half)
    if semantic_flags and not model.has_semantic_head:
        raise UserError(f"{semantic_flags[0]}: preset '{model.preset.name}' has no semantic head "
                        "(the HTC presets except htc-r50-nosemantic-1x have one)")
    return model


def _released_file(preset: Optional[str]) -> str:
    """The released checkpoint to use without ``--checkpoint``, downloaded once into the cache;
    offline, the error says where to get it and where to put it."""
    from nuimcli import zoo
    from nuimcli.download import DownloadError
    from nuimcli.engine.resolve import resolve
    from nuimcli.utils.progress import err_console

    entry = zoo.best_released(preset)
    if not entry.downloaded:
        zoo.check_cache_dir()
        err_console.print(f"no --checkpoint: using the released {entry.name} (mask AP {entry.mask_ap}), "
                          f"downloading it once to {entry.path}")
    try:
        return str(resolve(entry.name).path)
    except DownloadError as e:
        reason = str(e).split("; ")[0]  # the fetch error's own hints talk about `nuim zoo`
        raise UserError(
            f"{reason}. To predict offline: download {entry.checkpoint_url} where there is network and save it "
            f"as {entry.path} (used from then on), or pass --checkpoint FILE; NUIM_ZOO_URL can name a mirror"
        ) from None
