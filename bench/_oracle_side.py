"""DEV-ONLY, runs inside the oracle venv (mmdet 3.3.0), never with the project's Python.

Given an mmdet checkpoint and an already-normalised, padded input tensor (.npy, [1, 3, H, W])
plus its meta (.json: img_shape, ori_shape, scale_factor), runs mmdet from that tensor and
dumps RPN proposals and final detections (boxes, scores, labels, binary masks) to .npz, so
bench/oracle_parity.py --same-input can compare the models without any preprocessing noise.
It also dumps the tensors that nuimcli.testing.inference_parity.trace records on our side
(bench/make_parity_fixtures.py stores them as the parity test's fixtures):

* ``rpn_boxes`` / ``rpn_scores`` / ``rpn_levels``: the arguments of the RPN's ``batched_nms``;
* ``stage{s}_cls``: each box head's logits; ``stage{s}_rois`` (s >= 1): the RoIs stage s sees;
* ``roi_boxes`` / ``roi_scores``: the arguments of the last box head's ``multiclass_nms``
  (boxes in original-image pixels, as mmdet 2.x has them there);
* ``semantic``: HTC's semantic logits (with the semantic head).

    ORACLE_PY bench/_oracle_side.py ARCH CKPT INPUT.npy META.json OUT.npz
    ORACLE_PY bench/_oracle_side.py --preprocess IMAGE CFG.json OUT.npy
    ORACLE_PY bench/_oracle_side.py --predict-at W H ARCH CKPT IMAGE [predict.py options]

``--preprocess`` applies mmcv's own ``imrescale`` (keep ratio, bilinear) + ``imnormalize`` (the
functions mmdet 2.x's Resize/Normalize call) + zero padding to a multiple of 32, for comparing
with nuimcli's preprocessing bit for bit. ``--predict-at`` runs the oracle's predict.py with
another test scale than 1600x900 (for a preset run with ``--set data.test_scale=...``).
"""

import contextlib
import json
import sys

import numpy as np
import torch

sys.path.insert(0, "/work/shared/oracle")
import nuim_configs as C  # noqa: E402
from predict import htc_merge_like_mmdet2  # noqa: E402


