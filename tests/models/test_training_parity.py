"""Training parity: every loss term of the three detector families equals real mmdet's.

``tests/fixtures/training_parity.json`` holds what mmdet computed (``bench/training_parity.py``,
mmdet 3.3.0 with mmdet 2.x's semantic-loss averaging) on the batch and seeded weights of
:mod:`nuimcli.testing.training_parity`, with every sampler (RPN and each R-CNN stage) patched to
:func:`~nuimcli.testing.training_parity.even_choice`. Here the same batch and weights are
rebuilt from the seeds and our losses computed under
:func:`~nuimcli.models.targets.fixed_sampling` with the same rule, so both sides train on the
same proposals and the same sampled anchors and RoIs; each term must agree to 1e-4 relative.
Models and images are float64, so that weights rebuilt on another machine make the same
discrete decisions (why: :mod:`nuimcli.testing.training_parity`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nuimcli.models.targets import fixed_sampling
from nuimcli.testing import training_parity as P

FIXTURE = json.loads((Path(__file__).resolve().parents[1] / "fixtures/training_parity.json").read_text())
RTOL = 1e-4


def test_fixture_matches_the_parity_setup():
    # The fixture was made for these settings; regenerate it (bench/training_parity.py) if they change.
    assert FIXTURE["overrides"] == P.OVERRIDES
    assert set(FIXTURE["families"]) == set(P.FAMILIES)
    for name, entry in FIXTURE["families"].items():
        assert (entry["preset"], entry["oracle_arch"]) == P.FAMILIES[name]
        # Meaningful terms: none zero or saturated, so a wrong weight or target shows.
        assert all(1e-3 < v < 10 for k, v in entry["losses"].items() if "loss" in k), entry["losses"]


@pytest.mark.parametrize("family", sorted(P.FAMILIES))
def test_losses_equal_mmdet(family):
    entry = FIXTURE["families"][family]
    expected = entry["losses"]
    preset = P.parity_preset(family)
    batch, _ = P.parity_batch(preset, FIXTURE["seed"])
    model = P.parity_model(preset, batch, FIXTURE["seed"])
    choices = []  # (gallery size, num) of every draw: same galleries = same proposals and assignments

    def choose(gallery, num):
        choices.append([int(gallery.numel()), int(num)])
        return P.even_choice(gallery, num)

    with torch.no_grad(), fixed_sampling(choose):
        ours = {k: float(v) for k, v in model.loss(batch).items()}

    assert set(ours) == set(expected)
    rows, bad = [], []
    for k in sorted(expected):
        rel = abs(ours[k] - expected[k]) / max(abs(expected[k]), 1e-12)
        rows.append(f"{k:18s} ours {ours[k]:.7f}  mmdet {expected[k]:.7f}  rel {rel:.1e}")
        if rel > RTOL:
            bad.append(k)
    same_draws = choices == entry["choice_calls_gallery_num"]
    assert not bad and same_draws, (
        f"{family}: {bad} differ from mmdet by more than {RTOL} relative\n" + "\n".join(rows)
        + f"\nsampler draws (gallery, num) {'same as' if same_draws else 'DIFFER from'} mmdet's:\n"
        f"  ours  {choices}\n  mmdet {entry['choice_calls_gallery_num']}\n"
        "(a deliberate change to nuimcli/testing/ (weights, batch) needs bench/training_parity.py rerun)")


def test_fixed_sampling_is_scoped():
    from nuimcli.models import targets

    gallery = torch.arange(10, 20)
    with fixed_sampling(P.even_choice):
        assert targets._random_choice(gallery, 4, None).tolist() == [10, 12, 15, 17]
    # Outside the block: random again, from the image's generator.
    drawn = targets._random_choice(gallery, 4, torch.Generator().manual_seed(0))
    assert drawn.tolist() == gallery[torch.randperm(10, generator=torch.Generator().manual_seed(0))[:4]].tolist()
