"""DEV-ONLY: regenerate the training-parity fixture from real mmdet (the oracle). Not a test, not shipped.

For each detector family (Mask R-CNN, Cascade Mask R-CNN, HTC with its semantic head) this
builds the fixed batch and the seeded, calibrated small model of
``nuimcli/testing/training_parity.py``, hands both to mmdet 3.3.0 in the oracle venv
(``bench/_oracle_training_side.py``, samplers patched to the same deterministic rule), and
computes our losses under ``fixed_sampling(even_choice)``. It prints, per family:

* the RPN proposals of both sides (count per image, max abs difference);
* the (positives, negatives, GT proposals) of every sampler call and the (gallery size, num)
  of every draw, which must be identical;
* every loss term, ours vs mmdet, with the relative difference (target: <= 1e-4);
* a stability check: our losses again with another thread count and with every weight
  multiplied by (1 + 1e-12 * N(0, 1)) (several draws); the fixture is only written when every
  trial keeps the same samples and moves no term by more than 1e-6 relative.

Why float64 (both sides): a training step is full of discrete decisions (top-k and NMS of the
proposals, IoU thresholds, the argmax behind ``acc``), and with random weights some of them
sit within 1e-6 of flipping: in float32, merely running on one thread instead of two moved a
loss term by 2e-4, and a 1e-7 weight perturbation flipped an argmax (acc by 1.5e-3). Weights regenerated on
another machine, through the calibration forward passes, differ at the 1e-7 level in float32
but ~1e-15 in float64, which no decision here is that close to. The loss formulas do not
depend on the dtype; our code still computes the R-CNN boxes and the losses in float32.

Then it writes ``tests/fixtures/training_parity.json`` (mmdet's values and diagnostics), which
``tests/models/test_training_parity.py`` compares against. Regenerate with:

    .venv/bin/python bench/training_parity.py

Needs the oracle venv (``bash /work/shared/oracle/setup.sh``; ``--oracle-python`` to point at
it). The project never imports mmdet; the oracle runs as a subprocess.
"""

from __future__ import annotations

import argparse
import dataclasses
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nuimcli.models import rpn  # noqa: E402
from nuimcli.models.roi_heads import base as roi_base  # noqa: E402
from nuimcli.models.targets import fixed_sampling  # noqa: E402
from nuimcli.testing import training_parity as P  # noqa: E402

DEFAULT_ORACLE = Path.home() / ".cache/nuim-oracle/venv/bin/python"
ORACLE_SIDE = ROOT / "bench/_oracle_training_side.py"
FIXTURE = ROOT / "tests/fixtures/training_parity.json"
SEED = 0
TOL = 1e-4


@contextlib.contextmanager
def recording():
    """Record our proposals and sampler calls (dev diagnostics; patches module attributes)."""
    samples, proposals = [], []
    orig = rpn.random_sample
    samplers = (rpn, roi_base)  # the modules whose heads sample (the RPN, then each R-CNN stage)

    def random_sample(*args, **kwargs):
        s = orig(*args, **kwargs)
        samples.append([int(s.pos_inds.numel()), int(s.neg_inds.numel()), int(s.pos_is_gt.sum())])
        return s

    for module in samplers:
        module.random_sample = random_sample
    try:
        yield samples, proposals
    finally:
        for module in samplers:
            module.random_sample = orig


