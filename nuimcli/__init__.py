"""nuimcli: nuImages instance segmentation on plain PyTorch.

The command line is ``nuim`` (see ``nuimcli.cli``); the library parts are
``nuimcli.presets`` (the results-table rows), ``nuimcli.data`` (nuImages tables,
conversion, datasets), ``nuimcli.models`` (the detectors) and ``nuimcli.engine``
(training, evaluation, prediction); ``nuimcli.synthetic`` writes synthetic nuImages.
"""

__version__ = "0.1.0"

CLASSES = (
    "car",
    "truck",
    "trailer",
    "bus",
    "construction_vehicle",
    "bicycle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "barrier",
)


def load(name_or_path, preset=None, device="cpu", trust_checkpoint=False, exact=False, half=False):
    """Load a detector ready for inference: ``nuimcli.load(name_or_path).predict(images)``.

    ``name_or_path`` is a checkpoint file (ours, a released mmdetection3d nuImages file, or any
    mmdet file of a preset's architecture) or a zoo name (a preset with a released checkpoint,
    downloaded and verified on first use). ``preset`` names the preset when the file cannot tell
    (a foreign mmdet checkpoint). Returns a :class:`nuimcli.models.detector.Detector` in eval mode
    on ``device``; its ``predict`` takes BGR uint8 arrays or image paths. Files are read with
    ``torch.load(weights_only=True)``; one that also pickles Python objects (which could run
    code) is read only when a preset names it (its SHA-256) or ``trust_checkpoint`` is True.

    By default the model is prepared for fast inference (BatchNorm folded into the convolutions,
    channels-last; inference-only: it refuses ``train()`` and saving); ``exact=True`` keeps
    mmdet's bit-exact path, ``half=True`` runs float16 on CUDA / bfloat16 on CPU
    (:func:`nuimcli.models.inference_mode.prepare_for_inference`).
    """
    # Imported here so `import nuimcli` (and the CLI's startup) stays light: no torch import.
    from nuimcli.engine.resolve import load_detector

    return load_detector(name_or_path, preset=preset, device=device, trust=trust_checkpoint, exact=exact, half=half)
