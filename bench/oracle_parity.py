"""DEV-ONLY parity check against real mmdet (the oracle in ../shared/oracle). Not a test, not shipped.

For each architecture (one preset per distinct state-dict manifest): build our model, draw
seeded random weights with BN statistics and head scales calibrated on the image
(nuimcli/testing/random_weights.py), save it with our ``save_checkpoint`` (mmdet format), run the oracle's
``predict.py`` (mmdet 3.3.0 in its own venv, with mmdet 2.x's HTC mask merge) on the same image,
and compare:

* backbone C2..C5 and FPN P2..P6 features (max abs difference, relative to the tensor's max);
* detections end to end (each side its own preprocessing): one-to-one matching of the top-100
  (same label, greedy by score), max box difference (px), max score difference, min mask IoU;
* with ``--same-input``: our preprocessing vs mmcv's ``imrescale`` + ``imnormalize`` + pad (what
  mmdet 2.x's test pipeline calls), then both models run from *our* normalised tensor
  (bench/_oracle_side.py in the oracle venv): RPN proposals and final detections. This isolates
  the model from preprocessing differences (mmdet 3.3 normalises in torch, 2.x with mmcv).

Targets (issue 4): boxes within 0.01 px, scores within 1e-4, mask IoU >= 0.99, all matched.
Detections are reported as "matched M/T" with T counting every detection of either side that
found no partner too (the box / score / IoU figures are over the matched pairs), per
architecture and, on the last lines, over all of them.

    .venv/bin/python bench/oracle_parity.py --same-input          # all 10 architectures, 1600x900
    .venv/bin/python bench/oracle_parity.py --same-input --arch mask-rcnn_r50_fpn_1x_nuim --width 1000 --height 700
    .venv/bin/python bench/oracle_parity.py --features-only       # backbone + FPN only
    .venv/bin/python bench/oracle_parity.py --same-input --width 400 --height 240 --set data.test_scale=[320,192]

The committed CI fixtures (tests/models/test_parity.py) come from bench/make_parity_fixtures.py.

Needs the oracle venv (``bash /work/shared/oracle/setup.sh``; ``--oracle-python`` to point at it).
The project never imports mmdet; this script only runs the oracle as a subprocess.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nuimcli.testing.random_weights import calibrate_bn, calibrate_heads, randomize, synthetic_image  # noqa: E402

from nuimcli.data.transforms import normalize, pad_batch, resize_keep_ratio, to_chw_tensor  # noqa: E402
from nuimcli.checkpoints import save_checkpoint  # noqa: E402
from nuimcli.presets import load_preset, presets_by_manifest  # noqa: E402

DEFAULT_ORACLE = Path.home() / ".cache/nuim-oracle/venv/bin/python"
ORACLE_PREDICT = Path("/work/shared/oracle/predict.py")


def arch_presets() -> dict[str, str]:
    """architecture (state-dict manifest id) -> the first preset (table order) that names it."""
    return {manifest: names[0] for manifest, names in presets_by_manifest().items()}


def chosen_archs(requested: list[str] | None) -> dict[str, str]:
    """``arch_presets()`` restricted to ``requested`` (all when empty); exits naming an unknown one."""
    archs = arch_presets()
    unknown = [a for a in requested or [] if a not in archs]
    if unknown:
        sys.exit(f"unknown arch {unknown}; choose from {list(archs)}")
    return {a: archs[a] for a in requested} if requested else archs


class _BackboneNeck(nn.Module):
    def __init__(self, preset):
        super().__init__()
        from nuimcli.models.build import build_backbone, build_neck

        self.backbone = build_backbone(preset.model.backbone)
        self.neck = build_neck(self.backbone.out_channels, preset.model.fpn_channels)


def build(preset, features_only: bool) -> nn.Module:
    if features_only:
        return _BackboneNeck(preset)
    from nuimcli.models.build import build_model

    return build_model(preset)


def preprocess(img: np.ndarray, preset) -> torch.Tensor:
    d = preset.data
    resized, _ = resize_keep_ratio(img, d.test_scale)
    return pad_batch([to_chw_tensor(normalize(resized, d.mean, d.std, d.to_rgb))], d.size_divisor)


def run_oracle(python: Path, arch: str, ckpt: Path, image: Path, out_json: Path, feats: Path,
               test_scale: tuple[int, int] = (1600, 900)) -> float:
    t0 = time.perf_counter()
    args = [arch, str(ckpt), str(image), "--out", str(out_json), "--dump-features", str(feats)]
    if tuple(test_scale) == (1600, 900):
        cmd = [str(python), str(ORACLE_PREDICT)] + args
    else:  # the oracle's config says 1600x900; _oracle_side.py replaces it
        side = Path(__file__).resolve().parent / "_oracle_side.py"
        cmd = [str(python), str(side), "--predict-at", str(test_scale[0]), str(test_scale[1])] + args
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"oracle failed ({' '.join(cmd)}):\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def compare_features(ours: dict[str, torch.Tensor], theirs: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """name -> (max abs diff, max abs diff / max abs value)."""
    out = {}
    for k, t in ours.items():
        a = t.detach().numpy()
        b = theirs[k]
        if a.shape != b.shape:
            out[k] = (float("inf"), float("inf"))
            continue
        d = float(np.abs(a - b).max())
        out[k] = (d, d / max(float(np.abs(b).max()), 1e-12))
    return out


def _rle_decode(m: dict) -> np.ndarray:
    from pycocotools import mask as mask_util

    return mask_util.decode({"size": m["size"], "counts": m["counts"].encode()}).astype(bool)


def compare_detections(pred, theirs: list[dict], match_px: float = 2.0) -> dict:
    """Greedy one-to-one matching by score (same label, nearest box); stats over matched pairs."""
    ob = np.asarray(pred.boxes, dtype=np.float64).reshape(-1, 4)
    os_ = np.asarray(pred.scores, dtype=np.float64)
    ol = np.asarray(pred.labels)
    used = np.zeros(len(ob), bool)
    box_d, score_d, ious, unmatched_theirs = [], [], [], 0
    worst = (1.0, 0, 0)  # (IoU, differing pixels, union pixels) of the worst mask
    for d in sorted(theirs, key=lambda d: -d["score"]):
        tb = np.asarray(d["bbox"], dtype=np.float64)
        cand = np.where((~used) & (ol == d["label"]))[0]
        if len(cand) == 0:
            unmatched_theirs += 1
            continue
        diffs = np.abs(ob[cand] - tb).max(1) + 1e3 * np.abs(os_[cand] - d["score"])
        j = cand[int(np.argmin(diffs))]
        bd = float(np.abs(ob[j] - tb).max())
        if bd > match_px:
            unmatched_theirs += 1
            continue
        used[j] = True
        box_d.append(bd)
        score_d.append(abs(float(os_[j]) - d["score"]))
        if pred.masks is not None and "mask" in d:
            a, b = pred.masks[j], _rle_decode(d["mask"])
            union = int(np.logical_or(a, b).sum())
            iou = 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
            ious.append(iou)
            if iou < worst[0]:
                worst = (iou, int(np.logical_xor(a, b).sum()), union)
    return dict(
        ours=len(ob),
        theirs=len(theirs),
        matched=len(box_d),
        unmatched_ours=int((~used).sum()),
        unmatched_theirs=unmatched_theirs,
        max_box_px=max(box_d) if box_d else float("nan"),
        max_score=max(score_d) if score_d else float("nan"),
        min_mask_iou=min(ious) if ious else float("nan"),
        mean_mask_iou=float(np.mean(ious)) if ious else float("nan"),
        masks_below_099=int(sum(i < 0.99 for i in ious)),
        worst_mask_xor_union=[worst[1], worst[2]],
    )


def _matched(d: dict) -> str:
    """"matched/total" where total counts every detection of either side: an unmatched one of
    ours or of mmdet's shows (the box/score/IoU figures are over matched pairs only)."""
    total = d["matched"] + d["unmatched_theirs"] + d["unmatched_ours"]
    return f"{d['matched']}/{total} (ours {d['ours']}, mmdet {d['theirs']})"


