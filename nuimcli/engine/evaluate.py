"""Evaluation over a split: batched inference on every image of a COCO file, the COCO results
list, then box and mask metrics (:mod:`nuimcli.engine.coco_metrics`).

Under ``torch.distributed`` (``nuim eval --gpus N`` or torchrun, started by
:func:`evaluate_checkpoint` through :func:`nuimcli.engine.launch.launch`) each rank predicts
every ``world_size``-th image and rank 0 gathers all results and computes the metrics.
"""

from __future__ import annotations

import collections
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from nuimcli import CLASSES
from nuimcli.engine.coco_metrics import CocoMetrics, evaluate_results, load_ground_truth
from nuimcli.errors import UserError

#: The converter's output layout under the data root.
DEFAULT_ANN_FILE = "annotations/nuimages_v1.0-val.json"


def default_ann_file(data_root: str | os.PathLike) -> Path:
    """``<data_root>/annotations/nuimages_v1.0-val.json`` (what ``nuim convert`` writes)."""
    return Path(data_root) / DEFAULT_ANN_FILE


def mask_to_rle(mask: np.ndarray) -> dict:
    """A bool ``[H, W]`` mask → COCO compressed RLE ``{"size": [H, W], "counts": str}``."""
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask[:, :, None], dtype=np.uint8))[0]
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def category_ids_for_labels(gt: dict, where: str = "annotation file", classes: Sequence[str] = CLASSES) -> list[int]:
    """``ids[label]`` = the id of the GT category named ``classes[label]`` (mmdet's ``cat_ids``).

    ``classes``: the model's class list (its checkpoint's meta). The converter numbers the 10
    nuImages classes 0..9 in class order, so there this is the identity; a file lacking one of
    the names is a :class:`UserError`.
    """
    by_name = {c.get("name"): c["id"] for c in gt["categories"]}
    missing = [n for n in classes if n not in by_name]
    if missing:
        hint = " (not a nuImages COCO file?)" if list(classes) == list(CLASSES) else \
            f" (the model's classes: {', '.join(classes)})"
        raise UserError(f"{where}: has no category named {', '.join(missing)}{hint}")
    return [by_name[n] for n in classes]


def model_classes(model: Any) -> Sequence[str]:
    """The class names of ``model`` (a :class:`~nuimcli.models.detector.Detector`, maybe wrapped),
    the 10 nuImages classes for a stand-in without them."""
    inner = model if hasattr(model, "classes") else getattr(model, "module", model)
    return tuple(getattr(inner, "classes", CLASSES))


def prediction_to_coco(pred: Any, image_id: int, cat_ids: Sequence[int]) -> list[dict]:
    """One image's :class:`~nuimcli.models.detector.Prediction` → COCO results entries.

    Each entry: ``image_id``, ``bbox`` [x, y, w, h] (from x1, y1, x2, y2), ``score``,
    ``category_id`` = ``cat_ids[label]`` and, when the model predicts masks, ``segmentation``
    (RLE with ``counts`` as str) — one list that serves both box and mask evaluation.
    """
    out = []
    boxes = np.asarray(pred.boxes, dtype=np.float64)
    for i in range(len(pred.scores)):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        r = {
            "image_id": image_id,
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(pred.scores[i]),
            "category_id": int(cat_ids[int(pred.labels[i])]),
        }
        if pred.masks is not None:
            r["segmentation"] = mask_to_rle(pred.masks[i])
        out.append(r)
    return out


def _read(path: Path) -> np.ndarray:
    from nuimcli.data.transforms import load_image

    return load_image(path)


