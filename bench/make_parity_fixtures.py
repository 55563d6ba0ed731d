"""DEV-ONLY: regenerate the oracle-parity fixtures of tests/models/test_parity.py.

For each of the 10 architectures of the oracle (``ARCHS`` in /work/shared/oracle/nuim_configs.py,
via the first preset that names each): build our model with seeded random weights calibrated
on a small synthetic street image (nuimcli.testing.inference_parity.calibrated_model — the
code path the test uses), save it as an mmdet checkpoint (temporary; never committed), run real
mmdet (bench/_oracle_side.py in the oracle venv) from our normalised input tensor, and store
what mmdet computed under tests/fixtures/parity/:

* ``manifest.json``: seed, image, test scale, DCN offset std, versions, arch → preset/file;
* ``image.png``: the input image (lossless, so the test need not regenerate it);
* ``<arch>.npz``: the oracle's RPN pre-NMS candidates and proposals, per-stage box-head
  logits and RoIs, last-stage pre-NMS boxes/scores, semantic logits (HTC), final detections
  (masks as COCO RLE), plus a fingerprint of the weights and input the oracle saw (so a test
  failure tells "weights regenerated differently" from "the model computes differently").

Then our model is traced on the same input and compared, as the test will (its report is
printed). Regenerate with (about 10 minutes on 2 cores):

    .venv/bin/python bench/make_parity_fixtures.py

Needs the oracle venv (``bash /work/shared/oracle/setup.sh``; ``--oracle-python`` to point at it).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_parity import DEFAULT_ORACLE, chosen_archs  # noqa: E402

from nuimcli.checkpoints import save_checkpoint  # noqa: E402
from nuimcli.data.structures import ImageMeta  # noqa: E402
from nuimcli.testing import inference_parity as P  # noqa: E402
from nuimcli.testing import parity_compare as C  # noqa: E402
from nuimcli.testing.random_weights import synthetic_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "parity"
ORACLE_SIDE = Path(__file__).resolve().parent / "_oracle_side.py"


def run_oracle(python: Path, arch: str, ckpt: Path, batch: torch.Tensor, meta: ImageMeta, work: Path) -> dict:
    """mmdet from our normalised input: the tensors of bench/_oracle_side.py."""
    inp, meta_path, out = work / f"{arch}.input.npy", work / f"{arch}.meta.json", work / f"{arch}.oracle.npz"
    np.save(inp, batch.numpy())
    meta_path.write_text(json.dumps(dataclasses.asdict(meta)))  # an ImageMeta
    cmd = [str(python), str(ORACLE_SIDE), arch, str(ckpt), str(inp), str(meta_path), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if r.returncode != 0:
        raise RuntimeError(f"oracle side failed ({' '.join(cmd)}):\n{r.stderr[-3000:]}")
    return dict(np.load(out))


def to_fixture(theirs: dict, regen: P.Regenerated, batch: torch.Tensor, meta: ImageMeta) -> dict:
    """The oracle's dump in fixture form: float32 tensors, final detections renamed ``det_*`` with
    RLE masks, and fingerprints of the weights and input."""
    fx = {k: v for k, v in theirs.items() if k not in ("boxes", "scores", "labels", "masks")}
    fx = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in fx.items()}
    fx["det_boxes"] = theirs["boxes"].astype(np.float32)
    fx["det_scores"] = theirs["scores"].astype(np.float32)
    fx["det_labels"] = theirs["labels"].astype(np.int8)
    if "masks" in theirs:
        fx["det_masks"] = C.encode_masks(theirs["masks"])
        fx["det_mask_size"] = np.asarray(meta.ori_shape, np.int32)
    names, stats = P.fingerprint(regen.model.state_dict())
    fx["weight_names"] = np.asarray(names)
    fx["weight_stats_drawn"] = regen.drawn
    fx["weight_stats"] = stats
    fx["input_stats"] = P.fingerprint({"input": batch}, samples=batch.numel())[1][0]
    return fx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="*", help="architectures (default all 10); others keep their fixtures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=400, help="synthetic image width")
    ap.add_argument("--height", type=int, default=240, help="synthetic image height")
    ap.add_argument("--test-scale", type=int, nargs=2, default=[320, 192], metavar=("LONG", "SHORT"),
                    help="test resize bound replacing 1600x900 (an image of 400x240 is scaled by 0.8)")
    ap.add_argument("--dcn-offset-std", type=float, default=0.002,
                    help="std of the DCN offset-conv weights: offsets of ~0.1 px (mean), up to ~0.7 px;"
                         " 0.005 and more make the X-101 DCN backbone chaotic (float noise grows layer by layer)")
    ap.add_argument("--oracle-python", type=Path, default=DEFAULT_ORACLE)
    ap.add_argument("--out", type=Path, default=FIXTURES)
    args = ap.parse_args()

    archs = chosen_archs(args.arch)
    chosen = list(archs)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() and args.arch else {}
    settings = dict(seed=args.seed, image="image.png", test_scale=list(args.test_scale),
                    dcn_offset_std=args.dcn_offset_std)
    if manifest and any(manifest.get(k) != v for k, v in settings.items()):
        sys.exit("settings differ from the existing manifest: regenerate every architecture (no --arch)")
    image_path = args.out / "image.png"
    if not manifest:
        cv2.imwrite(str(image_path), synthetic_image(args.width, args.height, args.seed))
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    versions = subprocess.run([str(args.oracle_python), "-c",
                               "import mmdet, mmcv, mmengine, torch; print(mmdet.__version__, mmcv.__version__,"
                               " mmengine.__version__, torch.__version__)"],
                              capture_output=True, text=True, check=True).stdout.split()
    manifest.update(settings)
    manifest["generated_by"] = "bench/make_parity_fixtures.py"
    manifest["oracle"] = dict(zip(["mmdet", "mmcv", "mmengine", "torch"], versions))
    manifest["ours_torch"] = torch.__version__
    manifest.setdefault("archs", {})
    cache = P.BackboneCache()
    with tempfile.TemporaryDirectory(prefix="nuim-parity-fixtures-") as tmp:
        work = Path(tmp)
        for arch in chosen:
            t0 = time.perf_counter()
            regen = P.calibrated_model(archs[arch], image, seed=args.seed, test_scale=args.test_scale,
                                       dcn_offset_std=args.dcn_offset_std, cache=cache)
            model = regen.model
            ckpt = work / f"{arch}.pth"
            save_checkpoint(ckpt, model, model.preset)
            batch, meta = P.network_input(model, image)
            theirs = run_oracle(args.oracle_python, arch, ckpt, batch, meta, work)
            fx = to_fixture(theirs, regen, batch, meta)
            np.savez_compressed(args.out / f"{arch}.npz", **fx)
            manifest["archs"][arch] = dict(preset=archs[arch], file=f"{arch}.npz")
            ours = P.trace(model, image, regen.backbone_out, proposals=fx["proposals"])
            rep = C.compare(model, ours, dict(np.load(args.out / f"{arch}.npz")))
            size = (args.out / f"{arch}.npz").stat().st_size
            print(f"{arch:52s} {size / 1e3:6.0f} kB {time.perf_counter() - t0:5.0f} s | {rep.summary()}", flush=True)
            for f in rep.failures:
                print(f"    FAIL {f}")
    manifest["archs"] = {a: manifest["archs"][a] for a in archs if a in manifest["archs"]}
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"fixtures: {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