def _total(ds: list[dict]) -> dict:
    return {k: sum(d[k] for d in ds) for k in ("matched", "unmatched_theirs", "unmatched_ours", "ours", "theirs")}


def preprocessing_check(model, preset, img: np.ndarray, image_path: Path, args, work: Path) -> float:
    """Max abs difference between our preprocessing and mmcv's imrescale + imnormalize + pad."""
    d = preset.data
    cfg = work / "preprocess.json"
    cfg.write_text(json.dumps(dict(test_scale=list(d.test_scale), mean=list(d.mean), std=list(d.std),
                                   to_rgb=d.to_rgb, size_divisor=d.size_divisor)))
    out = work / "preprocess.npy"
    cmd = [str(args.oracle_python), str(Path(__file__).resolve().parent / "_oracle_side.py"), "--preprocess",
           str(image_path), str(cfg), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"oracle preprocessing failed:\n{r.stderr[-3000:]}")
    theirs = np.load(out)
    x, _ = model.preprocess(img)
    ours = pad_batch([x], d.size_divisor).numpy()
    if ours.shape != theirs.shape:
        return float("inf")
    return float(np.abs(ours - theirs).max())


def same_input_check(model, preset, img: np.ndarray, arch: str, ckpt: Path, args, work: Path) -> dict:
    """Both models from the *same* normalised tensor (no preprocessing noise): proposals + detections."""
    x, meta = model.preprocess(img)
    batch = pad_batch([x], preset.data.size_divisor)
    inp, meta_path, out = work / f"{arch}.input.npy", work / f"{arch}.meta.json", work / f"{arch}.same.npz"
    np.save(inp, batch.numpy())
    meta_path.write_text(json.dumps(dataclasses.asdict(meta)))  # an ImageMeta
    cmd = [str(args.oracle_python), str(Path(__file__).resolve().parent / "_oracle_side.py"), arch, str(ckpt),
           str(inp), str(meta_path), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if r.returncode != 0:
        raise RuntimeError(f"oracle side failed:\n{r.stderr[-3000:]}")
    theirs = dict(np.load(out))
    cl = model.backbone.channels_last
    model.backbone.channels_last = args.same_input_layout == "channels-last"  # NCHW = mmdet's layout
    with torch.no_grad():
        feats = model.extract_feat(batch)
        model.backbone.channels_last = cl
        cls, reg = model.rpn_head(feats)
        props = model.rpn_head.get_proposals(cls, reg, [meta.img_shape])[0].numpy()
        det = model.roi_head.simple_test(feats, [torch.from_numpy(props)], [meta])[0]
    pred = model.postprocess(det, meta)
    tp = theirs["proposals"]
    # proposals as sets: for each of ours, the nearest of theirs (order differs among equal scores)
    if len(props) and len(tp):
        d = np.abs(props[:, None, :4] - tp[None, :, :4]).max(-1)
        j = d.argmin(1)
        near = d[np.arange(len(props)), j]
        score_d = np.abs(props[:, 4] - tp[j, 4])
    else:
        near = score_d = np.zeros(0)
    res = dict(proposals_ours=len(props), proposals_theirs=len(tp),
               proposals_max_abs=float(near.max()) if len(near) else 0.0,
               proposals_max_score=float(score_d.max()) if len(score_d) else 0.0)

    class _P:  # the oracle's arrays in Prediction form
        boxes, scores, labels = theirs["boxes"], theirs["scores"], theirs["labels"]
        masks = theirs.get("masks")

    from pycocotools import mask as mask_util

    dets = [dict(bbox=list(map(float, b)), score=float(s), label=int(lbl)) for b, s, lbl in zip(_P.boxes, _P.scores, _P.labels)]
    if _P.masks is not None:
        for d, m in zip(dets, _P.masks):
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            d["mask"] = dict(size=[int(v) for v in rle["size"]], counts=rle["counts"].decode())
    res["detections"] = compare_detections(pred, dets)
    return res


def check_arch(arch: str, preset_name: str, image_path: Path, img: np.ndarray, args, work: Path) -> dict:
    preset = load_preset(preset_name, args.set or None)
    torch.manual_seed(args.seed)
    model = build(preset, args.features_only)
    if args.channels_last:
        model.backbone.channels_last = True
    randomize(model, seed=args.seed, dcn_offset_std=args.dcn_offset_std)
    x = preprocess(img, preset)
    calibrate_bn(model.backbone, x)
    model.eval()
    if not args.features_only:
        calibrate_heads(model, lambda: model.predict([img]))
    ckpt = work / f"{arch}.pth"
    save_checkpoint(ckpt, model, preset)
    out_json, feats_npz = work / f"{arch}.json", work / f"{arch}.npz"
    t_oracle = run_oracle(args.oracle_python, arch, ckpt, image_path, out_json, feats_npz,
                          tuple(preset.data.test_scale))
    theirs_feats = dict(np.load(feats_npz))
    with torch.no_grad():
        c = model.backbone(x)
        p = model.neck(c)
    ours_feats = {f"backbone.{i}": t for i, t in enumerate(c)} | {f"neck.{i}": t for i, t in enumerate(p)}
    res: dict = dict(arch=arch, preset=preset_name, oracle_s=round(t_oracle, 1), features=compare_features(ours_feats, theirs_feats))
    if args.same_input and not args.features_only:
        res["preprocess_vs_mmcv_max_abs"] = preprocessing_check(model, preset, img, image_path, args, work)
        res["same_input"] = same_input_check(model, preset, img, arch, ckpt, args, work)
    if not args.features_only:
        t0 = time.perf_counter()
        with torch.no_grad():
            pred = model.predict([img])[0]
        res["ours_s"] = round(time.perf_counter() - t0, 1)
        theirs = json.loads(out_json.read_text())["detections"]
        res["detections"] = compare_detections(pred, theirs)
    if args.work is None:  # checkpoints reach 0.6 GB at 1600x900 (X-101 64x4d): one at a time
        ckpt.unlink()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="*", help="architectures (manifest names); default all")
    ap.add_argument("--image", type=Path, help="an image file (default: a synthetic JPEG)")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", help="preset overrides key=value (applied to every arch)")
    ap.add_argument("--dcn-offset-std", type=float, default=0.002,
                    help="std of the random DCN offset-conv weights (large values make a random net chaotic)")
    ap.add_argument("--channels-last", action="store_true", help="run our backbone channels-last (faster on CPU, not bit-exact)")
    ap.add_argument("--same-input", action="store_true",
                    help="also run both models from the identical normalised tensor (isolates the model from preprocessing)")
    ap.add_argument("--same-input-layout", choices=["nchw", "channels-last"], default="nchw",
                    help="memory format of our backbone in --same-input (nchw = mmdet's)")
    ap.add_argument("--features-only", action="store_true", help="compare backbone/FPN features only")
    ap.add_argument("--oracle-python", type=Path, default=DEFAULT_ORACLE)
    ap.add_argument("--work", type=Path, help="keep checkpoints/outputs here (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="write all results to this JSON file")
    args = ap.parse_args()

    archs = chosen_archs(args.arch)
    chosen = list(archs)
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="nuim-parity-")
        work = Path(tmp.name)
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
    if args.image:
        image_path = args.image
    else:
        image_path = work / f"synthetic_{args.width}x{args.height}.jpg"
        cv2.imwrite(str(image_path), synthetic_image(args.width, args.height, args.seed), [cv2.IMWRITE_JPEG_QUALITY, 90])
    img = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    print(f"image {image_path} {img.shape[1]}x{img.shape[0]}, torch threads {torch.get_num_threads()}")
    results = []
    for arch in chosen:
        r = check_arch(arch, archs[arch], image_path, img, args, work)
        results.append(r)
        worst = max(v[1] for v in r["features"].values())
        line = f"{arch:52s} features max rel diff {worst:.2e}"
        if "detections" in r:
            d = r["detections"]
            line += (
                f" | dets matched {_matched(d)}"
                f" | max box {d['max_box_px']:.2e}px score {d['max_score']:.2e} min mask IoU {d['min_mask_iou']:.4f}"
                f" ({d['masks_below_099']} below 0.99; worst: {d['worst_mask_xor_union'][0]} px differ of {d['worst_mask_xor_union'][1]})"
            )
        print(line, flush=True)
        if "same_input" in r:
            si = r["same_input"]
            d = si["detections"]
            print(f"    preprocessing vs mmcv imrescale+imnormalize+pad: max abs {r['preprocess_vs_mmcv_max_abs']:.1e}")
            print(f"    same input: proposals ours {si['proposals_ours']} mmdet {si['proposals_theirs']} max abs {si['proposals_max_abs']:.2e} score {si['proposals_max_score']:.2e}"
                  f" | dets matched {_matched(d)} max box {d['max_box_px']:.2e}px score {d['max_score']:.2e}"
                  f" min mask IoU {d['min_mask_iou']:.4f}")
        for k, (a, rel) in r["features"].items():
            print(f"    {k:12s} max abs {a:.3e}  rel {rel:.3e}")
    for key, label in (("detections", "end to end"), ("same_input", "same input")):
        ds = [r[key] if key == "detections" else r[key]["detections"] for r in results if key in r]
        if ds:
            print(f"ALL {len(ds)} architectures, {label}: detections matched {_matched(_total(ds))}"
                  f" | max box {max(d['max_box_px'] for d in ds):.2e}px score {max(d['max_score'] for d in ds):.2e}"
                  f" min mask IoU {min(d['min_mask_iou'] for d in ds):.4f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
