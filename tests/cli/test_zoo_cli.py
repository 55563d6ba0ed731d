"""`nuim zoo list | download | check | path` end to end (in process, through nuimcli.cli.main)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/zoo_server.py
from zoo_server import (  # noqa: E402,F401  (fixtures are used by name)
    checkpoint_bytes,
    isolated_home,
    release_path,
    server,
    use_presets,
    write_presets,
)

from nuimcli.cli import main  # noqa: E402


def nuim(capsys, *args: str) -> tuple[int, str, str]:
    """Run `nuim ARGS` in process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code or 0, out, err


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture
def fake_zoo(server, tmp_path, monkeypatch):
    a, b = checkpoint_bytes(seed=11), checkpoint_bytes(seed=12)
    pa, pb = release_path("zoo_a", a), release_path("zoo_b", b)
    server.files.update({pa: a, pb: b})
    use_presets(monkeypatch, write_presets(tmp_path / "presets", {
        "zoo-a": server.url(pa), "zoo-b": server.url(pb), "zoo-none": None,
    }))
    return {"server": server, "zoo-a": (a, pa), "zoo-b": (b, pb)}


def test_list_real_registry(capsys):
    code, out, _ = nuim(capsys, "zoo", "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 17 and rows[0]["name"] == "mask-rcnn-r50-1x"
    assert rows[0]["box_ap"] == 47.8 and rows[0]["hash8"] == "e99f5182" and rows[0]["downloaded"] is False
    assert [r["row"] for r in rows if not r["released"]] == [3, 13, 14]
    code, out, _ = nuim(capsys, "zoo", "list")
    assert code == 0
    for text in ("mask-rcnn-r50-1x", "HTC X-101-64x4d-FPN DCN", "IN+COCO-20e", "57.3", "46.4", "not released"):
        assert text in out
    assert "e99f5182" in out and "https://" not in out
    code, out, _ = nuim(capsys, "zoo", "list", "--urls")
    assert code == 0 and rows[0]["checkpoint_url"] in out and rows[0]["log_url"] in out


def test_download_path_check(fake_zoo, capsys, isolated_home):
    code, out, err = nuim(capsys, "zoo", "path", "zoo-a")
    assert code == 1 and out == "" and "not downloaded" in err
    code, out, _ = nuim(capsys, "zoo", "download", "zoo-a", "--json")
    assert code == 0
    (res,) = json.loads(out)
    assert res["ok"] and res["status"] == "downloaded"
    data, upath = fake_zoo["zoo-a"]
    code, out, _ = nuim(capsys, "zoo", "path", "zoo-a")
    assert code == 0 and out.strip() == str(isolated_home / "checkpoints" / upath.rsplit("/", 1)[1])
    assert Path(out.strip()).read_bytes() == data
    code, out, _ = nuim(capsys, "zoo", "list", "--json")
    assert [r["downloaded"] for r in json.loads(out)] == [True, False, False]
    # again: cached, no new request
    n = len(fake_zoo["server"].requests)
    code, out, _ = nuim(capsys, "zoo", "download", "zoo-a")
    assert code == 0 and "cached" in out and len(fake_zoo["server"].requests) == n
    # check: the downloaded one only, hash part
    code, out, _ = nuim(capsys, "zoo", "check", "--hash-only", "--json")
    (c,) = json.loads(out)
    assert code == 0 and c["name"] == "zoo-a" and c["ok"] and c["hash_ok"]
    Path(c["path"]).write_bytes(data[:-1])
    code, out, err = nuim(capsys, "zoo", "check", "--hash-only")
    assert code == 1 and "FAIL" in out and "zoo-a" in err


def test_download_all_and_partial_failure(fake_zoo, capsys):
    fake_zoo["server"].faults[fake_zoo["zoo-b"][1]] = ["404"]
    code, out, err = nuim(capsys, "zoo", "download", "--all", "--json")
    assert code == 1
    res = {r["name"]: r for r in json.loads(out)}
    assert set(res) == {"zoo-a", "zoo-b"}  # the row without a file is not attempted
    assert res["zoo-a"]["ok"] and not res["zoo-b"]["ok"] and "HTTP 404" in res["zoo-b"]["error"]
    assert "1 of 2 downloads failed: zoo-b" in err
    code, out, _ = nuim(capsys, "zoo", "download", "zoo-b")  # the 404 was one-shot
    assert code == 0


def test_list_shows_an_interrupted_download(fake_zoo, capsys):
    data, upath = fake_zoo["zoo-b"]
    fake_zoo["server"].faults[upath] = ["cut", "404"]
    code, _, err = nuim(capsys, "zoo", "download", "zoo-b")
    assert code == 1
    code, out, _ = nuim(capsys, "zoo", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["zoo-b"]["partial_bytes"] == len(data) // 2 and not rows["zoo-b"]["downloaded"]
    code, out, _ = nuim(capsys, "zoo", "list")
    assert "partial" in out
    code, out, _ = nuim(capsys, "zoo", "download", "zoo-b")  # resumes
    assert code == 0 and fake_zoo["server"].requests[-1].range == f"bytes={len(data) // 2}-"


def test_download_bad_usage(fake_zoo, capsys):
    code, _, err = nuim(capsys, "zoo", "download", "zoo-a", "zoo-x")
    assert code == 2 and "did you mean" in err
    assert fake_zoo["server"].requests == []  # names are checked before anything is downloaded
    code, _, err = nuim(capsys, "zoo", "download")
    assert code == 2 and "--all" in err
    code, _, err = nuim(capsys, "zoo", "download", "zoo-none")
    assert code == 2 and "no released checkpoint" in err
    code, _, err = nuim(capsys, "zoo", "path", "zoo-none")
    assert code == 1 and "no released checkpoint" in err
    code, _, err = nuim(capsys, "zoo", "path", "nope")
    assert code == 2


def test_download_from_a_mirror_folder(tmp_path, monkeypatch, capsys):
    data = checkpoint_bytes(seed=13)
    upath = release_path("zoo_m", data)
    mirror = tmp_path / "mirror"
    (mirror / upath.lstrip("/")).parent.mkdir(parents=True)
    (mirror / upath.lstrip("/")).write_bytes(data)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    upstream = f"http://127.0.0.1:{s.getsockname()[1]}{upath}"  # nothing listens there: "offline"
    s.close()
    use_presets(monkeypatch, write_presets(tmp_path / "presets", {"zoo-m": upstream}))
    code, out, err = nuim(capsys, "zoo", "download", "zoo-m", "--base-url", mirror.as_uri(), "--json")
    assert code == 0, err
    assert Path(json.loads(out)[0]["path"]).read_bytes() == data
    # offline (no mirror): one line naming the URL and the ways out
    code, out, err = nuim(capsys, "zoo", "download", "zoo-m", "--force")
    assert code == 1
    assert upstream in err and "NUIM_ZOO_URL" in err and "by hand" in err


def test_check_loads_into_the_preset_model(server, tmp_path, monkeypatch, capsys):
    from nuimcli.models.build import build_model
    from nuimcli.checkpoints import save_checkpoint
    from nuimcli.presets import load_preset

    model = build_model(load_preset("mask-rcnn-r18-tiny"))
    f = tmp_path / "tiny.pth"
    save_checkpoint(f, model, load_preset("mask-rcnn-r18-tiny"))
    data = f.read_bytes()
    upath = release_path("zoo_t", data)
    server.files[upath] = data
    use_presets(monkeypatch, write_presets(tmp_path / "presets", {"zoo-t": server.url(upath)}))
    assert nuim(capsys, "zoo", "download", "zoo-t")[0] == 0
    code, out, _ = nuim(capsys, "zoo", "check", "zoo-t", "--json")
    (c,) = json.loads(out)
    assert code == 0 and c["ok"] and c["load_ok"] and c["tensors"] == len(model.state_dict())
