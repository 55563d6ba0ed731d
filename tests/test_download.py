"""nuimcli.download.fetch against a real HTTP server on 127.0.0.1 with injected faults, and file:// mirrors."""

from __future__ import annotations

import socket
import time

import pytest
from zoo_server import (  # noqa: F401  (fixtures are used by name)
    checkpoint_bytes,
    isolated_home,
    published_name,
    release_path,
    server,
    sha256,
)

from nuimcli import download
from nuimcli.download import DownloadError, HashMismatch, fetch, hash_prefix_from_name, mirror_url


@pytest.fixture
def blob():
    data = checkpoint_bytes(seed=1)
    return data, release_path("toy_model", data)


def _serve(server, blob):
    data, path = blob
    server.files[path] = data
    return data, path, server.url(path)


# --------------------------------------------------------------------------- names and mirrors


def test_hash_prefix_from_published_names():
    assert hash_prefix_from_name(
        "https://download.openmmlab.com/mmdetection3d/v0.1.0_models/nuimages_semseg/mask_rcnn_r50_fpn_1x_nuim/"
        "mask_rcnn_r50_fpn_1x_nuim_20201008_195238-e99f5182.pth") == "e99f5182"
    assert hash_prefix_from_name("https://download.pytorch.org/models/resnet50-19c8e357.pth") == "19c8e357"
    assert hash_prefix_from_name("resnet50_msra-5891d200.pth") == "5891d200"
    assert hash_prefix_from_name("https://x/y/mask_rcnn_r50_fpn_1x_nuim_20201008_195238.log.json") is None
    assert hash_prefix_from_name("epoch_12.pth") is None


def test_mirror_keeps_the_path_after_the_host(tmp_path):
    up = "https://download.openmmlab.com/mmdetection/v2.0/htc/htc_r50_fpn_20e_coco/htc_r50_fpn_20e_coco_20200319-fe28c577.pth"
    assert mirror_url(up, None) == up
    assert mirror_url(up, "http://lab:8000/openmmlab/") == (
        "http://lab:8000/openmmlab/mmdetection/v2.0/htc/htc_r50_fpn_20e_coco/htc_r50_fpn_20e_coco_20200319-fe28c577.pth")
    assert mirror_url("https://download.pytorch.org/models/resnet50-19c8e357.pth", "file:///srv/m") == (
        "file:///srv/m/models/resnet50-19c8e357.pth")
    # a plain folder path becomes a file:// base
    assert mirror_url("https://h/a/b.pth", str(tmp_path)) == tmp_path.resolve().as_uri() + "/a/b.pth"
    # file:// URLs name local files already: never mapped
    assert mirror_url("file:///x/y.pth", "http://lab") == "file:///x/y.pth"


# --------------------------------------------------------------------------- the happy path


def test_download_streams_to_part_and_renames(server, blob, tmp_path):
    data, path, url = _serve(server, blob)
    dest = tmp_path / "out" / url.rsplit("/", 1)[1]
    got = fetch(url, dest, expected_hash8=hash_prefix_from_name(url), progress=True)
    assert got == dest and dest.read_bytes() == data
    assert not dest.with_name(dest.name + ".part").exists()
    assert [r.status for r in server.requests] == [200] and server.requests[0].range is None


def test_existing_file_is_not_fetched_again(server, blob, tmp_path):
    data, path, url = _serve(server, blob)
    dest = fetch(url, tmp_path, expected_hash8=hash_prefix_from_name(url), progress=False)  # folder → URL's name
    assert dest.name == published_name("toy_model_20240101_000000", data)
    fetch(url, dest, expected_hash8=hash_prefix_from_name(url), progress=False)
    assert len(server.requests) == 1
    fetch(url, dest, expected_hash8=hash_prefix_from_name(url), progress=False, force=True)
    assert len(server.requests) == 2 and dest.read_bytes() == data


# --------------------------------------------------------------------------- faults


