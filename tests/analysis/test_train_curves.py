"""Training curves from log.jsonl: epochs on x, loss smoothing, resumed runs, key errors."""

from __future__ import annotations

import json

import pytest

from nuimcli.analysis.train_curves import ema, read_log, series
from nuimcli.errors import UserError


def write_log(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def records():
    recs = [{"mode": "info", "iters_per_epoch": 4, "lr": 0.02}]
    for g in range(1, 9):
        recs.append({"mode": "train", "epoch": (g - 1) // 4 + 1, "iter": (g - 1) % 4 + 1, "global_iter": g,
                     "lr": 0.02, "loss": float(g), "loss_cls": 1.0, "time": 0.1})
        if g % 4 == 0:
            recs.append({"mode": "val", "epoch": g // 4, "global_iter": g, "bbox_mAP": 0.1 * g, "segm_mAP": None})
    return recs


def test_ema_by_hand():
    # weight .5: acc 0.5*1 -> .5/(1-.5)=1; acc .25+1.5=1.75 -> 1.75/.75; acc .875+.5*5=3.375 -> 3.375/.875
    assert ema([1, 3, 5], 0.5) == pytest.approx([1.0, 1.75 / 0.75, 3.375 / 0.875])
    assert ema([1, 3, 5], 0.0) == [1, 3, 5]


def test_series_in_epochs_with_smoothed_losses(tmp_path):
    s = series(read_log(write_log(tmp_path / "log.jsonl", records())), smooth=0.0)
    assert list(s) == ["loss", "loss_cls", "lr", "bbox_mAP"]  # segm_mAP is null throughout: no curve
    assert [x for x, _ in s["loss"]] == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert s["bbox_mAP"] == [(1.0, pytest.approx(0.4)), (2.0, pytest.approx(0.8))]
    smoothed = series(read_log(tmp_path / "log.jsonl"), ["loss", "lr"], smooth=0.5)
    assert [y for _, y in smoothed["loss"]][:3] == pytest.approx(ema([1, 2, 3], 0.5))
    assert {y for _, y in smoothed["lr"]} == {0.02}  # never smoothed


def test_a_resumed_run_counts_each_iteration_once(tmp_path):
    recs = records()
    recs += [{"mode": "info", "iters_per_epoch": 4}, {**recs[-2], "loss": 100.0}]  # iteration 8 logged again
    s = series(read_log(write_log(tmp_path / "log.jsonl", recs)), ["loss"], smooth=0.0)
    assert len(s["loss"]) == 8 and s["loss"][-1] == (2.0, 100.0)


@pytest.mark.parametrize("text, message", [("{not json\n", "line 1: not JSON"), ('{"a": 1}\n', "no 'mode'"),
                                           ('{"mode": "info"}\n', "no train or val records")])
def test_bad_logs_name_file_and_line(tmp_path, text, message):
    (tmp_path / "log.jsonl").write_text(text)
    with pytest.raises(UserError, match=message):
        read_log(tmp_path / "log.jsonl")


def test_unknown_key_lists_the_keys_there_are(tmp_path):
    with pytest.raises(UserError, match=r"--keys mAP: not in the log \(it has bbox_mAP, loss, loss_cls, lr, time\)"):
        series(read_log(write_log(tmp_path / "log.jsonl", records())), ["mAP"])