def preprocess() -> None:
    import cv2
    import mmcv

    image, cfg_path, out = sys.argv[2:5]
    cfg = json.loads(open(cfg_path).read())
    img = cv2.imread(image, cv2.IMREAD_COLOR)
    img = mmcv.imrescale(img, tuple(cfg["test_scale"]), interpolation="bilinear")
    img = mmcv.imnormalize(img, np.array(cfg["mean"], np.float32), np.array(cfg["std"], np.float32), cfg["to_rgb"])
    h, w = img.shape[:2]
    d = cfg["size_divisor"]
    ph, pw = -(-h // d) * d, -(-w // d) * d
    padded = np.zeros((ph, pw, 3), np.float32)
    padded[:h, :w] = img
    np.save(out, padded.transpose(2, 0, 1)[None])


@contextlib.contextmanager
def _recorded_calls(model):
    """Record the pre-NMS tensors and per-stage box-head outputs of ``model`` (an mmdet detector).

    The two NMS functions are replaced where mmdet's heads look them up (module globals), and
    forward hooks sit on every box head / box RoI extractor / the semantic head.
    """
    import mmdet.models.dense_heads.rpn_head as rpn_mod
    import mmdet.models.roi_heads.bbox_heads.bbox_head as bbox_mod

    calls = dict(rpn_nms=[], roi_nms=[], stage_out=[], stage_rois=[], semantic=[])
    originals = [(rpn_mod, "batched_nms", "rpn_nms"), (bbox_mod, "multiclass_nms", "roi_nms")]
    saved = []
    for mod, name, key in originals:
        orig = getattr(mod, name)
        saved.append((mod, name, orig))

        def wrapper(*args, _orig=orig, _key=key, **kwargs):
            calls[_key].append(args)
            return _orig(*args, **kwargs)

        setattr(mod, name, wrapper)
    rh = model.roi_head
    heads = rh.bbox_head if isinstance(rh.bbox_head, torch.nn.ModuleList) else [rh.bbox_head]
    extractors = (rh.bbox_roi_extractor if isinstance(rh.bbox_roi_extractor, torch.nn.ModuleList)
                  else [rh.bbox_roi_extractor])
    hooks = [h.register_forward_hook(lambda m, a, o: calls["stage_out"].append(o)) for h in heads]
    hooks += [e.register_forward_pre_hook(lambda m, a: calls["stage_rois"].append(a[1])) for e in extractors]
    if getattr(rh, "semantic_head", None) is not None:
        hooks.append(rh.semantic_head.register_forward_hook(lambda m, a, o: calls["semantic"].append(o[0])))
    try:
        yield calls
    finally:
        for h in hooks:
            h.remove()
        for mod, name, orig in saved:
            setattr(mod, name, orig)


def predict_at() -> None:
    """The oracle's predict.py end to end, with its test resize bound replaced by (W, H)."""
    import predict

    w, h = int(sys.argv[2]), int(sys.argv[3])
    for step in C.TEST_PIPELINE:  # full_cfg() copies the pipeline when predict.py calls it
        if step["type"] == "Resize":
            step["scale"] = (w, h)
    sys.argv = ["predict.py"] + sys.argv[4:]
    predict.main()


def main() -> None:
    if sys.argv[1] == "--preprocess":
        return preprocess()
    if sys.argv[1] == "--predict-at":
        return predict_at()
    arch, ckpt, inp, meta_path, out = sys.argv[1:6]
    from mmdet.apis import init_detector
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules(init_default_scope=True)
    model = init_detector(Config(C.full_cfg(arch)), ckpt, device="cpu")
    htc_merge_like_mmdet2(model)
    x = torch.from_numpy(np.load(inp))
    meta = json.loads(open(meta_path).read())
    ph, pw = x.shape[-2:]
    ds = DetDataSample(metainfo=dict(
        img_shape=tuple(meta["img_shape"]), ori_shape=tuple(meta["ori_shape"]),
        scale_factor=tuple(meta["scale_factor"][:2]), pad_shape=(ph, pw), batch_input_shape=(ph, pw)))
    dump = {}
    with torch.no_grad(), _recorded_calls(model) as calls:
        feats = model.extract_feat(x)
        rpn = model.rpn_head.predict(feats, [ds], rescale=False)[0]
        dump["proposals"] = torch.cat([rpn.bboxes, rpn.scores[:, None]], 1).numpy()
        res = model.roi_head.predict(feats, [rpn], [ds], rescale=True)[0]
    boxes, scores, levels = calls["rpn_nms"][0][:3]
    dump.update(rpn_boxes=boxes.numpy(), rpn_scores=scores.numpy(), rpn_levels=levels.numpy().astype(np.int8))
    for s_, (cls, _) in enumerate(calls["stage_out"]):
        dump[f"stage{s_}_cls"] = cls.numpy()
        if s_ > 0:
            dump[f"stage{s_}_rois"] = calls["stage_rois"][s_][:, 1:].numpy()
    roi_boxes, roi_scores = calls["roi_nms"][0][:2]
    if model.roi_head.with_mask:
        # mmdet 3.x runs this NMS in the network frame when there are masks (it rescales after
        # the mask head); 2.x, whose order we follow, in the original frame: store that frame.
        sf = roi_boxes.new_tensor(meta["scale_factor"][:2]).repeat(2)
        roi_boxes = (roi_boxes.view(roi_boxes.size(0), -1, 4) / sf).view(roi_boxes.size(0), -1)
    dump["roi_boxes"], dump["roi_scores"] = roi_boxes.numpy(), roi_scores.numpy()
    if calls["semantic"]:
        dump["semantic"] = calls["semantic"][0][0].numpy()
    dump["boxes"] = res.bboxes.numpy()
    dump["scores"] = res.scores.numpy()
    dump["labels"] = res.labels.numpy()
    if "masks" in res:
        dump["masks"] = res.masks.numpy().astype(bool)
    np.savez_compressed(out, **dump)


if __name__ == "__main__":
    main()
