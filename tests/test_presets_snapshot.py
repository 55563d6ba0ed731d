"""Every preset, fully resolved, equals the committed snapshot ``tests/fixtures/presets_snapshot.yaml``.

The snapshot holds all public presets after base + row + dataclass defaults are merged (NMS
thresholds, max_per_img, nms_pre, test scale, mask threshold, mean/std, lr, schedule, ...), so a
change anywhere — a preset file, a base, a default in ``nuimcli/presets.py`` — fails this test
until the snapshot is regenerated, and the snapshot's diff is what a reviewer reads.

Regenerate it (after checking that the change is intended) with::

    python -m nuimcli.presets --snapshot tests/fixtures/presets_snapshot.yaml
"""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from nuimcli.presets import SNAPSHOT_COMMAND, list_presets, load_preset, snapshot_text

SNAPSHOT = Path(__file__).parent / "fixtures" / "presets_snapshot.yaml"


def test_resolved_presets_equal_the_committed_snapshot():
    current = snapshot_text()
    committed = SNAPSHOT.read_text(encoding="utf-8")
    # Values are compared (not formatting, which a PyYAML release may change); the text diff
    # is only the failure message.
    now, then = yaml.safe_load(current), yaml.safe_load(committed)
    if now != then:
        changed = [n for n in dict.fromkeys([*then, *now]) if now.get(n) != then.get(n)]
        diff = "".join(difflib.unified_diff(committed.splitlines(keepends=True), current.splitlines(keepends=True),
                                            fromfile=str(SNAPSHOT), tofile="presets as resolved now", n=2))
        raise AssertionError(f"resolved presets differ from the snapshot in {', '.join(changed)}; "
                             f"if intended, run `{SNAPSHOT_COMMAND}`\n{diff}")


def test_snapshot_covers_every_preset_with_every_field():
    doc = yaml.safe_load(SNAPSHOT.read_text(encoding="utf-8"))
    assert list(doc) == list_presets() and len(doc) == 18
    for name, resolved in doc.items():
        assert resolved == load_preset(name).to_dict()
        # the settings a one-character slip would change silently
        roi, rpn = resolved["model"]["roi"], resolved["model"]["rpn"]
        for key in ("nms_iou", "max_per_img", "score_thr", "mask_thr_binary"):
            assert key in roi, (name, key)
        for key in ("test_nms_pre", "test_max_per_img", "nms_iou"):
            assert key in rpn, (name, key)
        assert {"test_scale", "mean", "std"} <= set(resolved["data"])
        assert {"lr", "lr_steps", "epochs", "warmup_iters"} <= set(resolved["schedule"])
