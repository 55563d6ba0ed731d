"""Presets: one YAML file per row of the mmdetection3d nuImages results table.

A preset is data: it names the architecture, the data pipeline settings, the schedule, the
initialisation and the table row (released checkpoint, hash, numbers). Shared settings are
written once: a file may name ``base: <other preset>`` and then holds only its differences
(deep-merged, the child wins). Files whose name starts with ``_`` are bases, not listed.

Loading validates every key and type against the dataclasses below; a mistake is a
:class:`~nuimcli.errors.UserError` naming the file and the dotted key.
``--set key=value`` overrides go through :func:`apply_overrides` and the same validation.

Defaults live in one place: the dataclasses below. The base files (``_mask-rcnn.yaml`` and the
bases built on it) and the rows hold only what differs from what they inherit — the dataclass
defaults, then their base chain (``tests/test_presets.py`` fails on a restated value). That
direction, not the reverse, because the dataclasses are what every other reader sees: a preset
file written by a user, a checkpoint's stored preset and ``--set`` all fall back to them, so a
YAML that restated every field would make a changed default silently ineffective for the
shipped presets only. The defaults are therefore mmdet's Mask R-CNN R-50-FPN values (the
reference's ``_base_`` configs); ``_mask-rcnn.yaml`` adds only the ImageNet weights (``init``),
which the dataclasses leave unset so that a preset written without a base downloads nothing.

The detectors this package can build are listed once, in :data:`DETECTORS`: validation, the
model builder (``nuimcli.models.build``) and the zoo read that table.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml

from nuimcli import CLASSES
from nuimcli.errors import UserError
from nuimcli.utils.typed_config import build_dataclass, suggest, type_hints, unwrap_optional

PYTORCH_MEAN = [123.675, 116.28, 103.53]
PYTORCH_STD = [58.395, 57.12, 57.375]


@dataclass(frozen=True)
class DetectorSpec:
    """What the rest of the code needs to know about one detector family (``model.detector``)."""

    display_name: str  #: how tables name it ("Cascade Mask R-CNN")
    cascade: bool  #: RoI stages run in sequence, each refining the previous stage's boxes
    hybrid: bool = False  #: HTC: interleaved box/mask stages, mask information flow, semantic head


#: The one table of detectors: ``model.detector`` -> its spec. Preset validation accepts these
#: names, ``models/build.py`` picks the RoI head from the spec, the zoo names models with it.
DETECTORS: dict[str, DetectorSpec] = {
    "mask_rcnn": DetectorSpec("Mask R-CNN", cascade=False),
    "cascade_mask_rcnn": DetectorSpec("Cascade Mask R-CNN", cascade=True),
    "htc": DetectorSpec("HTC", cascade=True, hybrid=True),
}


@dataclass
class BackboneConfig:
    """ResNet / ResNeXt backbone as mmdet builds it."""

    depth: int = 50  #: 18, 34, 50, 101 (152 accepted by the builder)
    style: str = "pytorch"  #: "pytorch" (stride on the 3x3) or "caffe" (stride on the first 1x1)
    groups: int = 1  #: ResNeXt cardinality (1 = plain ResNet)
    base_width: int = 64  #: ResNeXt bottleneck base width (64 = plain ResNet)
    dcn_stages: list[bool] = field(default_factory=lambda: [False, False, False, False])
    frozen_stages: int = 1  #: stem + layer1..layerN get no gradient and stay in eval mode
    norm_eval: bool = True  #: every BN keeps its running statistics during training
    norm_requires_grad: bool = True  #: BN affine parameters train (False for the caffe rows)
    zero_init_residual: bool = True  #: last BN of each block starts at 0 when not pretrained

    @property
    def display_name(self) -> str:
        """The backbone as the results tables name it, with its FPN: ``R-50-FPN``,
        ``R-50-caffe-FPN``, ``X-101-64x4d-FPN DCN``. The one place this name is formatted."""
        name = f"X-{self.depth}-{self.groups}x{self.base_width}d" if self.groups > 1 else f"R-{self.depth}"
        if self.style == "caffe":
            name += "-caffe"
        name += "-FPN"  # every detector here has an FPN neck
        return name + (" DCN" if any(self.dcn_stages) else "")


@dataclass
class RPNConfig:
    """RPN head, anchors, train targets and proposal settings."""

    feat_channels: int = 256
    anchor_scales: list[float] = field(default_factory=lambda: [8.0])
    anchor_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    anchor_strides: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 64])
    loss_bbox: str = "l1"  #: "l1" or "smooth_l1"
    smooth_l1_beta: float = 1.0 / 9.0
    allowed_border: int = -1  #: -1 keeps every anchor; 0 ignores anchors crossing the border
    pos_iou_thr: float = 0.7
    neg_iou_thr: float = 0.3
    min_pos_iou: float = 0.3
    match_low_quality: bool = True
    num_samples: int = 256
    pos_fraction: float = 0.5
    train_nms_pre: int = 2000
    train_max_per_img: int = 1000
    test_nms_pre: int = 1000
    test_max_per_img: int = 1000
    nms_iou: float = 0.7
    min_bbox_size: float = 0.0


@dataclass
class RoIConfig:
    """Box and mask heads of every stage, their train targets and the test-time post-processing."""

    num_stages: int = 1
    fc_out_channels: int = 1024
    roi_feat_size: int = 7
    mask_roi_size: int = 14
    mask_num_convs: int = 4
    finest_scale: int = 56
    featmap_strides: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    reg_class_agnostic: bool = False
    target_stds: list[list[float]] = field(default_factory=lambda: [[0.1, 0.1, 0.2, 0.2]])
    stage_iou_thrs: list[float] = field(default_factory=lambda: [0.5])
    stage_loss_weights: list[float] = field(default_factory=lambda: [1.0])
    match_low_quality: bool = True
    loss_bbox: str = "l1"  #: "l1" or "smooth_l1"
    smooth_l1_beta: float = 1.0
    num_samples: int = 512
    pos_fraction: float = 0.25
    mask_size: int = 28
    interleaved: bool = False  #: HTC: masks trained on boxes refined by the same stage
    mask_info_flow: bool = False  #: HTC: each mask head gets the previous heads' features
    score_thr: float = 0.05
    nms_iou: float = 0.5
    max_per_img: int = 100
    mask_thr_binary: float = 0.5


@dataclass
class SemanticConfig:
    """HTC's FusedSemanticHead (absent unless ``enabled``)."""

    enabled: bool = False
    num_classes: int = 32
    num_convs: int = 4
    fusion_level: int = 1
    ignore_label: int = 0
    loss_weight: float = 0.2