def _prefetched(paths: Sequence[Path], ahead: int) -> Iterator[np.ndarray]:
    """Decode images in a background thread, at most ``ahead`` in flight (bounded memory)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: collections.deque[Future] = collections.deque()
        it = iter(paths)
        for p in it:
            pending.append(pool.submit(_read, p))
            if len(pending) >= ahead:
                break
        while pending:
            img = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(_read, nxt))
            yield img


def _dist_info(distributed: bool = True) -> tuple[int, int]:
    import torch.distributed as dist

    if distributed and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_to_rank0(obj: Any, distributed: bool = True) -> Optional[list[Any]]:
    """Every rank's ``obj`` as a list on rank 0 (rank order), None on the other ranks; ``[obj]``
    when not distributed (or ``distributed=False``)."""
    import torch.distributed as dist

    rank, world = _dist_info(distributed)
    if world == 1:
        return [obj]
    box: Optional[list[Any]] = [None] * world if rank == 0 else None
    dist.gather_object(obj, box, dst=0)
    return box


def infer_results(
    model: Any,
    images: Sequence[dict],
    data_root: str | os.PathLike,
    cat_ids: Sequence[int],
    batch_size: int = 2,
    progress: bool = True,
    distributed: bool = True,
    semantic: Any = None,
) -> list[dict]:
    """Predict every image (``images``: COCO image entries, ``file_name`` relative to
    ``data_root``) and return the COCO results list, in image order.

    Distributed (``torch.distributed`` initialised and ``distributed``): this rank predicts
    images ``rank::world_size``; rank 0 returns everything (gathered), the other ranks ``[]``.
    Every rank must call it then. ``distributed=False``: this process predicts all images.
    ``semantic``: a :class:`~nuimcli.engine.semantic.SemanticEval` that counts each predicted
    semantic map against its ground-truth PNG (summed over the ranks onto rank 0's).
    """
    import torch

    from nuimcli.utils.progress import make_progress

    rank, world = _dist_info(distributed)
    root = Path(data_root)
    mine = list(range(rank, len(images), world))
    paths = [root / images[i]["file_name"] for i in mine]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"image {missing[0]} does not exist{more} (is --data-root right?)")
    batch_size = max(1, int(batch_size))
    per_image: list[tuple[int, list[dict]]] = []
    bar = make_progress("img", transient=False)
    show = progress and rank == 0
    desc = "eval" if world == 1 else f"eval (rank 0 of {world})"
    with (bar if show else _NullCtx()):
        task = bar.add_task(desc, total=len(mine)) if show else None
        stream = _prefetched(paths, ahead=2 * batch_size)
        for start in range(0, len(mine), batch_size):
            idxs = mine[start : start + batch_size]
            arrays = [next(stream) for _ in idxs]
            with torch.no_grad():
                preds = model.predict(arrays, batch_size=batch_size)
            for i, pred in zip(idxs, preds):
                per_image.append((i, prediction_to_coco(pred, images[i]["id"], cat_ids)))
                if semantic is not None and pred.semantic is not None:
                    semantic.add(images[i]["file_name"], pred.semantic)
            if show:
                bar.update(task, advance=len(idxs))
    gathered = gather_to_rank0(per_image, distributed)
    if semantic is not None:
        counts = gather_to_rank0((semantic.iou.confusion, semantic.iou.images), distributed)
        if counts is not None:
            semantic.merge([c for c, _ in counts], sum(n for _, n in counts))
    if gathered is None:
        return []
    merged = sorted((item for part in gathered for item in part), key=lambda t: t[0])
    return [r for _, rs in merged for r in rs]


class _NullCtx:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


@dataclass
class EvalOutput:
    """What :func:`evaluate_model` returns (``metrics``/``results`` are None on ranks other than 0)."""

    metrics: Optional[CocoMetrics]
    results: Optional[list[dict]]
    semantic: Optional[dict] = None  #: IoU per class and mIoU (a model with a semantic head)


def evaluate_model(
    model: Any,
    ann_file: str | os.PathLike,
    data_root: str | os.PathLike,
    batch_size: int = 2,
    reference_compat: bool = False,
    progress: bool = True,
    distributed: bool = True,
    semantic_root: Optional[str | os.PathLike] = None,
) -> EvalOutput:
    """Batched inference over every image of ``ann_file`` (images under ``data_root``), then COCO
    box and mask metrics. ``model`` is a :class:`~nuimcli.models.detector.Detector` (anything
    with ``predict(list_of_BGR_arrays, batch_size) -> list[Prediction]``); under an initialised
    ``torch.distributed`` (and ``distributed``) every rank must call it, see :func:`infer_results`.
    ``semantic_root``: folder of the ground-truth semantic PNGs; with it, a model that predicts a
    semantic map also gets semantic IoU per class and mIoU (:mod:`nuimcli.engine.semantic`)."""
    from nuimcli.engine.semantic import SemanticEval

    gt = load_ground_truth(ann_file)
    classes = model_classes(model)
    cat_ids = category_ids_for_labels(gt, f"annotation file {ann_file}", classes)
    sem = SemanticEval(semantic_root) if semantic_root is not None and getattr(model, "has_semantic_head", False) \
        else None
    results = infer_results(model, gt["images"], data_root, cat_ids, batch_size=batch_size, progress=progress,
                            distributed=distributed, semantic=sem)
    rank, _ = _dist_info(distributed)
    if rank != 0:
        return EvalOutput(metrics=None, results=None)
    if progress:
        from nuimcli.utils.progress import err_console

        with err_console.status(f"COCO metrics on {len(results)} detections …"):
            metrics = evaluate_results(results, gt, reference_compat=reference_compat, classes=classes)
    else:
        metrics = evaluate_results(results, gt, reference_compat=reference_compat, classes=classes)
    return EvalOutput(metrics=metrics, results=results, semantic=sem.result() if sem is not None else None)


def check_eval_inputs(ann_file: str | os.PathLike, data_root: str | os.PathLike,
                      classes: Sequence[str] = CLASSES) -> int:
    """Fail now, with a :class:`UserError`, on what evaluation would only trip over at its end:
    an annotation file without a category for each of ``classes``, or listed images missing
    under ``data_root``. Returns the number of images."""
    from nuimcli.data.dataset import require_files

    gt = load_ground_truth(ann_file)
    category_ids_for_labels(gt, f"annotation file {ann_file}", classes)
    require_files([Path(data_root) / im["file_name"] for im in gt["images"]], f"image listed in {ann_file}")
    return len(gt["images"])


def flat_metrics(metrics: CocoMetrics) -> dict[str, Optional[float]]:
    """mmdet-style flat names (``bbox_mAP``, ``bbox_mAP_50`` … ``segm_AR@100``) → value (None if undefined)."""
    names = {"AP": "mAP", "AP50": "mAP_50", "AP75": "mAP_75", "APs": "mAP_s", "APm": "mAP_m", "APl": "mAP_l",
             "AR@100": "AR@100"}
    out: dict[str, Optional[float]] = {}
    d = metrics.to_dict()
    for t in ("bbox", "segm"):
        if t in d:
            for k, v in d[t].items():
                if k in names:
                    out[f"{t}_{names[k]}"] = v
    return out


def evaluate_detector(
    model: Any,
    ann_file: str | os.PathLike,
    data_root: str | os.PathLike,
    device: str = "cpu",
    progress: bool = True,
    batch_size: int = 2,
    reference_compat: bool = False,
) -> dict[str, Optional[float]]:
    """Evaluation during training, in this process only (the trainer calls it on rank 0): the
    flat metrics of :func:`flat_metrics`. ``model`` may be wrapped (DDP ``.module``); ``device``
    is where it already is (kept for the trainer's call)."""
    inner = model if hasattr(model, "predict") else getattr(model, "module", model)
    out = evaluate_model(inner, ann_file, data_root, batch_size=batch_size, reference_compat=reference_compat,
                         progress=progress, distributed=False)
    assert out.metrics is not None
    return flat_metrics(out.metrics)


def evaluate_checkpoint(
    checkpoint: str,
    ann_file: Path,
    data_root: Path,
    preset: Optional[str] = None,
    reference_compat: bool = False,
    batch_size: int = 2,
    device: str = "cpu",
    gpus: int = 1,
    threads: Optional[int] = None,
    seed: int = 0,
    trust_checkpoint: bool = False,
    exact: bool = False,
    half: bool = False,
    semantic_root: Optional[Path] = None,
) -> Optional[tuple[dict[str, Any], list[dict]]]:
    """The library entry point of ``nuim eval --checkpoint``: load ``checkpoint`` (a file, URL or
    zoo name; downloaded once per node) in every process of the job, predict the split, and
    return rank 0's ``(metrics document, COCO results)`` — None on the other torchrun ranks.

    ``gpus`` > 1 spawns that many processes (CPU processes with gloo when the device is the
    CPU); a worker's exception is raised here as itself. The document holds the checkpoint, the
    preset, the annotation file, the metrics and, for a results-table row, its published numbers.
    ``exact`` / ``half``: see :func:`nuimcli.models.inference_mode.prepare_for_inference`.
    ``semantic_root``: ground-truth semantic PNGs; a model with a semantic head then also gets
    the document's ``semantic`` section (IoU per class, mIoU).
    """
    from nuimcli.engine.launch import launch

    return launch(_evaluate_rank, (checkpoint, Path(ann_file), Path(data_root), preset, reference_compat, batch_size,
                                   threads, seed, trust_checkpoint, exact, half, semantic_root), gpus=gpus, device=device)


def _evaluate_rank(world: Any, device: str, checkpoint: str, ann: Path, data_root: Path, preset: Optional[str],
                   reference_compat: bool, batch_size: int, threads: Optional[int], seed: int,
                   trust_checkpoint: bool, exact: bool = False, half: bool = False,
                   semantic_root: Optional[Path] = None) -> Optional[tuple[dict[str, Any], list[dict]]]:
    import nuimcli
    from nuimcli.utils.seeding import setup_process

    setup_process(threads, seed)
    model = nuimcli.load(checkpoint, preset=preset, device=device, trust_checkpoint=trust_checkpoint,
                         exact=exact, half=half)
    out = evaluate_model(model, ann, data_root, batch_size=batch_size, reference_compat=reference_compat,
                         semantic_root=semantic_root)
    if out.metrics is None or out.results is None:
        return None
    p = model.preset
    doc: dict[str, Any] = {"checkpoint": str(checkpoint), "preset": p.name, "ann_file": str(ann),
                           **out.metrics.to_dict()}
    if out.semantic is not None:
        doc["semantic"] = out.semantic
    if p.release is not None and (p.release.box_ap is not None or p.release.mask_ap is not None):
        doc["reference"] = {"preset": p.name, "row": p.release.row, "box_ap": p.release.box_ap,
                            "mask_ap": p.release.mask_ap}
    return doc, out.results
