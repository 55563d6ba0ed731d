"""Exported-file formats: recognising a file by its content, and the metadata it carries.

An ONNX file is a protobuf ``ModelProto`` whose metadata entry ``nuimcli`` holds
:class:`ExportMeta` as JSON; a TorchScript file is a zip archive with a ``code/`` folder and
the same JSON as the extra file ``extra/nuimcli.json``. A checkpoint saved by ``torch.save``
is also a zip but has no ``code/`` folder, so the two cannot be confused whatever the suffix.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from nuimcli.errors import UserError

#: Key of the metadata in both formats (ONNX metadata_props key; TorchScript extra file name).
META_KEY = "nuimcli"
TORCHSCRIPT_EXTRA = "nuimcli.json"
EXTRA_HINT = 'pip install "nuimcli[export]"'

ONNX = "onnx"
TORCHSCRIPT = "torchscript"


@dataclass
class ExportMeta:
    """What an exported file says about itself (stored as JSON inside it).

    ``input_size`` is ``[width, height]`` of the input the graph was traced at, the only size
    it takes unless ``dynamic``; ``test_scale`` the ``(long, short)`` bound of
    :func:`nuimcli.data.transforms.resize_keep_ratio` the runtime resizes with (a dynamic
    file: the model's test scale, whatever aspect ratio the image has); ``precision``
    ``float32`` or ``float16``; ``outputs`` the graph's output names; ``extra`` holds
    ``checked_sizes``, the ``[width, height]`` the export check ran at.
    """

    preset: str
    classes: list[str]
    score_thr: float
    mask_thr_binary: float
    test_scale: list[int]
    input_size: list[int]
    size_divisor: int
    outputs: list[str]
    precision: str = "float32"
    dynamic: bool = False
    format_version: int = 1
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        """The metadata as a JSON string."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> "ExportMeta":
        """Parse the JSON written by :meth:`to_json`; ``where`` names the file in errors."""
        try:
            doc = json.loads(text)
            return cls(**doc)
        except (ValueError, TypeError) as e:
            raise UserError(f"{where}: its nuimcli export metadata is unreadable ({e})") from None


def detect_format(path: str | os.PathLike) -> Optional[str]:
    """``"onnx"``, ``"torchscript"`` or None (not an exported model, e.g. a checkpoint), by content."""
    p = Path(path)
    if not p.is_file():
        return None
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        # torch.jit.save writes <archive>/code/...; torch.save never does
        if any("/code/" in n for n in names) and any(n.endswith("/extra/" + TORCHSCRIPT_EXTRA) for n in names):
            return TORCHSCRIPT
        return None
    with open(p, "rb") as f:
        head = f.read(64)
    # ModelProto starts with field 1 (ir_version, varint: tag 0x08); a pickle starts with 0x80 and
    # then the producer name "pytorch"/"onnx" follows as field 2 within the first bytes
    if head[:1] == b"\x08" and b"\x12" in head[:8]:
        return ONNX
    return None


def require_onnx(what: str) -> None:
    """Raise a one-line :class:`UserError` when onnx / onnxruntime are not installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise UserError(f"{what} needs onnx and onnxruntime ({e.name} is missing): {EXTRA_HINT}") from None