@dataclass
class ModelConfig:
    """Everything :func:`nuimcli.models.build.build_model` reads."""

    detector: str = "mask_rcnn"  #: a key of :data:`DETECTORS`
    num_classes: int = 10
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn_channels: int = 256
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi: RoIConfig = field(default_factory=RoIConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)

    @property
    def display_name(self) -> str:
        """A short human name of the model, e.g. ``Mask R-CNN R-50-FPN`` or ``HTC X-101-64x4d-FPN DCN``."""
        spec = DETECTORS.get(self.detector)
        name = f"{spec.display_name if spec else self.detector} {self.backbone.display_name}"
        if spec is not None and spec.hybrid and not self.semantic.enabled:
            name += " (no semantic)"
        return name


@dataclass
class DataConfig:
    """Data pipeline: scales, flip, normalisation, padding and loader sizes."""

    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    train_scales: list[list[int]] = field(default_factory=lambda: [[1280, 720], [1920, 1080]])
    multiscale_mode: str = "range"  #: "range" (sample between two scales) or "value" (pick one)
    test_scale: list[int] = field(default_factory=lambda: [1600, 900])
    flip_ratio: float = 0.5
    mean: list[float] = field(default_factory=lambda: list(PYTORCH_MEAN))
    std: list[float] = field(default_factory=lambda: list(PYTORCH_STD))
    to_rgb: bool = True
    size_divisor: int = 32
    semantic_scale: float = 0.125  #: HTC: the semantic label map is rescaled to P3
    samples_per_gpu: int = 2
    workers_per_gpu: int = 2


@dataclass
class ScheduleConfig:
    """Optimiser and learning-rate schedule (lr is for ``base_batch_size`` images per iteration)."""

    epochs: int = 12
    lr_steps: list[int] = field(default_factory=lambda: [8, 11])
    lr: float = 0.02
    base_batch_size: int = 16  #: 8 GPUs x 2 images (the metafile: 8x TITAN Xp)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    grad_clip: Optional[float] = None


@dataclass
class InitConfig:
    """Where initial weights come from."""

    pretrained: Optional[str] = None  #: "torchvision://resnet50", "open-mmlab://..." or None
    pretrained_url: Optional[str] = None  #: the file that string resolves to
    load_from: Optional[str] = None  #: URL of a COCO-pretrained mmdet detector checkpoint


@dataclass
class ReleaseConfig:
    """The preset's row of the results table and its released files."""

    row: int = 0
    config: str = ""  #: the mmdet3d v0.x config name (also the release folder and file stem)
    pretrain: str = "IN"
    schedule: str = "1x"
    mem_gb: Optional[float] = None
    box_ap: Optional[float] = None
    mask_ap: Optional[float] = None
    checkpoint_url: Optional[str] = None
    hash8: Optional[str] = None  #: first 8 hex digits of the file's SHA-256
    log_url: Optional[str] = None


