"""The converter: golden output of the reference reproduced, devkit parity on synthetic sets, errors, resume."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from nuimcli.data import convert as cv
from nuimcli.data import convert_worker
from nuimcli.data.convert_manifest import MANIFEST_NAME, Manifest, png_rel_path
from nuimcli.data.nuimages import NAME_MAPPING, NUS_CATEGORIES
from nuimcli.errors import UserError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "converter_golden"
VERSIONS = ("v1.0-mini", "v1.0-val")


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """{relative path: (inode, mtime_ns, size)} of every file under root."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def _pngs(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            for p in sorted(root.rglob("*.png")) if not p.name.startswith(".")}


def _ordered(x):
    """JSON value with dict key order made significant (for comparing parsed JSON incl. order)."""
    if isinstance(x, dict):
        return [(k, _ordered(v)) for k, v in x.items()]
    if isinstance(x, list):
        return [_ordered(v) for v in x]
    return x


def _assert_same_output(out: Path, ref: Path, names: list[str]) -> None:
    for name in names:
        a, b = (out / name).read_bytes(), (ref / name).read_bytes()
        assert _ordered(json.loads(a)) == _ordered(json.loads(b)), name
        assert a == b, name
    pa, pb = _pngs(out / "semantic_masks"), _pngs(ref / "semantic_masks")
    assert pa.keys() == pb.keys()
    for k in pa:
        assert pa[k].dtype == np.uint8 and pa[k].ndim == 2
        assert np.array_equal(pa[k], pb[k]), k


@pytest.fixture()
def golden_root(tmp_path) -> Path:
    root = tmp_path / "nuimages"
    shutil.copytree(FIX / "input", root)
    return root


# ------------------------------------------------------------------------------------------------
# (a) the golden set

@pytest.mark.parametrize("nproc", [1, 2])
def test_golden_output_is_reproduced_exactly(golden_root, tmp_path, nproc):
    before = _tree(golden_root)
    out = tmp_path / "out"  # no trailing slash: PNGs must still go to out/semantic_masks
    summaries = cv.convert(golden_root, list(VERSIONS), out, nproc=nproc)
    names = [f"nuimages_{v}.json" for v in VERSIONS]
    for name in names:
        text = (out / name).read_text()
        expected = (FIX / "expected" / name).read_text()
        assert _ordered(json.loads(text)) == _ordered(json.loads(expected))
        assert text == json.dumps(json.loads(expected))
    _assert_same_output(out, FIX / "expected", names)
    assert _tree(golden_root) == before  # nothing written into the data root
    assert sorted(p.name for p in out.iterdir()) == sorted(names + ["semantic_masks", MANIFEST_NAME, cv.LOCK_NAME])
    mini = summaries[0]
    assert (mini.images, mini.annotations, mini.null_object_masks, mini.null_surface_masks) == (12, 192, 2, 1)
    assert sum(mini.annotations_per_class.values()) == mini.annotations and mini.max_semantic_index == 31
    assert mini.objects_painted_only + mini.annotations + mini.null_object_masks == mini.objects


def test_version_without_key_frames_gives_empty_valid_json(tmp_path):
    v = tmp_path / "v1.0-test"
    v.mkdir()
    shutil.copy(FIX / "input" / "v1.0-mini" / "category.json", v / "category.json")
    sd = [r for r in json.loads((FIX / "input" / "v1.0-mini" / "sample_data.json").read_text()) if not r["is_key_frame"]]
    (v / "sample_data.json").write_text(json.dumps(sd))
    for t in ("object_ann", "surface_ann"):
        (v / f"{t}.json").write_text("[]")
    [s] = cv.convert(tmp_path, ["v1.0-test"], tmp_path / "out", nproc=1)
    d = json.loads((tmp_path / "out" / "nuimages_v1.0-test.json").read_text())
    assert d == {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in enumerate(NUS_CATEGORIES)]}
    assert s.images == 0 and s.max_semantic_index is None


# ------------------------------------------------------------------------------------------------
# (b) synthetic sets against the devkit