def test_404_fails_at_once_and_names_the_url(server, tmp_path):
    url = server.url(f"{release_path('missing', b'nothing')}")
    dest = tmp_path / "missing.pth"
    with pytest.raises(DownloadError) as e:
        fetch(url, dest, progress=False, retries=3)
    msg = str(e.value)
    assert url in msg and "404" in msg and "by hand" in msg and "NUIM_ZOO_URL" in msg and "\n" not in msg
    assert len(server.requests) == 1  # no retry on a 4xx
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_500_then_success_is_retried(server, blob, tmp_path):
    data, path, url = _serve(server, blob)
    server.faults[path] = ["500", "500"]
    dest = fetch(url, tmp_path / "f.pth", expected_hash8=hash_prefix_from_name(url), progress=False, retries=2)
    assert dest.read_bytes() == data
    assert [r.status for r in server.requests] == [500, 500, 200]


def test_persistent_5xx_gives_up_after_the_retries_with_exponential_backoff(server, blob, tmp_path, monkeypatch):
    data, path, url = _serve(server, blob)
    server.faults[path] = ["500"] * 10
    sleeps: list[float] = []
    monkeypatch.setattr(download.time, "sleep", sleeps.append)
    with pytest.raises(DownloadError, match="HTTP 500"):
        fetch(url, tmp_path / "f.pth", progress=False, retries=3, backoff=0.5)
    assert len(server.requests) == 4
    assert sleeps == [0.5, 1.0, 2.0]
    assert not (tmp_path / "f.pth").exists()


def test_cut_connection_is_resumed_with_range(server, blob, tmp_path):
    data, path, url = _serve(server, blob)
    server.faults[path] = ["cut"]
    dest = fetch(url, tmp_path / "f.pth", expected_hash8=hash_prefix_from_name(url), progress=False, retries=0)
    assert dest.read_bytes() == data and sha256(dest.read_bytes()).startswith(hash_prefix_from_name(url))
    first, second = server.requests
    assert first.range is None and first.status == 200
    assert second.range == f"bytes={len(data) // 2}-" and second.status == 206


def test_stalled_connection_times_out_and_resumes(server, blob, tmp_path):
    data, path, url = _serve(server, blob)
    server.faults[path] = ["stall"]
    server.stall_seconds = 1.0
    dest = fetch(url, tmp_path / "f.pth", expected_hash8=hash_prefix_from_name(url), progress=False,
                 retries=0, timeout=0.3)
    assert dest.read_bytes() == data
    assert server.requests[1].range == f"bytes={len(data) // 2}-"


def test_interrupted_run_leaves_part_and_next_run_resumes(server, blob, tmp_path):
    data, path, url = _serve(server, blob)
    server.faults[path] = ["cut", "404"]  # the cut, then the retry fails: the run ends with a partial file
    dest = tmp_path / "f.pth"
    with pytest.raises(DownloadError):
        fetch(url, dest, expected_hash8=hash_prefix_from_name(url), progress=False, retries=0)
    part = dest.with_name(dest.name + ".part")
    assert not dest.exists() and part.stat().st_size == len(data) // 2
    fetch(url, dest, expected_hash8=hash_prefix_from_name(url), progress=False)  # a new run
    assert dest.read_bytes() == data and not part.exists()
    assert server.requests[-1].range == f"bytes={len(data) // 2}-" and server.requests[-1].status == 206


def test_server_that_ignores_range_restarts_from_zero(server, blob, tmp_path):
    data, path, url = _serve(server, blob)
    server.ignore_range.add(path)
    dest = tmp_path / "f.pth"
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(b"\0" * 1000)  # a stale partial file: appending to it would corrupt the result
    fetch(url, dest, expected_hash8=hash_prefix_from_name(url), progress=False)
    assert dest.read_bytes() == data
    (req,) = server.requests
    assert req.range == "bytes=1000-" and req.status == 200


def test_partial_file_longer_than_the_source_starts_over(server, blob, tmp_path):
    data, path, url = _serve(server, blob)
    dest = tmp_path / "f.pth"
    dest.with_name(dest.name + ".part").write_bytes(b"\0" * (len(data) + 10))
    fetch(url, dest, expected_hash8=hash_prefix_from_name(url), progress=False, retries=1)
    assert dest.read_bytes() == data
    assert [r.status for r in server.requests] == [416, 200]


