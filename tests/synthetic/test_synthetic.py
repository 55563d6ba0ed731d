"""Synthetic nuImages: official schema, devkit compatibility, masks, pixels, determinism."""

from __future__ import annotations

import base64
import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from nuimcli.synthetic import (
    CATEGORY_RGB,
    CATEGORY_TO_CLASS,
    encode_mask,
    encode_mask_crop,
    generate_nuimages,
    write_default_demo_set,
)
from nuimcli.errors import UserError

W, H = 384, 216
TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "log", "object_ann", "sample",
          "sample_data", "sensor", "surface_ann")
# Field lists of the official schema (docs/schema_nuimages.md of nuscenes-devkit).
FIELDS = {
    "attribute": ["token", "name", "description"],
    "calibrated_sensor": ["token", "sensor_token", "translation", "rotation", "camera_intrinsic",
                          "camera_distortion"],
    "category": ["token", "name", "description"],
    "ego_pose": ["token", "translation", "rotation", "timestamp", "rotation_rate", "acceleration",
                 "speed"],
    "log": ["token", "logfile", "vehicle", "date_captured", "location"],
    "object_ann": ["token", "sample_data_token", "category_token", "attribute_tokens", "bbox", "mask"],
    "sample": ["token", "timestamp", "log_token", "key_camera_token"],
    "sample_data": ["token", "sample_token", "ego_pose_token", "calibrated_sensor_token", "filename",
                    "fileformat", "width", "height", "timestamp", "is_key_frame", "next", "prev"],
    "sensor": ["token", "channel", "modality"],
    "surface_ann": ["token", "sample_data_token", "category_token", "mask"],
}
HEX32 = re.compile(r"^[0-9a-f]{32}$")
MAPPED_CLASSES = {"car", "truck", "trailer", "bus", "construction_vehicle", "bicycle", "motorcycle",
                  "pedestrian", "traffic_cone", "barrier"}


def _decode(mask: dict) -> np.ndarray:
    # The devkit's decoding (nuimages.utils.utils.mask_decode), without needing the devkit.
    return mask_utils.decode({"size": mask["size"], "counts": base64.b64decode(mask["counts"])})


def _load(root: Path, version: str) -> dict[str, list]:
    return {t: json.loads((root / version / f"{t}.json").read_text()) for t in TABLES}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("nuim_synth")
    summary = generate_nuimages(root, "v1.0-mini", num_samples=8, width=W, height=H, seed=3,
                                sweeps_per_sample=2, objects_per_image=(6, 14),
                                null_mask_fraction=0.15)
    return root, summary, _load(root, "v1.0-mini")


# ---------------------------------------------------------------------------------------
# RLE


