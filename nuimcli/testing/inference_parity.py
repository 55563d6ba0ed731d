"""Oracle parity: rebuild a seeded, calibrated model and trace its intermediate tensors.

Shared by ``tests/models/test_parity.py`` (which compares against committed fixtures made with
the real mmdet) and ``bench/make_parity_fixtures.py`` (which makes them), so both build the
weights through the same code path; :mod:`nuimcli.testing.parity_compare` compares. Nothing
here imports mmdet.

What is traced (:func:`trace`), all before any discrete decision where possible, because a
tensor compared before NMS shows a numeric drift long before it flips a detection:

* ``rpn_boxes`` / ``rpn_scores`` / ``rpn_levels``: the RPN candidates handed to NMS (per level
  top ``nms_pre`` by score, decoded, clipped, small boxes dropped), network-input frame;
* ``proposals`` ``[K, 5]``: the RPN output (x1, y1, x2, y2, score);
* ``stage{s}_cls`` ``[K, C + 1]``: box-head logits of every RoI stage; ``stage{s}_rois``
  ``[K, 4]`` (s >= 1): the RoIs stage ``s`` sees (the previous stage's regressed boxes);
* ``roi_boxes`` ``[K, 4C or 4]`` / ``roi_scores`` ``[K, C + 1]``: the last stage's decoded boxes
  (original frame) and softmax scores handed to the per-class NMS;
* ``semantic`` ``[S, H/8, W/8]``: HTC's semantic logits (when the model has the head);
* the final :class:`~nuimcli.models.detector.Prediction`.

The RoI stages can be fed given proposals (the oracle's) so that their rows line up with the
oracle's one for one; otherwise an RPN difference would shuffle every later tensor.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import nn

from nuimcli.data.structures import ImageMeta
from nuimcli.data.transforms import pad_batch
from nuimcli.testing.parity_compare import Report
from nuimcli.testing.random_weights import calibrate_bn, calibrate_heads, randomize

# --------------------------------------------------------------------------- the model
# A ResNet whose residual branches are as strong as its identity path, with random weights, is
# chaotic: a 1e-6 relative change of the input moves ResNet-101's C5 by 6e-4, so two machines'
# float rounding would move boxes by hundredths of a pixel. Scaling each block's last BN by
# 0.25 (trained ResNets have weak residual branches too; cf. zero-init-residual) brings that
# gain from ~600 to ~20.
RESIDUAL_SCALE = 0.25


def calibration_rois(img_shape: Sequence[int]) -> torch.Tensor:
    """Fixed RoIs ``[N, 5]`` (batch index 0) on which the box and mask heads are calibrated.

    Boxes of 3 aspect ratios and 2 sizes (32 and 128 px, so the FPN levels P2 and P3 are both
    used) centred on a 2 x 2 grid over the image, clipped to it: 24 RoIs, enough for a std
    estimate (every mask head runs on them, ~10 ms per RoI on 2 cores). Fixed rather than the
    model's own proposals or detections: calibrating on those would make the weights depend on
    which candidates win a top-k cut, so a float difference at the 1e-7 level between two
    machines could redraw the head scales by percents.
    """
    h, w = (float(v) for v in img_shape[:2])
    boxes = []
    for cy in ((np.arange(2) + 0.5) / 2 * h):
        for cx in ((np.arange(2) + 0.5) / 2 * w):
            for size in (32.0, 128.0):
                for ratio in (0.5, 1.0, 2.0):  # height / width
                    bw, bh = size / ratio ** 0.5, size * ratio ** 0.5
                    boxes.append((max(cx - bw / 2, 0.0), max(cy - bh / 2, 0.0),
                                  min(cx + bw / 2, w), min(cy + bh / 2, h)))
    b = torch.tensor(boxes, dtype=torch.float32)
    return torch.cat([b.new_zeros((len(b), 1)), b], dim=1)


class BackboneCache:
    """Calibrated backbones shared between architectures.

    :func:`~nuimcli.testing.random_weights.randomize` draws the backbone's weights first, so
    two presets with the same backbone block and seed get identical backbone weights, hence
    identical BN statistics and C2..C5 on the same input. The first model with a backbone
    computes them; later ones check that their weights are the same (fingerprint) and reuse
    the statistics and outputs (the X-101 64x4d DCN forward alone takes seconds on 2 cores).
    Holds buffers and outputs only, not weights (a few MB per backbone).
    """

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[np.ndarray, dict[str, torch.Tensor], list[torch.Tensor]]] = {}

    @staticmethod
    def key(preset, seed: int, dcn_offset_std: float, batch: torch.Tensor) -> tuple:
        """What decides a calibrated backbone: its config, the seed, the DCN offset std, the input."""
        return (repr(preset.model.backbone), int(seed), float(dcn_offset_std),
                hashlib.sha1(batch.numpy().tobytes()).hexdigest())

    def get(self, key: tuple, backbone: nn.Module) -> Optional[list[torch.Tensor]]:
        """Load the cached BN statistics into ``backbone`` and return its outputs, or None."""
        if key not in self._entries:
            return None
        weights, buffers, outputs = self._entries[key]
        if not np.array_equal(fingerprint(dict(backbone.named_parameters()))[1], weights):
            raise RuntimeError("backbone weights differ from the cached backbone with the same seed")
        backbone.load_state_dict(buffers, strict=False)
        return outputs

    def put(self, key: tuple, backbone: nn.Module, outputs: list[torch.Tensor]) -> None:
        """Remember a calibrated backbone's statistics and outputs."""
        buffers = {k: v.clone() for k, v in backbone.named_buffers()}
        self._entries[key] = (fingerprint(dict(backbone.named_parameters()))[1], buffers, outputs)


