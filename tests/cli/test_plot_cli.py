"""`nuim plot`: one PNG for several runs, of the expected size and not blank; bad input exit 2."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "analysis"))
from test_train_curves import records, write_log  # noqa: E402

from test_eval_cli import call  # noqa: E402


def test_two_runs_overlaid(tmp_path, capsys):
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        write_log(tmp_path / run / "log.jsonl", records())
    out = tmp_path / "curves.png"
    code, _, err = call(capsys, "plot", str(tmp_path / "a" / "log.jsonl"), str(tmp_path / "b" / "log.jsonl"),
                        "--out", str(out), "--keys", "loss,lr,bbox_mAP,loss_cls")
    assert code == 0, err
    img = cv2.imread(str(out))
    assert img.shape == (640, 1350, 3)  # 4 keys: 2 rows of 3 panels, 4.5 x 3.2 in each, 100 dpi
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    write_log(tmp_path / "log.jsonl", records())
    for args, message in ((["nope.jsonl"], "no such file"), ([str(tmp_path / "log.jsonl"), "--out", "x.jpg"], ".png"),
                          ([str(tmp_path / "log.jsonl"), "--keys", "AP"], "not in the log")):
        code, out, err = call(capsys, "plot", *args, *([] if "--out" in args else ["--out", str(tmp_path / "c.png")]))
        assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