def test_hash_mismatch_keeps_nothing_and_says_expected_and_found(server, blob, tmp_path):
    data, path, url = _serve(server, blob)
    server.faults[path] = ["corrupt"]
    dest = tmp_path / "f.pth"
    expected = hash_prefix_from_name(url)
    bad = data[:-1] + bytes([data[-1] ^ 0xFF])
    with pytest.raises(HashMismatch) as e:
        fetch(url, dest, expected_hash8=expected, progress=False)
    msg = str(e.value)
    assert f"expected {expected}" in msg and sha256(bad)[:8] in msg
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()
    # the next attempt starts clean and succeeds
    fetch(url, dest, expected_hash8=expected, progress=False)
    assert dest.read_bytes() == data


def test_connection_refused_is_retried_then_reported(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on this port now
    url = f"http://127.0.0.1:{port}/models/resnet50-19c8e357.pth"
    t0 = time.perf_counter()
    with pytest.raises(DownloadError) as e:
        fetch(url, tmp_path / "r.pth", progress=False, retries=2, backoff=0.001)
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert url in msg and str(tmp_path / "r.pth") in msg and "NUIM_ZOO_URL" in msg


# --------------------------------------------------------------------------- mirrors


def test_http_mirror_is_used_instead_of_the_upstream_host(server, blob, tmp_path, monkeypatch):
    data, path = blob
    server.files["/lab" + path] = data
    upstream = "https://download.invalid" + path  # never contacted
    dest = fetch(upstream, tmp_path / "f.pth", expected_hash8=hash_prefix_from_name(upstream),
                 base_url=server.url("/lab/"), progress=False)
    assert dest.read_bytes() == data and server.requests[0].path == "/lab" + path
    # the same through the environment variable
    monkeypatch.setenv("NUIM_ZOO_URL", server.url("/lab"))
    dest2 = fetch(upstream, tmp_path / "g.pth", expected_hash8=hash_prefix_from_name(upstream), progress=False)
    assert dest2.read_bytes() == data and len(server.requests) == 2


def test_file_mirror_folder(blob, tmp_path):
    data, path = blob
    mirror = tmp_path / "mirror"
    (mirror / path.lstrip("/")).parent.mkdir(parents=True)
    (mirror / path.lstrip("/")).write_bytes(data)
    upstream = "https://download.openmmlab.com" + path
    for base in (mirror.as_uri(), str(mirror)):
        dest = tmp_path / "out" / base[-6:].replace("/", "_") / "f.pth"
        fetch(upstream, dest, expected_hash8=hash_prefix_from_name(upstream), base_url=base, progress=False)
        assert dest.read_bytes() == data
    # missing in the mirror: one clear failure naming the mirror URL and the upstream one
    with pytest.raises(DownloadError) as e:
        fetch("https://download.openmmlab.com/other/x-12345678.pth", tmp_path / "x.pth",
              base_url=mirror.as_uri(), progress=False)
    assert "no such file" in str(e.value) and "mirror of https://download.openmmlab.com/other/x-12345678.pth" in str(e.value)


def test_file_url_resumes_and_verifies(blob, tmp_path):
    data, _ = blob
    src = tmp_path / "src.pth"
    src.write_bytes(data)
    dest = tmp_path / "dst" / "f.pth"
    dest.parent.mkdir()
    dest.with_name("f.pth.part").write_bytes(data[:100])
    fetch(src.as_uri(), dest, expected_hash8=sha256(data)[:8], progress=False)
    assert dest.read_bytes() == data
    with pytest.raises(HashMismatch):
        fetch(src.as_uri(), tmp_path / "g.pth", expected_hash8="00000000", progress=False)
    assert not (tmp_path / "g.pth").exists()


def test_progress_label_is_short_and_keeps_the_hash():
    name = "htc_x101_64x4d_fpn_dconv_c3-c5_coco-20e_16x1_20e_nuim_20201008_211222-0b16ac4b.pth"
    short = download._shorten(name, 28)
    assert len(short) == 28 and short.startswith("htc_x101") and short.endswith("-0b16ac4b.pth")
    assert download._shorten("mask.pth", 28) == "mask.pth"
