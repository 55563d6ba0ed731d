"""Running an exported file: :class:`ExportedModel`, with the ``Detector.predict`` contract.

``nuim predict`` and ``nuim eval`` receive one of these from :func:`nuimcli.load` when the
file they are given is an exported model (recognised by content,
:func:`nuimcli.export.formats.detect_format`), so both commands run unchanged: the image is
resized outside the graph with :func:`nuimcli.data.transforms.resize_keep_ratio` (as
``Detector.preprocess`` does), the graph returns detections in resized-input pixels, and here
boxes are divided by the scale factor and masks pasted with
:func:`nuimcli.models.roi_heads.paste_masks` at the original size.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from nuimcli.data.structures import ImageMeta
from nuimcli.data.transforms import ImageLike, load_image, padded_size, resize_keep_ratio
from nuimcli.errors import UserError
from nuimcli.export.formats import (META_KEY, ONNX, TORCHSCRIPT, TORCHSCRIPT_EXTRA, ExportMeta, detect_format,
                                    require_onnx)
from nuimcli.models.detector import Prediction, semantic_map
from nuimcli.models.roi_heads import paste_masks


def load_torchscript(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` in eval mode, without torch's deprecation warning for torch.jit (see
    :mod:`nuimcli.export.writers` for why TorchScript is still the format)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location=device).eval()


def onnx_session(path: str | os.PathLike, threads: Optional[int] = None):
    """The one way an ONNX file is run (the export check and :class:`ExportedModel` alike):
    onnxruntime's CPU provider with graph optimisations up to ``ORT_ENABLE_EXTENDED``.

    Not ``ORT_ENABLE_ALL`` (onnxruntime's default): its layout pass rewrites the convolutions to
    the blocked NCHWc kernels, whose different accumulation order moved the 28x28 mask
    probabilities of small random-weights models by up to ~1e-3 and flipped pixels of masks a
    few pixels large (pasted-mask IoU 0.9655 on the tiny Mask R-CNN at 320x180, 0.889 on
    Cascade R-50 at 384x216); with ``EXTENDED`` the same files gave 0.996, and were not slower here.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if threads:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def read_meta(path: str | os.PathLike, fmt: str) -> ExportMeta:
    """The :class:`ExportMeta` stored in an exported file of format ``fmt``."""
    if fmt == TORCHSCRIPT:
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith("/extra/" + TORCHSCRIPT_EXTRA))
            return ExportMeta.from_json(z.read(name).decode("utf-8"), str(path))
    require_onnx("reading an ONNX file")
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise UserError(f"{path}: an ONNX file without nuimcli metadata (export it with `nuim export`)")
    return ExportMeta.from_json(props[META_KEY], str(path))


class ExportedModel:
    """An exported file (TorchScript or ONNX) behind ``predict(images) -> list[Prediction]``.

    Args:
        path: the file.
        threads: intra-op threads for onnxruntime (None: its default; torch uses its global).
    """

    def __init__(self, path: str | os.PathLike, threads: Optional[int] = None) -> None:
        self.path = Path(path)
        fmt = detect_format(self.path)
        if fmt is None:
            raise UserError(f"{self.path}: not a model exported by `nuim export`")
        self.format = fmt
        self.meta = read_meta(self.path, fmt)
        if fmt == TORCHSCRIPT:
            self._module = load_torchscript(self.path, "cpu")
            self._session = None
        else:
            self._module = None
            self._session = onnx_session(self.path, threads)
        from nuimcli.presets import load_preset

        self.preset = load_preset(self.meta.preset)

    @property
    def classes(self) -> tuple[str, ...]:
        """Label ``i``'s name, as the exported file's metadata records it."""
        return tuple(self.meta.classes)

    @property
    def has_semantic_head(self) -> bool:
        """True when the graph returns semantic logits (HTC with its semantic head)."""
        return "semantic_logits" in self.meta.outputs

    def run(self, image: np.ndarray) -> tuple[np.ndarray, ...]:
        """Run the graph on one resized BGR uint8 ``[H, W, 3]`` image; outputs as numpy arrays."""
        w, h = self.meta.input_size
        if not self.meta.dynamic and image.shape[:2] != (h, w):
            raise UserError(f"{self.path}: exported for {w}x{h} input, got an image resized to "
                            f"{image.shape[1]}x{image.shape[0]} (export again with --dynamic, or --input-size)")
        image = np.ascontiguousarray(image)
        if self._session is not None:
            return tuple(self._session.run(None, {"image": image}))
        with torch.no_grad():
            out = self._module(torch.from_numpy(image))
        return tuple(o.float().numpy() if o.is_floating_point() else o.numpy() for o in out)

    def predict(self, images: Union[ImageLike, Sequence[ImageLike]], batch_size: int = 1) -> list[Prediction]:
        """Detect objects, as :meth:`Detector.predict <nuimcli.models.detector.Detector.predict>`.

        ``batch_size`` is accepted for the same call shape; the graph takes one image at a time.
        """
        if isinstance(images, (np.ndarray, str)) or hasattr(images, "__fspath__"):
            images = [images]
        return [self._predict_one(load_image(im)) for im in images]

    def _predict_one(self, image: np.ndarray) -> Prediction:
        resized, scale_factor = resize_keep_ratio(image, self.meta.test_scale)
        outs = self.run(resized)
        boxes, scores, labels, mask_probs = outs[:4]
        boxes = boxes.astype(np.float32)
        # same order of operations as the RoI head's rescale: boxes / scale_factor
        orig = torch.from_numpy(boxes) / torch.from_numpy(scale_factor)
        h, w = image.shape[:2]
        if len(boxes):
            masks = paste_masks(torch.from_numpy(mask_probs.astype(np.float32)), orig, h, w,
                                self.meta.mask_thr_binary).numpy()
        else:
            masks = np.zeros((0, h, w), dtype=bool)
        semantic = None
        if self.has_semantic_head:
            rh, rw = resized.shape[:2]
            meta = ImageMeta(ori_shape=(h, w), img_shape=(rh, rw), pad_shape=padded_size(rh, rw, self.meta.size_divisor),
                             scale_factor=tuple(float(x) for x in scale_factor))
            semantic = semantic_map(torch.from_numpy(outs[4].astype(np.float32)), meta)
        return Prediction(boxes=orig.numpy().astype(np.float32), scores=scores.astype(np.float32),
                          labels=labels.astype(np.int64), masks=masks, semantic=semantic)


def load_exported(path: str | os.PathLike, threads: Optional[int] = None) -> ExportedModel:
    """Open an exported file (format from its content); ONNX needs the ``export`` extra."""
    if detect_format(path) == ONNX:
        require_onnx(f"{path} (an ONNX model)")
    return ExportedModel(path, threads=threads)
