"""The one resolver: a checkpoint path, URL or zoo name → a local file and its preset, and the
model loaded from it.

``nuimcli.load``, ``nuim eval``, ``nuim predict`` and ``nuim train --load-from / --resume /
--pretrained`` all call :func:`resolve`. What a name means is :func:`nuimcli.zoo.locate`;
this module adds *where* it runs: in a multi-process job the download happens once per node,
on local rank 0, while the other ranks wait (:func:`~nuimcli.engine.distributed.once_per_node`),
so a multi-node run needs no shared cache.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

from nuimcli import zoo
from nuimcli.zoo import Resolved

if TYPE_CHECKING:
    from nuimcli.models.detector import Detector


def resolve(spec: str | os.PathLike, progress: bool = True, what: str = "checkpoint") -> Resolved:
    """``spec`` (a file, an http(s)/file URL or a zoo name) as a local file, fetched once per node.

    Outside a process group this is :func:`nuimcli.zoo.locate`; inside one, every rank must
    call it, and every rank gets the same file (or the same exception). ``what`` names the file
    in error messages (``ImageNet backbone``, ``load_from detector``…).
    """
    from nuimcli.engine.distributed import once_per_node

    return once_per_node(lambda first: zoo.locate(spec, download=first, progress=progress and first, what=what))


def load_detector(spec: str | os.PathLike, preset: Optional[str] = None, device: str = "cpu",
                  trust: bool = False, exact: bool = False, half: bool = False) -> "Detector":
    """Resolve ``spec``, build the model its file needs, load it strictly, eval mode on ``device``.

    ``preset`` names the preset when the file cannot tell (a foreign mmdet file); a zoo name
    brings its own. ``device`` is checked first (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
    ``trust``: read a file that pickles Python objects besides tensors although no preset names
    it (see :func:`nuimcli.checkpoints.load_checkpoint`). ``exact`` / ``half``: see
    :func:`nuimcli.models.inference_mode.prepare_for_inference` (default: folded BN, channels-last).
    A file written by ``nuim export`` gives an :class:`~nuimcli.export.runtime.ExportedModel`
    (same ``predict`` contract) instead; ``exact``/``half`` do not apply to it (fixed at export).
    """
    import torch

    from nuimcli.checkpoints import build_from_checkpoint
    from nuimcli.utils.device import resolve_device

    dev = torch.device(resolve_device(str(device), what="device"))
    found = resolve(spec)
    from nuimcli.export.formats import detect_format

    if detect_format(found.path) is not None:
        # a file written by `nuim export` (recognised by content): same predict() contract, so
        # predict and eval run it unchanged; it runs on the CPU (onnxruntime / torch.jit)
        from nuimcli.export.runtime import load_exported

        return load_exported(found.path)  # type: ignore[return-value]
    model = build_from_checkpoint(found.path, preset or found.preset, trust=trust)
    from nuimcli.models.inference_mode import prepare_for_inference

    # the model is ours alone (just built), so it is prepared in place: no second copy in memory
    return prepare_for_inference(model.to(dev).eval(), exact=exact, half=half, copy_model=False)