def test_encode_mask_crop_equals_pycocotools_on_the_full_mask():
    rng = np.random.default_rng(0)
    h, w = 37, 23
    cases = []
    for _ in range(40):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
        crop = rng.random((y1 - y0, x1 - x0)) < rng.uniform(0.1, 0.9)
        cases.append((crop, x0, y0))
    # Full-height windows: runs continue from a column's bottom into the next column's top.
    cases.append((np.ones((h, 5), bool), 4, 0))
    cases.append((np.ones((h, w), bool), 0, 0))
    cases.append((np.zeros((3, 3), bool), 2, 2))
    corner = np.zeros((4, 4), bool)
    corner[0, 0] = corner[-1, -1] = True
    cases.append((corner, 0, 0))
    cases.append((corner, w - 4, h - 4))
    for crop, x0, y0 in cases:
        full = np.zeros((h, w), np.uint8)
        full[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        ours = encode_mask_crop(crop, int(x0), int(y0), h, w)
        ref = mask_utils.encode(np.asfortranarray(full))
        assert ours["size"] == [h, w]
        assert isinstance(ours["counts"], str)
        assert base64.b64decode(ours["counts"]) == ref["counts"]
        assert np.array_equal(_decode(ours), full)
    assert np.array_equal(_decode(encode_mask(full)), full)
    with pytest.raises(ValueError):
        encode_mask_crop(np.ones((3, 3), bool), w - 2, 0, h, w)


# ---------------------------------------------------------------------------------------
# Schema


def test_tables_follow_the_official_schema(dataset):
    root, summary, t = dataset
    for name in TABLES:
        for row in t[name]:
            assert list(row) == FIELDS[name], name
            assert HEX32.match(row["token"]), (name, row["token"])
    names = [c["name"] for c in t["category"]]
    assert len(names) == 25 == len(set(names))
    assert {"flat.driveable_surface", "vehicle.ego", "vehicle.car", "animal",
            "static_object.bicycle_rack", "human.pedestrian.police_officer"} <= set(names)
    assert all(c["description"] for c in t["category"])
    assert len(t["attribute"]) == 12
    assert {"vehicle.parked", "cycle.with_rider", "pedestrian.moving",
            "vertical_position.on_ground"} <= {a["name"] for a in t["attribute"]}
    assert sorted(s["channel"] for s in t["sensor"]) == sorted(
        ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"])
    assert all(s["modality"] == "camera" for s in t["sensor"])

    idx = {name: {r["token"]: r for r in rows} for name, rows in t.items()}
    logfiles = {lg["logfile"] for lg in t["log"]}
    for lg in t["log"]:
        assert re.match(r"^n\d{3}-\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d[+-]\d{4}$", lg["logfile"])
        assert lg["logfile"][5:15] == lg["date_captured"]
    for cs in t["calibrated_sensor"]:
        assert cs["sensor_token"] in idx["sensor"]
        assert len(cs["translation"]) == 3 and len(cs["rotation"]) == 4
        assert abs(np.linalg.norm(cs["rotation"]) - 1) < 1e-6
        assert np.array(cs["camera_intrinsic"]).shape == (3, 3)
        assert len(cs["camera_distortion"]) in (5, 6)

    assert len(t["sample"]) == summary.num_key_frames == 8
    sd = t["sample_data"]
    assert len(sd) == 8 * 3
    assert sum(r["is_key_frame"] for r in sd) == 8 and summary.num_sweeps == 16
    for r in sd:
        assert r["sample_token"] in idx["sample"]
        assert r["calibrated_sensor_token"] in idx["calibrated_sensor"]
        ep = idx["ego_pose"][r["ego_pose_token"]]
        assert ep["timestamp"] == r["timestamp"] and isinstance(r["timestamp"], int)
        assert (r["width"], r["height"], r["fileformat"]) == (W, H, "jpg")
        cam = idx["sensor"][idx["calibrated_sensor"][r["calibrated_sensor_token"]]["sensor_token"]]["channel"]
        m = re.match(r"^(samples|sweeps)/([A-Z_]+)/(.+)__([A-Z_]+)__(\d+)\.jpg$", r["filename"])
        assert m, r["filename"]
        assert m.group(1) == ("samples" if r["is_key_frame"] else "sweeps")
        assert m.group(2) == m.group(4) == cam
        assert m.group(3) in logfiles and int(m.group(5)) == r["timestamp"]
        for link in ("prev", "next"):
            assert r[link] == "" or r[link] in idx["sample_data"]
        if r["next"]:
            nxt = idx["sample_data"][r["next"]]
            assert nxt["prev"] == r["token"] and nxt["timestamp"] > r["timestamp"]
    for s in t["sample"]:
        key = idx["sample_data"][s["key_camera_token"]]
        assert key["is_key_frame"] and key["sample_token"] == s["token"]
        # The chain: sweeps back to an empty prev, then forward again to the key frame.
        back = [key]
        while back[-1]["prev"]:
            back.append(idx["sample_data"][back[-1]["prev"]])
        forward = [back[-1]]
        while forward[-1]["next"]:
            forward.append(idx["sample_data"][forward[-1]["next"]])
        assert forward == back[::-1] and len(forward) == 3 and key["next"] == ""
        assert all(r["sample_token"] == s["token"] and not r["is_key_frame"] for r in forward[:-1])
        assert s["timestamp"] == key["timestamp"] and s["log_token"] in idx["log"]

    for o in t["object_ann"]:
        assert idx["sample_data"][o["sample_data_token"]]["is_key_frame"]
        cat = idx["category"][o["category_token"]]["name"]
        assert cat not in ("flat.driveable_surface", "vehicle.ego")
        assert all(a in idx["attribute"] for a in o["attribute_tokens"])
        b = o["bbox"]
        assert all(type(v) is int for v in b)
        assert 0 <= b[0] <= b[2] < W and 0 <= b[1] <= b[3] < H
    for s in t["surface_ann"]:
        assert idx["category"][s["category_token"]]["name"] in ("flat.driveable_surface", "vehicle.ego")


def test_masks_are_visible_parts_inside_amodal_boxes_and_objects_occlude(dataset):
    root, summary, t = dataset
    cat = {c["token"]: c["name"] for c in t["category"]}
    nulls = [o for o in t["object_ann"] if o["mask"] is None]
    assert len(nulls) == summary.num_null_masks > 0
    assert summary.num_objects == len(t["object_ann"]) >= 8 * 4
    classes = {CATEGORY_TO_CLASS[cat[o["category_token"]]] for o in t["object_ann"]}
    assert None in classes and len(classes & MAPPED_CLASSES) >= 4

    overlaps = occluded = tight = 0
    for key in (r["token"] for r in t["sample_data"] if r["is_key_frame"]):
        objs = [o for o in t["object_ann"] if o["sample_data_token"] == key]
        surfaces = [s for s in t["surface_ann"] if s["sample_data_token"] == key]
        assert any(cat[s["category_token"]] == "flat.driveable_surface" for s in surfaces)
        for s in surfaces:
            if s["mask"] is None:
                continue
            rows = np.nonzero(_decode(s["mask"]).any(axis=1))[0]
            if cat[s["category_token"]] == "vehicle.ego":  # a band on the bottom edge
                assert rows.max() == H - 1 and rows.min() > 0.8 * H
            else:  # the road: a large region in the lower part of the image
                assert rows.max() > 0.8 * H and rows.min() > 0.35 * H  # the ego may cover the bottom
                assert _decode(s["mask"]).sum() > 0.1 * H * W
        union = np.zeros((H, W), np.int32)
        for o in objs:
            if o["mask"] is None:
                continue
            m = _decode(o["mask"])
            assert m.shape == (H, W) and m.sum() > 0
            x0, y0, x1, y1 = o["bbox"]
            assert m[y0:y1 + 1, x0:x1 + 1].sum() == m.sum()  # visible mask inside the amodal box
            ys, xs = np.nonzero(m)
            tight += [xs.min(), ys.min(), xs.max(), ys.max()] == [x0, y0, x1, y1]
            union += m
        for s in surfaces:
            if s["mask"] is not None:
                m = _decode(s["mask"])
                assert m.shape == (H, W)
                union += m
        assert union.max() <= 1  # visible parts never overlap
        for i, a in enumerate(objs):
            for b in objs[i + 1:]:
                ix0, iy0 = max(a["bbox"][0], b["bbox"][0]), max(a["bbox"][1], b["bbox"][1])
                ix1, iy1 = min(a["bbox"][2], b["bbox"][2]), min(a["bbox"][3], b["bbox"][3])
                if ix1 >= ix0 and iy1 >= iy0:
                    overlaps += 1
                    if a["mask"] is not None and b["mask"] is not None:
                        # In the shared box area the earlier object loses pixels to the later.
                        ma, mb = _decode(a["mask"]), _decode(b["mask"])
                        if mb[iy0:iy1 + 1, ix0:ix1 + 1].any() and not ma[iy0:iy1 + 1, ix0:ix1 + 1].all():
                            occluded += 1
    assert overlaps >= 5 and occluded >= 3
    # Unoccluded objects' masks span their whole box (the box is the shape's extent).
    assert tight >= 0.4 * (summary.num_objects - summary.num_null_masks)


def test_jpeg_pixels_show_objects_in_their_class_colour(dataset):
    root, summary, t = dataset
    assert summary.num_images_written == 24
    cat = {c["token"]: c["name"] for c in t["category"]}
    files = {r["token"]: root / r["filename"] for r in t["sample_data"]}
    assert all(p.is_file() for p in files.values())
    palette = {name: np.array(rgb, float) for name, rgb in CATEGORY_RGB.items()}
    checked = wrong = 0
    images = {}
    for o in t["object_ann"]:
        if o["mask"] is None:
            continue
        m = cv2.erode(_decode(o["mask"]), np.ones((5, 5), np.uint8)).astype(bool)
        if m.sum() < 40:
            continue
        path = files[o["sample_data_token"]]
        if path not in images:
            images[path] = cv2.imread(str(path))[:, :, ::-1].astype(float)
        img = images[path]
        assert img.shape == (H, W, 3)
        mean = img[m].mean(axis=0)
        name = cat[o["category_token"]]
        checked += 1
        assert np.abs(mean - palette[name]).max() < 45, (name, mean, palette[name])
        nearest = min(palette, key=lambda k: np.linalg.norm(palette[k] - mean))
        wrong += CATEGORY_TO_CLASS[nearest] != CATEGORY_TO_CLASS[name] or (
            CATEGORY_TO_CLASS[name] is None and nearest != name)
    assert checked >= 20 and wrong == 0
    # The road surface is grey, not an object colour.
    key = next(r for r in t["sample_data"] if r["is_key_frame"])
    road = next(s for s in t["surface_ann"] if s["sample_data_token"] == key["token"]
                and cat[s["category_token"]] == "flat.driveable_surface" and s["mask"] is not None)
    m = cv2.erode(_decode(road["mask"]), np.ones((5, 5), np.uint8)).astype(bool)
    mean = cv2.imread(str(files[key["token"]]))[:, :, ::-1][m].mean(axis=0)
    assert np.abs(mean - np.array([85, 85, 90])).max() < 25


# ---------------------------------------------------------------------------------------
# Official devkit


def test_official_devkit_accepts_the_dataset(dataset, tmp_path, nuimages_devkit):
    import matplotlib

    matplotlib.use("Agg")
    from nuimages import NuImages
    from nuimages.utils.utils import mask_decode

    root, summary, t = dataset
    nuim = NuImages(version="v1.0-mini", dataroot=str(root), lazy=False, verbose=False)
    for name in TABLES:
        assert len(getattr(nuim, name)) == len(t[name])
    out = io.StringIO()
    with redirect_stdout(out):
        nuim.list_categories()
        nuim.list_attributes()
        nuim.list_cameras()
        nuim.list_logs()
        nuim.list_sample_data_histogram()
        nuim.list_anns(nuim.sample[0]["token"])
    text = out.getvalue()
    assert "vehicle.car" in text and "flat.driveable_surface" in text and "CAM_" in text

    for sample in nuim.sample:
        chain = nuim.get_sample_content(sample["token"])
        assert len(chain) == 3 and chain[-1] == sample["key_camera_token"]
        rows = [nuim.get("sample_data", tok) for tok in chain]
        assert [r["is_key_frame"] for r in rows] == [False, False, True]
        assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
        timestamps, translations = nuim.get_ego_pose_data(sample["token"])
        assert translations.shape == (3, 3)

    key = nuim.get("sample", nuim.sample[0]["token"])["key_camera_token"]
    out_png = tmp_path / "render.png"
    nuim.render_image(key, annotation_type="all", with_category=True, with_attributes=True,
                      out_path=str(out_png))
    assert out_png.stat().st_size > 1000
    sweep = nuim.get_sample_content(nuim.sample[0]["token"])[0]
    nuim.render_image(sweep, annotation_type="none", out_path=str(tmp_path / "sweep.png"))
    assert (tmp_path / "sweep.png").is_file()

    for ann in nuim.object_ann + nuim.surface_ann:
        if ann["mask"] is not None:
            assert mask_decode(ann["mask"]).shape == (H, W)

    names = {c["token"]: c["name"] for c in nuim.category}
    for sd in (r for r in nuim.sample_data if r["is_key_frame"]):
        semantic, instance = nuim.get_segmentation(sd["token"])
        assert semantic.shape == instance.shape == (H, W)
        objs = [o for o in nuim.object_ann if o["sample_data_token"] == sd["token"]]
        drawn = sum(o["mask"] is not None for o in objs)
        assert len(np.unique(instance[instance > 0])) == drawn
        for s in nuim.surface_ann:
            if s["sample_data_token"] == sd["token"] and s["mask"] is not None:
                value = 24 if names[s["category_token"]] == "flat.driveable_surface" else 31
                assert (semantic[mask_decode(s["mask"]) == 1] == value).all()
        assert set(np.unique(semantic)) - {0, 24, 31} <= set(range(1, 24))


# ---------------------------------------------------------------------------------------
# Determinism, versions, demo set, validation


def test_same_arguments_give_identical_bytes(tmp_path):
    kwargs = dict(num_samples=3, width=160, height=96, seed=7, objects_per_image=(3, 6),
                  null_mask_fraction=0.2)
    generate_nuimages(tmp_path / "a", "v1.0-mini", **kwargs)
    generate_nuimages(tmp_path / "b", "v1.0-mini", **kwargs)
    generate_nuimages(tmp_path / "c", "v1.0-mini", write_images=False, **kwargs)
    generate_nuimages(tmp_path / "d", "v1.0-mini", **{**kwargs, "seed": 8})
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 10 + 9
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    # Tables do not depend on whether images are written.
    assert not (tmp_path / "c" / "samples").exists()
    for name in TABLES:
        same = (tmp_path / "a" / "v1.0-mini" / f"{name}.json").read_bytes() == \
               (tmp_path / "c" / "v1.0-mini" / f"{name}.json").read_bytes()
        assert same, name
    assert (tmp_path / "a/v1.0-mini/object_ann.json").read_bytes() != \
           (tmp_path / "d/v1.0-mini/object_ann.json").read_bytes()


def test_versions_in_one_root_have_distinct_tokens(tmp_path):
    for version in ("v1.0-train", "v1.0-val"):
        generate_nuimages(tmp_path, version, num_samples=3, width=96, height=64, write_images=False)
    train, val = _load(tmp_path, "v1.0-train"), _load(tmp_path, "v1.0-val")
    for name in ("log", "calibrated_sensor", "ego_pose", "sample", "sample_data", "object_ann",
                 "surface_ann"):
        assert not {r["token"] for r in train[name]} & {r["token"] for r in val[name]}, name
    for name in ("category", "attribute", "sensor"):  # shared by all versions, as released
        assert train[name] == val[name]
    other = generate_nuimages(tmp_path / "p", "v1.0-train", num_samples=3, width=96, height=64,
                              write_images=False, token_prefix="other")
    assert other.num_key_frames == 3
    assert not {r["token"] for r in train["sample"]} & {
        r["token"] for r in _load(tmp_path / "p", "v1.0-train")["sample"]}


def test_default_demo_set(tmp_path):
    summaries = write_default_demo_set(tmp_path, seed=0)
    assert [(s.version, s.num_key_frames) for s in summaries] == [("v1.0-train", 24), ("v1.0-val", 8)]
    for s in summaries:
        t = _load(tmp_path, s.version)
        per_image = {r["token"]: 0 for r in t["sample_data"] if r["is_key_frame"]}
        for o in t["object_ann"]:
            per_image[o["sample_data_token"]] += 1
        assert len(per_image) == s.num_key_frames
        assert all(3 <= n <= 8 for n in per_image.values())
        key = next(r for r in t["sample_data"] if r["is_key_frame"])
        assert cv2.imread(str(tmp_path / key["filename"])).shape == (216, 384, 3)


@pytest.mark.parametrize("kwargs", [
    {"width": 8}, {"num_samples": -1}, {"objects_per_image": (5, 2)},
    {"objects_per_image": "many"}, {"null_mask_fraction": 1.5}, {"version": "a/b"},
    {"jpeg_quality": 0},
])
def test_bad_arguments_raise_user_error(tmp_path, kwargs):
    with pytest.raises(UserError):
        generate_nuimages(tmp_path, **{"num_samples": 1, "width": 64, "height": 48, **kwargs})


def test_empty_version_is_valid(tmp_path):
    s = generate_nuimages(tmp_path, "v1.0-test", num_samples=0, width=64, height=48)
    t = _load(tmp_path, "v1.0-test")
    assert s.num_objects == 0 and t["sample"] == [] and len(t["category"]) == 25


def test_sweeps_after_the_key_frame(tmp_path):
    """``sweeps_after_sample``: sweeps after the key frame too (the release has up to 6 + 6), chained
    by prev/next at 2 Hz, JPEGs under sweeps/; the annotations are those of a set without them."""
    with_after = generate_nuimages(tmp_path / "a", num_samples=3, width=64, height=48, sweeps_per_sample=2,
                                   sweeps_after_sample=3, objects_per_image=(1, 2))
    without = generate_nuimages(tmp_path / "b", num_samples=3, width=64, height=48, sweeps_per_sample=2,
                                objects_per_image=(1, 2), write_images=False)
    assert with_after.num_sweeps == 3 * 5 and without.num_sweeps == 3 * 2
    table = lambda root, name: json.loads((root / "v1.0-mini" / f"{name}.json").read_text())  # noqa: E731
    sd = {r["token"]: r for r in table(tmp_path / "a", "sample_data")}
    for s in table(tmp_path / "a", "sample"):
        row = sd[s["key_camera_token"]]
        while row["prev"]:
            row = sd[row["prev"]]
        chain = [row]
        while chain[-1]["next"]:
            chain.append(sd[chain[-1]["next"]])
        assert [r["is_key_frame"] for r in chain] == [False, False, True, False, False, False]
        assert all(sd[r["next"]]["prev"] == r["token"] for r in chain[:-1])
        gaps = [b["timestamp"] - a["timestamp"] for a, b in zip(chain, chain[1:])]
        assert all(abs(g - 500_000) <= 8000 for g in gaps), gaps
        for r in chain:
            assert r["sample_token"] == s["token"] and r["filename"].startswith("sweeps/" if not r["is_key_frame"]
                                                                                 else "samples/")
            assert (tmp_path / "a" / r["filename"]).is_file()
    for name in ("sample", "object_ann", "surface_ann", "log", "calibrated_sensor"):
        assert table(tmp_path / "a", name) == table(tmp_path / "b", name), name