class Regenerated(NamedTuple):
    """What :func:`calibrated_model` returns."""

    model: nn.Module  # the calibrated detector, eval mode
    backbone_out: list[torch.Tensor]  # its C2..C5 on the image
    drawn: np.ndarray  # fingerprint (see fingerprint()) of the state dict as drawn, before calibration


def calibrated_model(preset_name: str, image: np.ndarray, *, seed: int, test_scale: Sequence[int],
                     dcn_offset_std: float, cache: Optional[BackboneCache] = None,
                     channels_last: bool = False) -> Regenerated:
    """The preset's detector with seeded random weights calibrated on ``image``.

    Weights come from :func:`~nuimcli.testing.random_weights.randomize` (``seed``), with the
    residual branches damped by :data:`RESIDUAL_SCALE`; BN statistics are set from a forward
    of the backbone on ``image`` resized to ``test_scale`` (``(long, short)``, replacing the
    preset's 1600x900 so a small image is not upscaled); the neck and head scales from one pass
    of the neck, the RPN head and every box and mask stage on :func:`calibration_rois` (no NMS
    or top-k anywhere, so the weights are a continuous function of the float arithmetic: two
    machines get them equal to ~1e-6 relative). The calibration runs through the model's own
    forward, so a change of the model can show as changed calibrated weights; the fingerprint
    of the weights as drawn tells the two apart (:func:`check_regenerated`). The global torch
    RNG is left as it was. ``channels_last`` runs the backbone channels-last (another summation
    order than mmdet's NCHW: for measuring how far float noise moves the outputs).
    """
    from nuimcli.models.build import build_model
    from nuimcli.presets import load_preset

    long_edge, short_edge = (int(v) for v in test_scale)
    preset = load_preset(preset_name, [f"data.test_scale=[{long_edge},{short_edge}]"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # build_model's own init; every parameter is redrawn below
        model = build_model(preset)
    model.backbone.channels_last = channels_last  # False: mmdet's layout and summation order
    randomize(model, seed=seed, dcn_offset_std=dcn_offset_std)
    _damp_residual_branches(model.backbone, RESIDUAL_SCALE)
    drawn = fingerprint(model.state_dict())[1]
    model.eval()
    batch, meta = network_input(model, image)
    key = BackboneCache.key(preset, seed, dcn_offset_std, batch) + (channels_last,)
    c = cache.get(key, model.backbone) if cache is not None else None
    if c is None:
        c = list(calibrate_bn(model.backbone, batch))
        if cache is not None:
            cache.put(key, model.backbone, c)
    calibrate_heads(model, lambda: _calibration_forward(model, c, meta))
    return Regenerated(model, c, drawn)


@torch.no_grad()
def _damp_residual_branches(backbone: nn.Module, scale: float) -> None:
    """Multiply the affine weight and bias of every residual block's last BN by ``scale``."""
    for m in backbone.modules():
        if hasattr(m, "last_norm") and callable(m.last_norm):
            bn = m.last_norm()
            bn.weight.mul_(scale)
            bn.bias.mul_(scale)


@torch.no_grad()
def _calibration_forward(model: nn.Module, c: Sequence[torch.Tensor], meta: ImageMeta) -> None:
    """Every layer after the backbone once, on fixed RoIs (see :func:`calibrated_model`)."""
    feats = list(model.neck(list(c)))
    model.rpn_head(feats)
    roi = model.roi_head
    _, semantic_feat = roi.semantic_forward(feats)
    rois = calibration_rois(meta.img_shape)
    for stage in range(roi.num_stages):
        roi.bbox_forward(stage, feats, rois, semantic_feat)
    if roi.with_mask:  # the test-time path: every mask head once (HTC: chained by info flow)
        roi.mask_probs(feats, rois, torch.zeros(len(rois), dtype=torch.long), semantic_feat)


@torch.no_grad()
def _heads_forward(model: nn.Module, c: Sequence[torch.Tensor], meta: ImageMeta, proposals: Optional[torch.Tensor] = None):
    """Detector.simple_test from the backbone outputs on: FPN, RPN, RoI head (one image)."""
    feats = list(model.neck(list(c)))
    cls, reg = model.rpn_head(feats)
    props = model.rpn_head.get_proposals(cls, reg, [meta.img_shape])[0]
    det = model.roi_head.simple_test(feats, [props if proposals is None else proposals], [meta])[0]
    return props, det


def network_input(model: nn.Module, image: np.ndarray) -> tuple[torch.Tensor, ImageMeta]:
    """``(padded input [1, 3, H, W], meta)`` exactly as the model's own predict builds them."""
    x, meta = model.preprocess(image)
    return pad_batch([x], model.size_divisor), meta


def fingerprint(tensors: dict[str, torch.Tensor], samples: int = 4096) -> tuple[list[str], np.ndarray]:
    """``(names, [N, 2] float64 (sum, sum of |x|))`` of every floating tensor of a state dict,
    over at most ~``samples`` evenly strided elements of each (summing all 140M weights of the
    largest model takes seconds on 2 cores; a redrawn or rescaled tensor shows in any sample).

    Enough to tell "the weights were regenerated differently" from "the model computes
    differently" without storing the weights.
    """
    names, stats = [], []
    for k, t in tensors.items():
        if t.is_floating_point():
            flat = t.detach().reshape(-1)
            d = flat[:: max(1, flat.numel() // samples)].double()
            names.append(k)
            stats.append((float(d.sum()), float(d.abs().sum())))
    return names, np.asarray(stats, dtype=np.float64).reshape(-1, 2)


def fingerprint_diff(names: Sequence[str], stats: np.ndarray, ref_names: Sequence[str],
                     ref_stats: np.ndarray) -> tuple[float, str]:
    """Worst relative difference of two fingerprints and the tensor where it is (inf if the
    names differ)."""
    if list(names) != list(ref_names):
        return float("inf"), "state-dict names differ"
    scale = np.maximum(np.abs(ref_stats[:, 1:2]), 1e-12)  # relative to sum |x|
    rel = np.abs(stats - ref_stats) / scale
    i = int(rel.max(1).argmax()) if len(rel) else 0
    return (float(rel.max()) if len(rel) else 0.0), (names[i] if len(names) else "")


# --------------------------------------------------------------------------- tracing
@dataclass
class Trace:
    """Intermediate tensors of one image (see the module docstring); numpy, float32."""

    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    prediction: object = None
    meta: Optional[ImageMeta] = None
    mask_probs: Optional[torch.Tensor] = None  # [N, 28, 28], before pasting
    mask_boxes: Optional[torch.Tensor] = None  # [N, 4], the boxes they are pasted into
    mask_thr: float = 0.5

    def mask_ties(self, i: int, hair: float) -> np.ndarray:
        """bool ``[H, W]``: pixels whose pasted probability for detection ``i`` is within
        ``hair`` of the mask threshold (pasted as :func:`~nuimcli.models.roi_heads.paste_masks`)."""
        from nuimcli.models.roi_heads import paste_masks

        h, w = self.prediction.masks.shape[1:]
        p, b = self.mask_probs[i: i + 1], self.mask_boxes[i: i + 1]
        lo = paste_masks(p, b, h, w, self.mask_thr - hair)[0]
        hi = paste_masks(p, b, h, w, self.mask_thr + hair)[0]
        return (lo & ~hi).numpy()


@contextlib.contextmanager
def _recording(module, attr: str, sink: list) -> Iterator[None]:
    """Replace ``module.attr`` (a function) by a wrapper that appends its arguments to ``sink``."""
    orig = getattr(module, attr)

    def wrapper(*args, **kwargs):
        sink.append(args)
        return orig(*args, **kwargs)

    setattr(module, attr, wrapper)
    try:
        yield
    finally:
        setattr(module, attr, orig)


def _as_list(m) -> list:
    return list(m) if isinstance(m, nn.ModuleList) else [m]


@torch.no_grad()
def trace(model: nn.Module, image: np.ndarray, backbone_out: Optional[Sequence[torch.Tensor]] = None,
          proposals: Optional[np.ndarray] = None) -> Trace:
    """Run ``model`` on ``image`` as ``Detector.predict`` does, keeping the tensors listed in the
    module docstring.

    Args:
        backbone_out: C2..C5 of this image if already known (:func:`calibrated_model` returns
            them); else the backbone runs.
        proposals: ``[K, 5]`` (network-input frame): run the RoI head on these instead of the
            model's own proposals (whose RPN tensors are still traced).
    """
    from nuimcli.models import rpn as rpn_mod
    from nuimcli.models.roi_heads import postprocess as roi_mod  # where the RoI heads call multiclass_nms

    batch, meta = network_input(model, image)
    if backbone_out is None:
        backbone_out = list(model.backbone(batch))
    rpn_calls: list = []
    nms_calls: list = []
    stage_out: list = []
    stage_rois: list = []
    semantic: list = []
    roi_head = model.roi_head
    hooks = [h.register_forward_hook(lambda m, a, o: stage_out.append(o)) for h in _as_list(roi_head.bbox_head)]
    hooks += [e.register_forward_pre_hook(lambda m, a: stage_rois.append(a[1]))
              for e in _as_list(roi_head.bbox_roi_extractor)]
    if roi_head.with_semantic:
        hooks.append(roi_head.semantic_head.register_forward_hook(lambda m, a, o: semantic.append(o[0])))
    rpn_out: list = []
    hooks.append(model.rpn_head.register_forward_hook(lambda m, a, o: rpn_out.append(o[0])))
    given = None if proposals is None else torch.from_numpy(np.asarray(proposals, np.float32))
    try:
        with _recording(rpn_mod, "batched_nms", rpn_calls), _recording(roi_mod, "multiclass_nms", nms_calls):
            props, det = _heads_forward(model, backbone_out, meta, given)
    finally:
        for h in hooks:
            h.remove()
    t: dict[str, np.ndarray] = {}
    boxes, scores, levels = rpn_calls[0][:3]
    t["rpn_boxes"], t["rpn_scores"] = boxes.numpy(), scores.numpy()
    t["rpn_levels"] = levels.numpy().astype(np.int8)
    t["rpn_anchors_per_level"] = np.asarray([c[0].numel() for c in rpn_out[0]], np.int64)
    t["proposals"] = props.numpy()
    for s, (cls_s, _) in enumerate(stage_out):
        t[f"stage{s}_cls"] = cls_s.numpy()
        if s > 0:
            t[f"stage{s}_rois"] = stage_rois[s][:, 1:].numpy()
    t["roi_boxes"], t["roi_scores"] = nms_calls[0][0].numpy(), nms_calls[0][1].numpy()
    if semantic:
        t["semantic"] = semantic[0][0].numpy()
    return Trace(t, model.postprocess(det, meta), meta, det.mask_probs, det.mask_boxes,
                 roi_head.test_cfg.mask_thr_binary)



# --------------------------------------------------------------------------- regenerated as at fixture time?
DRAWN_REL_TOL = 1e-6  # drawn weights are exact; only the damping's multiply could round
WEIGHT_REL_TOL = 1e-5  # calibrated: measured 1e-6 between summation orders


@torch.no_grad()
def check_regenerated(rep: Report, regen: Regenerated, image: np.ndarray, fx: dict) -> None:
    """Our regenerated weights and input against the fingerprints stored with the fixture.

    Figures ``drawn_rel`` / ``weights_rel`` / ``input_rel``: worst relative difference of a
    tensor's (sampled) sum or sum of |x|. Failures say which of three things changed: the
    weights as drawn (``randomize``, the seed, the parameter order: regenerate the fixtures if
    meant), the calibrated weights only (the calibration forward, i.e. the model's backbone /
    neck / heads, computes differently: most model changes show here first), or the input
    (preprocessing).
    """
    names, stats = fingerprint(regen.model.state_dict())
    ref_names = [str(n) for n in fx["weight_names"]]
    drawn_rel, drawn_where = fingerprint_diff(names, regen.drawn, ref_names, fx["weight_stats_drawn"])
    rel, where = fingerprint_diff(names, stats, ref_names, fx["weight_stats"])
    rep.worst("drawn_rel", drawn_rel)
    rep.worst("weights_rel", rel)
    if drawn_rel > DRAWN_REL_TOL:
        rep.failures.append(f"weights drawn differently from the fixture's (worst {drawn_where}: {drawn_rel:.3g}"
                            " relative): randomize(), the seed or the parameter order changed; if meant,"
                            " regenerate the fixtures (bench/make_parity_fixtures.py)")
    elif rel > WEIGHT_REL_TOL:
        first = next(n for n, a, b in zip(names, stats, fx["weight_stats"])
                     if np.abs(a - b).max() > WEIGHT_REL_TOL * max(abs(b[1]), 1e-12))
        rep.failures.append(f"same draws, other calibrated weights (first {first}, worst {where}: {rel:.3g}"
                            " relative): the calibration forward through the model computes differently,"
                            " i.e. the model (or the calibration) changed")
    batch, _ = network_input(regen.model, image)
    _, ins = fingerprint({"input": batch}, samples=batch.numel())
    irel = float(np.abs(ins[0] - fx["input_stats"]).max() / max(abs(float(fx["input_stats"][1])), 1e-12))
    rep.worst("input_rel", irel)
    if irel > 1e-6:
        rep.failures.append(f"network input differs from the fixture's ({irel:.3g} relative): preprocessing changed")