def our_losses(model, batch) -> tuple[dict[str, float], list, list, list]:
    choices = []

    def choose(gallery, num):
        choices.append([int(gallery.numel()), int(num)])
        return P.even_choice(gallery, num)

    with recording() as (samples, proposals), torch.no_grad(), fixed_sampling(choose):
        get = model.rpn_head.get_proposals

        def get_proposals(*a, **k):
            out = get(*a, **k)
            proposals.extend(p.clone() for p in out)
            return out

        model.rpn_head.get_proposals = get_proposals
        try:
            losses = {k: float(v) for k, v in model.loss(batch).items()}
        finally:
            del model.rpn_head.get_proposals
    return losses, samples, proposals, choices


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def run_oracle(python: Path, work: Path) -> dict:
    cmd = [str(python), str(ORACLE_SIDE), str(work)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if r.returncode != 0:
        raise RuntimeError(f"oracle failed ({' '.join(cmd)}):\n{r.stderr[-4000:]}")
    return torch.load(work / "oracle.pt", weights_only=False)


def stability(model, batch, base: dict[str, float], samples: list, draws: int) -> float:
    """Max relative change of any term with another thread count or tiny weight perturbations."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    worst = 0.0
    g = torch.Generator().manual_seed(1234)
    for trial in ["threads"] + [f"perturb{i}" for i in range(draws)]:
        threads = torch.get_num_threads()
        try:
            if trial == "threads":
                torch.set_num_threads(1 if threads > 1 else 2)
            else:
                with torch.no_grad():
                    for p in model.parameters():
                        p.mul_(1 + 1e-12 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            losses, s, _, _ = our_losses(model, batch)
        finally:
            torch.set_num_threads(threads)
            model.load_state_dict(state)
        change = max(rel(losses[k], base[k]) for k in base)
        print(f"    stability {trial}: samples {'same' if s == samples else 'CHANGED'}, max rel change {change:.1e}")
        worst = max(worst, change if s == samples else float("inf"))
    return worst


def family(name: str, oracle: Path, draws: int) -> dict:
    preset_name, arch = P.FAMILIES[name]
    t0 = time.perf_counter()
    preset = P.parity_preset(name)
    batch, semantic = P.parity_batch(preset, SEED)
    model = P.parity_model(preset, batch, SEED)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.save(model.state_dict(), work / "weights.pth")
        # plain dicts: the oracle side runs in mmdet's environment, without nuimcli
        torch.save({"images": batch.images, "img_metas": [dataclasses.asdict(m) for m in batch.img_metas],
                    "gt_bboxes": batch.gt_bboxes, "gt_labels": batch.gt_labels, "gt_masks": batch.gt_masks,
                    "semantic": semantic}, work / "batch.pt")
        setup = {"arch": arch, "depth": P.DEPTH, "fpn_channels": P.FPN_CHANNELS, "fc_channels": P.FC_CHANNELS,
                 "backbone_channels": list(model.backbone.out_channels)}
        (work / "setup.json").write_text(json.dumps(setup))
        theirs = run_oracle(oracle, work)
    ours, samples, proposals, choices = our_losses(model, batch)

    print(f"== {name} ({preset_name} / {arch}, {time.perf_counter() - t0:.0f} s)")
    for i, (a, b) in enumerate(zip(proposals, theirs["proposals"])):
        diff = float((a - b).abs().max()) if a.shape == b.shape else float("inf")
        print(f"  proposals img{i}: ours {tuple(a.shape)} mmdet {tuple(b.shape)} max|diff| {diff:.2e}")
    same = samples == theirs["samples"] and choices == theirs["choices"]
    print(f"  sampler calls (pos, neg, gt) and choices (gallery, num) {'identical' if same else 'DIFFER'}:")
    print(f"    ours  {samples}\n          {choices}")
    if not same:
        print(f"    mmdet {theirs['samples']}\n          {theirs['choices']}")
    worst = 0.0
    for k in sorted(theirs["losses"]):
        o = ours.get(k, float("nan"))
        r = rel(o, theirs["losses"][k])
        worst = max(worst, r)
        print(f"  {k:18s} ours {o:12.7f}  mmdet {theirs['losses'][k]:12.7f}  rel {r:.1e}{'' if r <= TOL else '  <-- MISMATCH'}")
    missing = sorted(set(ours) ^ set(theirs["losses"]))
    if missing:
        print(f"  terms on one side only: {missing}")
    stable = stability(model, batch, ours, samples, draws) if draws else 0.0
    print(f"  max rel diff {worst:.1e}; stability (max rel change under perturbation) {stable:.1e}")
    ok = same and not missing and worst <= TOL and stable <= 1e-6
    return {
        "ok": ok,
        "entry": {
            "preset": preset_name,
            "oracle_arch": arch,
            "losses": theirs["losses"],
            "num_proposals": [int(p.shape[0]) for p in theirs["proposals"]],
            "sampler_calls_pos_neg_gt": theirs["samples"],
            "choice_calls_gallery_num": theirs["choices"],
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--oracle-python", type=Path, default=DEFAULT_ORACLE)
    ap.add_argument("--family", action="append", choices=sorted(P.FAMILIES), help="default: all")
    ap.add_argument("--draws", type=int, default=3, help="perturbation draws of the stability check")
    ap.add_argument("--out", type=Path, default=FIXTURE)
    ap.add_argument("--check-only", action="store_true", help="compare, do not write the fixture")
    a = ap.parse_args()
    names = a.family or list(P.FAMILIES)
    results = {n: family(n, a.oracle_python, a.draws) for n in names}
    if not all(r["ok"] for r in results.values()):
        print("NOT written: a family mismatches or is unstable (see above)")
        return 1
    if a.check_only:
        return 0
    ver = subprocess.run([str(a.oracle_python), "-c", "import mmdet, torch; print(mmdet.__version__, torch.__version__)"],
                         capture_output=True, text=True).stdout.split()
    fixture = {"about": "Training losses of real mmdet (oracle) on the batch and weights of "
                        "nuimcli/testing/training_parity.py, samplers fixed to even_choice. "
                        "Regenerate: .venv/bin/python bench/training_parity.py",
               "seed": SEED, "overrides": P.OVERRIDES, "mmdet": ver[0], "oracle_torch": ver[1],
               "families": {}}
    if a.out.exists() and a.family:  # regenerating some families keeps the others
        fixture["families"] = json.loads(a.out.read_text())["families"]
    fixture["families"].update({n: r["entry"] for n, r in results.items()})
    a.out.parent.mkdir(parents=True, exist_ok=True)
    # One line per list of numbers (sampler calls, proposal counts): a readable diff on regeneration.
    text = re.sub(r"\[[\d\s,.-]*\]", lambda m: " ".join(m.group(0).split()), json.dumps(fixture, indent=1))
    a.out.write_text(text + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
