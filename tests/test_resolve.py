"""The one resolver (nuimcli.engine.resolve): a path, a URL (a real HTTP server on 127.0.0.1), a
zoo name or bad input → a local file and its preset; once per node in a two-process group."""

from __future__ import annotations

import io

import pytest
import torch
from zoo_server import (  # noqa: F401  (fixtures are used by name)
    isolated_home,
    release_path,
    server,
    use_presets,
    write_presets,
)

import nuimcli
from nuimcli import zoo
from nuimcli.download import DownloadError
from nuimcli.engine.resolve import resolve
from nuimcli.errors import UserError
from nuimcli.presets import load_preset


@pytest.fixture
def tiny_zoo(server, tmp_path, monkeypatch):
    """A zoo row 'zoo-tiny' whose released file (a foreign-style mmdet file: no nuimcli meta, so
    only its name can tell its preset) is served by the local server, and a row without a file."""
    from nuimcli.models.build import build_model

    torch.manual_seed(3)
    model = build_model(load_preset("mask-rcnn-r18-tiny")).eval()
    buf = io.BytesIO()
    torch.save({"meta": {}, "state_dict": model.state_dict()}, buf)
    data = buf.getvalue()
    path = release_path("zoo_tiny", data)
    server.files[path] = data
    use_presets(monkeypatch, write_presets(tmp_path / "presets", {"zoo-tiny": server.url(path), "zoo-unreleased": None}))
    return {"server": server, "path": path, "data": data, "model": model}


def test_an_existing_path_is_used_as_is(tmp_path):
    f = tmp_path / "mine.pth"
    f.write_bytes(b"x")
    assert resolve(f) == zoo.Resolved(f, None)  # the file decides its preset when it is read
    assert resolve(f.as_uri()) == zoo.Resolved(f, None)  # file:// names a local file


def test_a_url_is_fetched_once_into_the_cache(tiny_zoo):
    srv, path = tiny_zoo["server"], tiny_zoo["path"]
    got = resolve(srv.url(path), progress=False)
    assert got.path.parent == zoo.checkpoints_dir() and got.path.read_bytes() == tiny_zoo["data"]
    assert got.preset == "zoo-tiny"  # the URL of a released file names its row
    assert resolve(srv.url(path), progress=False) == got
    assert len(srv.requests_for(path)) == 1


def test_a_zoo_name_is_downloaded_and_brings_its_preset(tiny_zoo):
    got = resolve("zoo-tiny", progress=False)
    assert got == zoo.Resolved(zoo.get_entry("zoo-tiny").path, "zoo-tiny")
    # the whole path: the file has no meta, so only the zoo name can say which model it holds
    model = nuimcli.load("zoo-tiny", exact=True)  # exact: the state_dict as stored (no folded BN)
    assert model.preset.name == "zoo-tiny" and not model.training
    for k, v in tiny_zoo["model"].state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert len(tiny_zoo["server"].requests_for(tiny_zoo["path"])) == 1


@pytest.mark.parametrize("spec, error, message", [
    ("zoo-tin", UserError, "'zoo-tin' is neither a checkpoint file nor a zoo name (did you mean 'zoo-tiny'?)"),
    ("work/nope.pth", UserError, "work/nope.pth: no such checkpoint file"),
    ("nope.pth", UserError, "nope.pth: no such checkpoint file"),
    ("file:///nonexistent/x.pth", UserError, "file:///nonexistent/x.pth: no such checkpoint file"),
    ("zoo-unreleased", UserError, "'zoo-unreleased' (row 2) has no released checkpoint"),
    ("URL/missing-12345678.pth", DownloadError, "HTTP 404"),
])
def test_bad_input_is_one_line(tiny_zoo, spec, error, message):
    spec = spec.replace("URL", tiny_zoo["server"].url(""))
    with pytest.raises(error) as e:
        resolve(spec, progress=False)
    assert message in str(e.value) and "\n" not in str(e.value)


def _resolve_rank(world, device, spec):
    import torch.distributed as dist

    found = resolve(spec, progress=False)
    paths = [None] * world.size
    dist.all_gather_object(paths, str(found.path))
    return paths


def test_two_processes_download_once_and_share_errors(tiny_zoo):
    """In a two-process group (one node) local rank 0 downloads, rank 1 waits and finds the file;
    a failed download is the same exception on every rank, raised in the parent."""
    from nuimcli.engine.launch import launch

    srv, path = tiny_zoo["server"], tiny_zoo["path"]
    paths = launch(_resolve_rank, (srv.url(path),), gpus=2, device="cpu")
    assert len(set(paths)) == 1 and paths[0] == str(zoo.checkpoints_dir() / path.rsplit("/", 1)[1])
    assert len(srv.requests_for(path)) == 1
    with pytest.raises(DownloadError, match="HTTP 404"):
        launch(_resolve_rank, (srv.url("/gone/file-12345678.pth"),), gpus=2, device="cpu")
    assert len(srv.requests_for("/gone/file-12345678.pth")) == 1


def _resolve_as_one_node_each(world, device, spec):
    import os

    os.environ["LOCAL_RANK"] = "0"  # two "nodes" of one process each, sharing this machine's cache
    return _resolve_rank(world, device, spec)


def test_node_leaders_take_turns_on_a_shared_cache(tiny_zoo):
    """Two node leaders sharing one cache: the first downloads, the second finds the file (never
    two writers of one .part file)."""
    from nuimcli.engine.launch import launch

    srv, path = tiny_zoo["server"], tiny_zoo["path"]
    paths = launch(_resolve_as_one_node_each, (srv.url(path),), gpus=2, device="cpu")
    assert len(set(paths)) == 1 and len(srv.requests_for(path)) == 1