@dataclass
class Preset:
    """A fully resolved preset."""

    name: str
    description: str = ""
    #: id of the state-dict manifest (``tests/fixtures/manifests/<id>.json``, the mmdet config
    #: whose key list this preset's model must equal); None for presets outside the table
    state_dict_manifest: Optional[str] = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    init: InitConfig = field(default_factory=InitConfig)
    release: Optional[ReleaseConfig] = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (what ``preset.yaml`` and checkpoint ``meta`` store)."""
        return dataclasses.asdict(self)

    @property
    def has_release(self) -> bool:
        """True when the row links a released checkpoint file."""
        return self.release is not None and bool(self.release.checkpoint_url)


# --------------------------------------------------------------------------- loading


def presets_dir() -> Path:
    """The folder holding the preset YAML files.

    Installed, it is the package ``nuimcli._presets``; run from a source checkout whose
    ``nuimcli`` shadows the installed one, it is the checkout's top-level ``presets/``.
    """
    source = Path(__file__).resolve().parent.parent / "presets"
    try:
        return Path(str(resources.files("nuimcli._presets")))
    except ModuleNotFoundError:
        return source


def _preset_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(presets_dir().glob("*.yaml"))}


def list_presets() -> list[str]:
    """Names of all public presets (bases, whose names start with ``_``, excluded), sorted by table row."""
    names = [n for n in _preset_files() if not n.startswith("_")]
    presets = [load_preset(n) for n in names]
    return [p.name for p in sorted(presets, key=lambda p: (p.release is None, p.release.row if p.release else 0, p.name))]


def presets_by_manifest() -> dict[str, list[str]]:
    """State-dict manifest id -> the public presets that name it, in table order (the first is
    the row the manifest was taken from; later rows share its architecture)."""
    out: dict[str, list[str]] = {}
    for name in list_presets():
        manifest = load_preset(name).state_dict_manifest
        if manifest:
            out.setdefault(manifest, []).append(name)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a preset must be a mapping of keys, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _raw_preset(name: str, files: dict[str, Path], chain: tuple[str, ...] = ()) -> tuple[dict[str, Any], Path]:
    if name not in files:
        public = [n for n in files if not n.startswith("_")]
        raise UserError(f"unknown preset '{name}'{suggest(name, public)}; `nuim presets` lists them")
    if name in chain:
        raise UserError(f"{files[name]}: 'base' chain loops: {' -> '.join(chain + (name,))}")
    path = files[name]
    raw = _read_yaml(path)
    base = raw.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise UserError(f"{path}: base: must be a preset name (a string)")
        base_raw, _ = _raw_preset(base, files, chain + (name,))
        base_raw.pop("name", None)
        base_raw.pop("description", None)
        raw = _deep_merge(base_raw, raw)
    return raw, path


def load_preset(name_or_path: str, overrides: list[str] | None = None) -> Preset:
    """Load, merge and validate a preset by name (or from a YAML file path), applying ``key=value`` overrides."""
    files = _preset_files()
    path = Path(name_or_path)
    if name_or_path not in files and path.suffix in (".yaml", ".yml") and path.exists():
        raw = _read_yaml(path)
        base = raw.pop("base", None)
        if base is not None:
            base_raw, _ = _raw_preset(str(base), files)
            base_raw.pop("description", None)
            raw = _deep_merge(base_raw, raw)
        raw.setdefault("name", path.stem)
        source = str(path)
    else:
        raw, fpath = _raw_preset(name_or_path, files)
        raw.setdefault("name", name_or_path)
        source = str(fpath)
    if overrides:
        raw = apply_overrides(raw, overrides)
        source += " (with --set overrides)"
    return preset_from_dict(raw, source)


#: Keys renamed since presets were first stored in checkpoints and ``preset.yaml``: old -> new.
_RENAMED_KEYS = {"arch": "state_dict_manifest"}


def preset_from_dict(raw: dict[str, Any], source: str = "<preset>") -> Preset:
    """Validate a plain dict (e.g. from a checkpoint's meta) into a :class:`Preset`.

    Top-level keys written under an older name (:data:`_RENAMED_KEYS`) are read under the new
    one, so checkpoints and work folders saved before a rename still load.
    """
    raw = dict(raw)
    for old, new in _RENAMED_KEYS.items():
        if old in raw and new not in raw:
            raw[new] = raw.pop(old)
    preset = build_dataclass(Preset, raw, source, "")
    validate_semantics(preset, source)
    return preset


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` strings (values parsed as YAML) to a raw preset dict.

    The key must exist in the preset schema; the result is validated by the caller.
    """
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value, e.g. schedule.lr=0.01")
        key, _, text = item.partition("=")
        key = key.strip()
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        parts = key.split(".")
        _check_schema_path(parts, item)
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return out


def _check_schema_path(parts: list[str], item: str) -> None:
    cls: Any = Preset
    for i, p in enumerate(parts):
        cls = unwrap_optional(cls)
        if not dataclasses.is_dataclass(cls):
            raise UserError(f"--set {item!r}: '{'.'.join(parts[:i])}' has no sub-keys")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if p not in fields:
            prefix = ".".join(parts[:i])
            opts = [f"{prefix}.{n}" if prefix else n for n in fields]
            raise UserError(f"--set {item!r}: unknown preset key '{'.'.join(parts[: i + 1])}'{suggest('.'.join(parts[: i + 1]), opts)}")
        cls = type_hints(cls)[p]


_STYLES = ("pytorch", "caffe")


def validate_semantics(preset: Preset, source: str = "") -> None:
    """Checks across fields that types alone cannot express (enumerations, list lengths)."""
    src = source or preset.name
    m = preset.model
    if m.detector not in DETECTORS:
        raise UserError(f"{src}: model.detector: must be one of {', '.join(DETECTORS)}, got {m.detector!r}")
    if m.backbone.style not in _STYLES:
        raise UserError(f"{src}: model.backbone.style: must be pytorch or caffe, got {m.backbone.style!r}")
    if len(m.backbone.dcn_stages) != 4:
        raise UserError(f"{src}: model.backbone.dcn_stages: needs 4 entries (one per stage)")
    spec = DETECTORS[m.detector]
    n = m.roi.num_stages
    if n < 1 or (n != 1 and not spec.cascade):
        raise UserError(f"{src}: model.roi.num_stages: {spec.display_name} has "
                        f"{'one RoI stage' if not spec.cascade else 'at least one RoI stage'}, got {n}")
    for k in ("target_stds", "stage_iou_thrs", "stage_loss_weights"):
        if len(getattr(m.roi, k)) != n:
            raise UserError(f"{src}: model.roi.{k}: needs {n} entries (model.roi.num_stages)")
    if m.semantic.enabled and not spec.hybrid:
        hybrid = " and ".join(s.display_name for s in DETECTORS.values() if s.hybrid)
        raise UserError(f"{src}: model.semantic.enabled: only {hybrid} has a semantic head")
    if len(preset.data.classes) != m.num_classes:
        raise UserError(f"{src}: data.classes: {len(preset.data.classes)} names for model.num_classes={m.num_classes}")
    if preset.data.multiscale_mode not in ("range", "value"):
        raise UserError(f"{src}: data.multiscale_mode: must be range or value")
    if len(preset.data.test_scale) != 2 or any(len(s) != 2 for s in preset.data.train_scales):
        raise UserError(f"{src}: data scales are [width, height] pairs")


# --------------------------------------------------------------------------- snapshot

SNAPSHOT_COMMAND = "python -m nuimcli.presets --snapshot tests/fixtures/presets_snapshot.yaml"


def snapshot_text() -> str:
    """Every public preset fully resolved (base + row + dataclass defaults), as one YAML document.

    The committed ``tests/fixtures/presets_snapshot.yaml`` is this text: a change to any preset
    file or default shows up as a readable diff of the resolved values. Presets are in table order,
    keys in schema order, lists of numbers on one line.
    """
    doc = {name: load_preset(name).to_dict() for name in list_presets()}
    header = (f"# Every preset fully resolved. Generated by `{SNAPSHOT_COMMAND}`;\n"
              "# do not edit: change presets/*.yaml (or the defaults in nuimcli/presets.py) and regenerate.\n")
    return header + yaml.dump(doc, Dumper=_SnapshotDumper, sort_keys=False, width=200, allow_unicode=True)


class _SnapshotDumper(yaml.SafeDumper):
    """Block style, except that a list of scalars stays on one line (``test_scale: [1600, 900]``):
    a diff line then shows the whole value next to its key."""

    def represent_list(self, data: list) -> yaml.Node:  # noqa: D102
        flow = all(not isinstance(v, (list, dict)) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_SnapshotDumper.add_representer(list, _SnapshotDumper.represent_list)


def _main(argv: list[str]) -> int:
    import sys

    from nuimcli.utils.io import atomic_write_text

    if not argv or argv[0] != "--snapshot" or len(argv) > 2:
        print("usage: python -m nuimcli.presets --snapshot [FILE]   (no FILE: print to stdout)", file=sys.stderr)
        return 2
    try:
        text = snapshot_text()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(argv) == 2:
        atomic_write_text(argv[1], text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
