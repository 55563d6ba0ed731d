"""The export check's comparison: matching, tolerances, and which mask differences count."""

from __future__ import annotations

import numpy as np

from nuimcli.export.verify import FLOAT32, compare


def _outputs(probs: np.ndarray, box=(10.0, 10.0, 13.0, 13.0), score=0.9, label=2):
    return (np.array([box], np.float32), np.array([score], np.float32), np.array([label], np.int64),
            probs[None].astype(np.float32))


def test_identical_outputs_pass_with_perfect_figures():
    probs = np.full((28, 28), 0.9, np.float32)
    c = compare(_outputs(probs), _outputs(probs), 32, 32, 0.5)
    assert c.ok and c.min_mask_iou == 1.0 and c.max_box_diff_px == 0.0 and c.clear_pixels_flipped == 0


def test_pixels_at_the_threshold_may_flip_with_float_rounding():
    # a 3x3-pixel mask whose right column sits at the threshold: 3e-4 apart, 3 of 9 pixels flip
    ref = np.full((28, 28), 0.9, np.float32)
    ref[:, 19:] = 0.5002
    got = ref.copy()
    got[:, 19:] = 0.4999
    c = compare(_outputs(ref), _outputs(got), 32, 32, 0.5)
    assert c.min_mask_iou < FLOAT32.mask_iou  # IoU 6/9
    assert c.ok and c.clear_pixels_flipped == 0, c.failure()


def test_a_pixel_the_model_was_sure_about_fails_the_check():
    ref = np.full((28, 28), 0.9, np.float32)
    got = ref.copy()
    got[:, 19:] = 0.2
    c = compare(_outputs(ref), _outputs(got), 32, 32, 0.5)
    assert not c.ok and c.clear_pixels_flipped == 3
    assert "3 pixels flipped" in c.failure()


def test_box_score_and_count_differences_fail():
    probs = np.full((28, 28), 0.9, np.float32)
    moved = compare(_outputs(probs), _outputs(probs, box=(10.0, 10.0, 13.1, 13.0)), 32, 32, 0.5)
    assert not moved.ok and "boxes differ by 0.1 px" in moved.failure()
    rescored = compare(_outputs(probs), _outputs(probs, score=0.898), 32, 32, 0.5)
    assert not rescored.ok and "scores differ" in rescored.failure()
    empty = tuple(a[:0] for a in _outputs(probs))
    assert compare(_outputs(probs), empty, 32, 32, 0.5).failure() == "0 detections vs 1"
    relabelled = compare(_outputs(probs), _outputs(probs, label=3), 32, 32, 0.5)
    assert not relabelled.ok and "labels differ" in relabelled.failure()
