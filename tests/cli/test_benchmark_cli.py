"""``nuim benchmark``: the table, the --json schema, bad input."""

from __future__ import annotations

import json

import pytest

from nuimcli.cli import main

SCHEMA = {"model": str, "preset": str, "device": str, "mode": str, "dtype": str, "width": int, "height": int,
          "threads": int, "parameters": int, "flops": int, "multiply_adds": int, "flop_note": str,
          "latency_ms": list, "latency_ms_median": float, "images_per_s": float, "peak_memory_mb": (float, type(None)),
          "peak_memory_kind": str, "detections": int}


def call(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def test_json_schema(capsys):
    code, out, err = call(capsys, "benchmark", "--random-weights", "mask-rcnn-r18-tiny", "--size", "128x80",
                          "--device", "cpu", "--repeat", "1", "--warmup", "0", "--threads", "1", "--exact", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == set(SCHEMA)
    for k, t in SCHEMA.items():
        assert isinstance(doc[k], t), (k, doc[k])
    assert doc["mode"] == "exact" and doc["width"] == 128 and doc["multiply_adds"] * 2 == doc["flops"]


def test_half_on_cpu_is_bfloat16(capsys):
    code, out, err = call(capsys, "benchmark", "--random-weights", "mask-rcnn-r18-tiny", "--size", "128x80",
                          "--device", "cpu", "--repeat", "1", "--warmup", "0", "--threads", "1", "--half", "--json")
    assert code == 0, err
    assert json.loads(out)["dtype"] == "bfloat16"


def test_table(capsys):
    code, out, err = call(capsys, "benchmark", "--random-weights", "mask-rcnn-r18-tiny", "--size", "128x80",
                          "--device", "cpu", "--repeat", "1", "--threads", "1")
    assert code == 0, err
    for word in ("parameters", "FLOPs", "multiply-adds", "latency", "images/s", "peak memory", "roi_align"):
        assert word in out


@pytest.mark.parametrize("args, message", [
    (["--random-weights", "mask-rcnn-r18-tiny", "--size", "big"], "WIDTHxHEIGHT"),
    ([], "--random-weights PRESET"),
    (["--random-weights", "no-such-preset"], "no-such-preset"),
])
def test_bad_input_is_one_line_exit_2(capsys, args, message):
    code, out, err = call(capsys, "benchmark", *args)
    assert code == 2 and message in err and "Traceback" not in err
