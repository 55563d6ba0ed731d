"""nuimcli.zoo: the registry from the presets, the cache, locate (one process's resolving), fetch_to_cache and check."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from zoo_server import (  # noqa: F401  (fixtures are used by name)
    RELEASE_DIR,
    checkpoint_bytes,
    isolated_home,
    release_path,
    server,
    sha256,
    use_presets,
    write_presets,
)

from nuimcli import zoo
from nuimcli.download import DownloadError, hash_prefix_from_name
from nuimcli.errors import UserError
from nuimcli.presets import list_presets, load_preset

# --------------------------------------------------------------------------- the real registry


def test_registry_is_the_results_table():
    entries = zoo.registry()
    assert [e.row for e in entries] == list(range(1, 18))
    assert [e.name for e in entries] == [n for n in list_presets() if load_preset(n).release is not None]
    assert {e.name for e in entries if not e.released} == {"mask-rcnn-r50-caffe-1x", "htc-r50-nosemantic-1x", "htc-r50-1x"}
    first = entries[0]
    assert (first.name, first.architecture, first.pretrain, first.schedule) == ("mask-rcnn-r50-1x", "Mask R-CNN R-50-FPN", "IN", "1x")
    assert (first.mem_gb, first.box_ap, first.mask_ap, first.hash8) == (7.4, 47.8, 38.4, "e99f5182")
    assert first.filename == "mask_rcnn_r50_fpn_1x_nuim_20201008_195238-e99f5182.pth"
    assert entries[16].architecture == "HTC X-101-64x4d-FPN DCN" and entries[16].box_ap == 57.3
    for e in entries:
        if not e.released:
            assert e.filename is None and e.path is None and not e.downloaded
            continue
        # the hash in the file name is the hash the entry verifies against
        assert hash_prefix_from_name(e.checkpoint_url) == e.hash8 and len(e.hash8) == 8
        assert e.checkpoint_url.startswith("https://download.openmmlab.com/mmdetection3d/v0.1.0_models/nuimages_semseg/")
        assert e.log_url.rsplit("/", 1)[0] == e.checkpoint_url.rsplit("/", 1)[0]
        assert e.path == zoo.checkpoints_dir() / e.filename and not e.downloaded
    assert len({e.filename for e in entries if e.released}) == 14  # names are unique: the cache needs no folders


def test_cache_dir_follows_nuim_home(monkeypatch, tmp_path, isolated_home):
    assert zoo.cache_dir() == isolated_home
    assert zoo.checkpoints_dir() == isolated_home / "checkpoints"
    monkeypatch.delenv("NUIM_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert zoo.cache_dir() == tmp_path / "user" / ".cache" / "nuimcli"


def test_entry_for_path_and_unknown_names():
    e = zoo.entry_for_path("/anywhere/mask_rcnn_r50_fpn_1x_nuim_20201008_195238-e99f5182.pth")
    assert e is not None and e.name == "mask-rcnn-r50-1x"
    assert zoo.entry_for_path("epoch_12.pth") is None
    with pytest.raises(UserError, match="did you mean 'mask-rcnn-r50-1x'"):
        zoo.get_entry("mask-rcnn-r50")


# --------------------------------------------------------------------------- a fake registry on a local server


@pytest.fixture
def fake_zoo(server, tmp_path, monkeypatch):
    """Two released rows served by the local server, one row without a file."""
    a, b = checkpoint_bytes(seed=1), checkpoint_bytes(seed=2)
    pa, pb = release_path("zoo_a", a), release_path("zoo_b", b)
    server.files.update({pa: a, pb: b})
    folder = write_presets(tmp_path / "presets", {
        "zoo-a": server.url(pa), "zoo-b": server.url(pb), "zoo-unreleased": None,
    })
    use_presets(monkeypatch, folder)
    return {"server": server, "zoo-a": (a, pa), "zoo-b": (b, pb)}


def test_fake_registry_download_keeps_upstream_name(fake_zoo, isolated_home):
    entries = zoo.registry()
    assert [e.name for e in entries] == ["zoo-a", "zoo-b", "zoo-unreleased"]
    e = zoo.get_entry("zoo-a")
    path = zoo.download_entry(e, progress=False)
    data, upath = fake_zoo["zoo-a"]
    assert path == isolated_home / "checkpoints" / upath.rsplit("/", 1)[1]
    assert path.read_bytes() == data and zoo.get_entry("zoo-a").downloaded
    with pytest.raises(UserError, match="no released checkpoint"):
        zoo.download_entry(zoo.get_entry("zoo-unreleased"), progress=False)


def test_locate(fake_zoo, tmp_path):
    local = tmp_path / "mine.pth"
    local.write_bytes(b"x")
    assert zoo.locate(local) == zoo.Resolved(local, None)
    with pytest.raises(UserError, match="not downloaded; run `nuim zoo download zoo-a`"):
        zoo.locate("zoo-a", download=False)
    found = zoo.locate("zoo-a", progress=False)
    assert found.preset == "zoo-a"  # a zoo name brings its preset
    p = found.path
    assert p.read_bytes() == fake_zoo["zoo-a"][0]
    n = len(fake_zoo["server"].requests)
    assert zoo.locate("zoo-a", download=False).path == p  # cached: no request
    assert len(fake_zoo["server"].requests) == n
    with pytest.raises(UserError, match="did you mean 'zoo-b'"):
        zoo.locate("zoo-bb")
    with pytest.raises(UserError, match="no released checkpoint"):
        zoo.locate("zoo-unreleased")
    with pytest.raises(UserError, match="nope.pth: no such checkpoint file"):
        zoo.locate(str(tmp_path / "nope.pth"))
    # a URL goes to the cache under its own name
    b, pb = fake_zoo["zoo-b"]
    q = zoo.locate(fake_zoo["server"].url(pb), progress=False).path
    assert q.parent == zoo.checkpoints_dir() and q.read_bytes() == b


def test_resolve_offline_says_which_url_and_how_to_get_the_file(fake_zoo):
    fake_zoo["server"].faults[fake_zoo["zoo-a"][1]] = ["500"] * 10
    with pytest.raises(DownloadError) as e:
        zoo.locate("zoo-a", progress=False)
    msg = str(e.value)
    entry = zoo.get_entry("zoo-a")
    assert "\n" not in msg and e.value.exit_code == 1
    assert entry.checkpoint_url in msg and str(entry.path) in msg
    assert "NUIM_ZOO_URL" in msg and "local checkpoint file" in msg
    assert not entry.downloaded


def test_mirror_serves_every_kind_of_file(tmp_path, monkeypatch):
    """Released checkpoints, backbones and load_from files all come from <base>/<path after host>."""
    released = checkpoint_bytes(seed=3)
    backbone = checkpoint_bytes(seed=4, numel=1000)
    coco = checkpoint_bytes(seed=5, numel=1000)
    rel_path = release_path("zoo_m", released)
    bb_path = f"/models/resnet18-{sha256(backbone)[:8]}.pth"
    coco_path = f"/mmdetection/v2.0/mask_rcnn/x_coco/x_coco_20200505_003907-{sha256(coco)[:8]}.pth"
    mirror = tmp_path / "mirror"
    for p, data in ((rel_path, released), (bb_path, backbone), (coco_path, coco)):
        (mirror / p.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (mirror / p.lstrip("/")).write_bytes(data)
    folder = write_presets(tmp_path / "presets", {"zoo-m": "https://download.openmmlab.com" + rel_path})
    use_presets(monkeypatch, folder)
    monkeypatch.setenv("NUIM_ZOO_URL", mirror.as_uri())
    assert zoo.locate("zoo-m", progress=False).path.read_bytes() == released
    got_bb = zoo.fetch_to_cache("https://download.pytorch.org" + bb_path, progress=False)
    got_coco = zoo.fetch_to_cache("http://download.openmmlab.com" + coco_path, progress=False)
    assert got_bb.read_bytes() == backbone and got_coco.read_bytes() == coco
    assert got_bb.parent == got_coco.parent == zoo.checkpoints_dir()
    # the hash in an init file's name is verified too
    wrong = f"/models/resnet34-{'0' * 8}.pth"
    (mirror / wrong.lstrip("/")).write_bytes(backbone)
    with pytest.raises(DownloadError, match="expected 00000000"):
        zoo.fetch_to_cache("https://download.pytorch.org" + wrong, progress=False)
    assert not (zoo.checkpoints_dir() / "resnet34-00000000.pth").exists()


# --------------------------------------------------------------------------- check


def test_check_rehashes_what_is_downloaded(fake_zoo):
    entry = zoo.get_entry("zoo-a")
    res = zoo.check_entry(entry, load=False)
    assert not res.ok and res.hash_ok is None and "not downloaded" in res.detail
    zoo.download_entry(entry, progress=False)
    res = zoo.check_entry(entry, load=False)
    assert res.ok and res.hash_ok and res.found_hash8 == entry.hash8 and res.load_ok is None
    # damage one byte in the cache
    data = bytearray(entry.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    entry.path.write_bytes(bytes(data))
    res = zoo.check_entry(entry, load=False)
    assert not res.ok and res.hash_ok is False
    assert res.found_hash8 == sha256(bytes(data))[:8] and entry.hash8 in res.detail
    assert not zoo.check_entry(zoo.get_entry("zoo-unreleased")).ok


def _tiny_model():
    from nuimcli.models.build import build_model

    return build_model(load_preset("mask-rcnn-r18-tiny"))


def test_check_loads_strictly_and_catches_a_wrong_state_dict(server, tmp_path, monkeypatch):
    import torch

    from nuimcli.checkpoints import save_checkpoint

    model = _tiny_model()
    good_file = tmp_path / "good.pth"
    save_checkpoint(good_file, model, load_preset("mask-rcnn-r18-tiny"))
    good = good_file.read_bytes()
    sd = model.state_dict()
    sd.pop(next(iter(sd)))  # one tensor missing: a validly published file for another model
    buf = io.BytesIO()
    torch.save({"meta": {}, "state_dict": sd}, buf)
    wrong = buf.getvalue()
    pg, pw = release_path("zoo_good", good), release_path("zoo_wrong", wrong)
    server.files.update({pg: good, pw: wrong})
    use_presets(monkeypatch, write_presets(tmp_path / "presets", {"zoo-good": server.url(pg), "zoo-wrong": server.url(pw)}))
    results = {}
    for e in zoo.registry():
        zoo.download_entry(e, progress=False)
        results[e.name] = zoo.check_entry(e, load=True)
    g, w = results["zoo-good"], results["zoo-wrong"]
    assert g.ok and g.hash_ok and g.load_ok and g.tensors == len(model.state_dict())
    assert w.hash_ok and w.load_ok is False and not w.ok and "does not match" in w.detail
    # a corrupted file fails on its hash before any load
    path = Path(g.path)
    path.write_bytes(good[:-10])
    bad = zoo.check_entry(zoo.get_entry("zoo-good"), load=True)
    assert bad.hash_ok is False and bad.load_ok is None and not bad.ok


def test_check_a_row_architecture_generated_by_build_model(tmp_path, monkeypatch):
    """A file shaped like row 1 (R-50 Mask R-CNN, ~170 MB) loads strictly into its preset's model."""
    from nuimcli.models.build import build_model
    from nuimcli.checkpoints import save_checkpoint

    preset = load_preset("mask-rcnn-r50-1x")
    model = build_model(preset)
    mirror = tmp_path / "mirror"
    tmp_file = tmp_path / "r50.pth"
    save_checkpoint(tmp_file, model, preset)
    n_tensors = len(model.state_dict())
    del model
    digest = zoo.download.sha256_file(tmp_file)
    upath = f"{RELEASE_DIR}/zoo_r50/zoo_r50_20240101_000000-{digest[:8]}.pth"
    (mirror / upath.lstrip("/")).parent.mkdir(parents=True)
    tmp_file.rename(mirror / upath.lstrip("/"))
    use_presets(monkeypatch, write_presets(tmp_path / "presets", {"zoo-r50": "https://download.openmmlab.com" + upath},
                                           base="mask-rcnn-r50-1x"))
    entry = zoo.get_entry("zoo-r50")
    assert entry.architecture == "Mask R-CNN R-50-FPN"
    zoo.download_entry(entry, base_url=mirror.as_uri(), progress=False)
    res = zoo.check_entry(entry, load=True)
    assert res.ok and res.load_ok and res.tensors == n_tensors, res.detail
