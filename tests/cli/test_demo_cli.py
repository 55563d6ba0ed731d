"""`nuim demo` runs every step (data, convert, train, eval, predict) and says where things are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_demo_runs_all_steps_end_to_end(tmp_path, capsys, monkeypatch):
    from nuimcli.cli import main
    from nuimcli.engine import demo

    # Same steps as the real demo, with a very short training so the test stays fast.
    monkeypatch.setattr(demo, "DEMO_TRAIN_ITERS", 2)
    monkeypatch.setenv("COLUMNS", "300")
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(out), "--nproc", "0"])
    assert e.value.code == 0
    captured = capsys.readouterr()
    stdout = captured.out
    assert "demo training: mask-rcnn-r18-tiny" in captured.err  # the CLI renders the engine's log
    assert [s[0] for s in demo.DEMO_STEPS] == ["data", "convert", "train", "eval", "predict"]
    work = out / "work_dirs" / "mask-rcnn-r18-tiny"
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert any(r.get("iter") is not None and "loss" in r for r in records)
    assert "val AP after the short demo training: box" in stdout
    pictures = sorted((out / "predictions").glob("*.jpg"))
    assert len(pictures) == 4
    val = json.loads((out / "data" / "nuimages" / "annotations" / "nuimages_v1.0-val.json").read_text())
    train = json.loads((out / "data" / "nuimages" / "annotations" / "nuimages_v1.0-train.json").read_text())
    val_names = {Path(im["file_name"]).stem for im in val["images"]}
    assert {p.stem for p in pictures} <= val_names  # drawn on images the model did not train on
    assert not val_names & {Path(im["file_name"]).stem for im in train["images"]}
    for pic in pictures:
        doc = json.loads(pic.with_suffix(".json").read_text())
        assert doc["width"] == 384 and doc["height"] == 216
    assert str(out / "predictions") in stdout.replace("\n", "")
