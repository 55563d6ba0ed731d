"""nuimcli: nuImages instance segmentation on plain PyTorch.

The command line is ``nuim`` (see ``nuimcli.cli``); the library parts are
``nuimcli.presets`` (the results-table rows), ``nuimcli.data`` (nuImages tables,
conversion, synthetic data), ``nuimcli.models`` (the detectors) and ``nuimcli.engine``
(training, evaluation, prediction).
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
