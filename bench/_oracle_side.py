"""DEV-ONLY, runs inside the oracle venv (mmdet 3.3.0), never with the project's Python.

Given an mmdet checkpoint and an already-normalised, padded input tensor (.npy, [1, 3, H, W])
plus its meta (.json: img_shape, ori_shape, scale_factor), runs mmdet from that tensor and
dumps RPN proposals and final detections (boxes, scores, labels, binary masks) to .npz, so
bench/oracle_parity.py --same-input can compare the models without any preprocessing noise.

    ORACLE_PY bench/_oracle_side.py ARCH CKPT INPUT.npy META.json OUT.npz
    ORACLE_PY bench/_oracle_side.py --preprocess IMAGE CFG.json OUT.npy

``--preprocess`` applies mmcv's own ``imrescale`` (keep ratio, bilinear) + ``imnormalize`` (the
functions mmdet 2.x's Resize/Normalize call) + zero padding to a multiple of 32, for comparing
with nuimcli's preprocessing bit for bit.
"""

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


def main() -> None:
    if sys.argv[1] == "--preprocess":
        return preprocess()
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
    with torch.no_grad():
        feats = model.extract_feat(x)
        rpn = model.rpn_head.predict(feats, [ds], rescale=False)[0]
        dump["proposals"] = torch.cat([rpn.bboxes, rpn.scores[:, None]], 1).numpy()
        res = model.roi_head.predict(feats, [rpn], [ds], rescale=True)[0]
    dump["boxes"] = res.bboxes.numpy()
    dump["scores"] = res.scores.numpy()
    dump["labels"] = res.labels.numpy()
    if "masks" in res:
        dump["masks"] = res.masks.numpy().astype(bool)
    np.savez_compressed(out, **dump)


if __name__ == "__main__":
    main()