@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    from nuimcli.synthetic import generate_nuimages

    root = tmp_path_factory.mktemp("syn")
    generate_nuimages(root, "v1.0-train", num_samples=14, width=480, height=270, seed=1,
                      objects_per_image=(10, 30), null_mask_fraction=0.1, sweeps_per_sample=1)
    generate_nuimages(root, "v1.0-val", num_samples=6, width=480, height=270, seed=2,
                      objects_per_image=(10, 30), null_mask_fraction=0.1, sweeps_per_sample=1)
    return root


def test_synthetic_pngs_equal_devkit_segmentation_and_annotations_decode(synthetic_root, tmp_path, nuimages_devkit):
    from nuimages import NuImages
    from nuimages.utils.utils import mask_decode

    out = tmp_path / "out"
    summaries = cv.convert(synthetic_root, ["v1.0-train", "v1.0-val"], out, nproc=2)
    checked_anns = 0
    for s in summaries:
        nuim = NuImages(version=s.version, dataroot=str(synthetic_root), lazy=True, verbose=False)
        d = json.loads(Path(s.json_path).read_text())
        assert [im["id"] for im in d["images"]] == list(range(len(d["images"])))
        assert [a["id"] for a in d["annotations"]] == list(range(len(d["annotations"])))
        cat_name = {c["token"]: c["name"] for c in nuim.category}
        anns_by_image: dict[int, list] = {}
        for a in d["annotations"]:
            anns_by_image.setdefault(a["image_id"], []).append(a)
        for im in d["images"]:
            png = cv2.imread(str(out / "semantic_masks" / im["file_name"].replace(".jpg", ".png")), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(png, nuim.get_segmentation(im["token"])[0].astype(np.uint8)), im["file_name"]
            objs = sorted((o for o in nuim.object_ann if o["sample_data_token"] == im["token"]), key=lambda o: o["token"])
            objs = [o for o in objs if o["mask"] is not None and cat_name[o["category_token"]] in NAME_MAPPING]
            anns = anns_by_image.get(im["id"], [])
            assert len(anns) == len(objs)
            for a, o in zip(anns, objs):
                assert list(a) == ["image_id", "category_id", "bbox", "area", "segmentation", "iscrowd", "id"]
                decoded = mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"]})
                assert np.array_equal(decoded, mask_decode(o["mask"]))
                x0, y0, x1, y1 = o["bbox"]
                assert a["bbox"] == [x0, y0, x1 - x0, y1 - y0] and a["area"] == (x1 - x0) * (y1 - y0)
                assert NUS_CATEGORIES[a["category_id"]] == NAME_MAPPING[cat_name[o["category_token"]]]
                checked_anns += 1
    assert checked_anns > 200
    assert sum(s.null_object_masks for s in summaries) > 0


# ------------------------------------------------------------------------------------------------
# bad input

def _rewrite(path: Path, fn) -> None:
    rows = json.loads(path.read_text())
    fn(rows)
    path.write_text(json.dumps(rows))


def _last_image_objects(root: Path, version: str = "v1.0-mini") -> list[int]:
    sd = json.loads((root / version / "sample_data.json").read_text())
    last = [r for r in sd if r["is_key_frame"]][-1]["token"]
    objs = json.loads((root / version / "object_ann.json").read_text())
    return [i for i, o in enumerate(objs) if o["sample_data_token"] == last and o["mask"] is not None]


@pytest.mark.parametrize("counts", ["!!!not-base64", base64.b64encode(b"0000ZZZZ~~~").decode()])
def test_corrupt_mask_aborts_version_keeps_finished_pngs(golden_root, tmp_path, counts):
    i = _last_image_objects(golden_root)[0]
    token = json.loads((golden_root / "v1.0-mini" / "object_ann.json").read_text())[i]["token"]
    _rewrite(golden_root / "v1.0-mini" / "object_ann.json", lambda rows: rows[i]["mask"].update(counts=counts))
    out = tmp_path / "out"
    with pytest.raises(UserError) as e:
        cv.convert(golden_root, ["v1.0-mini"], out, nproc=1, chunk_size=1)
    msg = str(e.value)
    assert "object_ann.json" in msg and token in msg and "corrupt mask" in msg and "\n" not in msg
    assert not (out / "nuimages_v1.0-mini.json").exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    kept = _tree(out / "semantic_masks")
    assert len(kept) == 11  # every image before the bad one

    shutil.copy(FIX / "input" / "v1.0-mini" / "object_ann.json", golden_root / "v1.0-mini" / "object_ann.json")
    [s] = cv.convert(golden_root, ["v1.0-mini"], out, nproc=1)
    assert (s.pngs_reused, s.pngs_written) == (11, 1)
    after = _tree(out / "semantic_masks")
    assert all(after[k] == kept[k] for k in kept)
    assert (out / "nuimages_v1.0-mini.json").read_bytes() == (FIX / "expected" / "nuimages_v1.0-mini.json").read_bytes()


def test_mask_size_mismatch_and_bad_filename(golden_root, tmp_path):
    i = _last_image_objects(golden_root)[0]
    _rewrite(golden_root / "v1.0-mini" / "object_ann.json", lambda rows: rows[i]["mask"].update(size=[450, 800]))
    with pytest.raises(UserError, match="mask size .* differs from the image size"):
        cv.convert(golden_root, ["v1.0-mini"], tmp_path / "out", nproc=1)
    shutil.copy(FIX / "input" / "v1.0-mini" / "object_ann.json", golden_root / "v1.0-mini" / "object_ann.json")

    def escape(rows):
        next(r for r in rows if r["is_key_frame"])["filename"] = "../../evil.jpg"
    _rewrite(golden_root / "v1.0-mini" / "sample_data.json", escape)
    with pytest.raises(UserError, match="must be a relative path"):
        cv.convert(golden_root, ["v1.0-mini"], tmp_path / "out2", nproc=1)
    assert not (tmp_path / "out2" / "nuimages_v1.0-mini.json").exists()


def test_all_versions_are_checked_before_writing(golden_root, tmp_path):
    (golden_root / "v1.0-val" / "category.json").unlink()
    with pytest.raises(UserError, match="v1.0-val/category.json: table file is missing"):
        cv.convert(golden_root, list(VERSIONS), tmp_path / "out", nproc=1)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# interruption and resume

def test_interrupted_run_resumes_without_rewriting_finished_pngs(golden_root, tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    cv.convert(golden_root, list(VERSIONS), ref, nproc=1)

    calls = {"n": 0}
    original = convert_worker.WorkerState.process

    def flaky(self, item):  # each worker process dies after painting 3 images
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("simulated crash")
        return original(self, item)

    monkeypatch.setattr(convert_worker.WorkerState, "process", flaky)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        cv.convert(golden_root, list(VERSIONS), out, nproc=2, chunk_size=1)
    monkeypatch.setattr(convert_worker.WorkerState, "process", original)
    assert not list(out.glob("*.json"))
    finished = _tree(out / "semantic_masks")
    assert 3 <= len(finished) < 16
    manifest = Manifest(out / MANIFEST_NAME)
    assert set(manifest.entries) == set(finished)

    summaries = cv.convert(golden_root, list(VERSIONS), out, nproc=2)
    assert sum(s.pngs_reused for s in summaries) == len(finished)
    after = _tree(out / "semantic_masks")
    assert all(after[k] == v for k, v in finished.items())  # same inode and mtime: not rewritten
    _assert_same_output(out, ref, [f"nuimages_{v}.json" for v in VERSIONS])
    assert Manifest(out / MANIFEST_NAME).entries.keys() == Manifest(ref / MANIFEST_NAME).entries.keys()


def test_a_failed_run_ends_its_workers_and_removes_their_temporary_pngs(golden_root, tmp_path, monkeypatch):
    """One worker fails while the other is in the middle of writing a PNG (here: its temporary
    file exists and it sleeps): the pool is terminated (SIGTERM, default action), the error
    reaches the caller at once, and the parent removes the killed worker's temporary file."""
    out = tmp_path / "out"
    marker = tmp_path / "writing"
    tmp_png = out / "semantic_masks" / ".frame.png.4242.tmp.png"

    def stuck_or_failing(self, item):
        if item[0] == 0:  # the first image's worker fails once the other is mid-write
            deadline = time.monotonic() + 60
            while not tmp_png.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            raise RuntimeError("simulated crash")
        with contextlib.suppress(FileExistsError):
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            tmp_png.parent.mkdir(parents=True, exist_ok=True)
            tmp_png.write_bytes(b"half a png")
        time.sleep(600)

    monkeypatch.setattr(convert_worker.WorkerState, "process", stuck_or_failing)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="simulated crash"):
        cv.convert(golden_root, ["v1.0-mini"], out, nproc=2, chunk_size=1)
    assert time.monotonic() - t0 < 60  # the sleeping worker did not hold the pool up
    assert marker.exists() and not tmp_png.exists()
    assert not [p for p in out.rglob("*") if p.name.endswith((".tmp", ".tmp.png"))]


def test_stale_pngs_are_repainted_and_only_those(golden_root, tmp_path):
    out = tmp_path / "out"
    cv.convert(golden_root, ["v1.0-mini"], out, nproc=1)
    first = _tree(out / "semantic_masks")
    [again] = cv.convert(golden_root, ["v1.0-mini"], out, nproc=1)
    assert (again.pngs_written, again.pngs_reused) == (0, 12) and _tree(out / "semantic_masks") == first

    # Input change: an object of the last image becomes another (unmapped) category.
    cats = {c["name"]: c["token"] for c in json.loads((golden_root / "v1.0-mini" / "category.json").read_text())}
    i = _last_image_objects(golden_root)[0]
    _rewrite(golden_root / "v1.0-mini" / "object_ann.json", lambda rows: rows[i].update(category_token=cats["animal"]))
    sd = json.loads((golden_root / "v1.0-mini" / "sample_data.json").read_text())
    keys = [r for r in sd if r["is_key_frame"]]
    changed = png_rel_path(keys[-1]["filename"])
    # Output change behind our back: one PNG deleted, one overwritten by something else.
    deleted = png_rel_path(keys[0]["filename"])
    edited = png_rel_path(keys[1]["filename"])
    (out / "semantic_masks" / deleted).unlink()
    cv2.imwrite(str(out / "semantic_masks" / edited), np.zeros((900, 1600), np.uint8))
    edited_stat = _tree(out / "semantic_masks")[edited]

    [s] = cv.convert(golden_root, ["v1.0-mini"], out, nproc=2)
    assert (s.pngs_written, s.pngs_reused) == (3, 9)
    after = _tree(out / "semantic_masks")
    for k, v in first.items():
        if k in (changed, deleted):
            continue
        if k == edited:
            assert after[k] != edited_stat
        else:
            assert after[k] == v
    ref = tmp_path / "ref"
    cv.convert(golden_root, ["v1.0-mini"], ref, nproc=1)
    _assert_same_output(out, ref, ["nuimages_v1.0-mini.json"])


def test_killed_process_resumes(tmp_path):
    """SIGKILL the whole process group mid-run; the rerun repaints only what is not journaled."""
    from nuimcli.synthetic import generate_nuimages

    root = tmp_path / "nuimages"
    generate_nuimages(root, "v1.0-train", num_samples=100, width=1600, height=900, seed=5,
                      objects_per_image=(10, 30), write_images=False, sweeps_per_sample=1)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "nuimcli", "convert", "--data-root", str(root), "--version", "v1.0-train",
           "--out-dir", str(out), "--nproc", "2"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and p.poll() is None:
            if len(list((out / "semantic_masks").rglob("*.png"))) >= 20:
                break
            time.sleep(0.01)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    assert not (out / "nuimages_v1.0-train.json").exists()
    journaled = Manifest(out / MANIFEST_NAME).entries
    finished = {k: v for k, v in _tree(out / "semantic_masks").items() if k in journaled}
    assert len(finished) >= 10

    r = subprocess.run(cmd + ["--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    [s] = json.loads(r.stdout)
    assert s["pngs_reused"] >= len(finished) and s["images"] == 100
    after = _tree(out / "semantic_masks")
    assert all(after[k] == v for k, v in finished.items())
    assert not [q for q in out.rglob("*") if ".tmp" in q.name]
    ref = tmp_path / "ref"
    cv.convert(root, ["v1.0-train"], ref, nproc=1)
    _assert_same_output(out, ref, ["nuimages_v1.0-train.json"])


def test_one_run_per_out_dir(golden_root, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "out"
    out.mkdir()
    with open(out / cv.LOCK_NAME, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(UserError, match="another 'nuim convert' is writing"):
            cv.convert(golden_root, ["v1.0-mini"], out, nproc=1)
    cv.convert(golden_root, ["v1.0-mini"], out, nproc=1)
    assert (out / "nuimages_v1.0-mini.json").exists()
