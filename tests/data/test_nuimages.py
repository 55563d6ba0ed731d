"""nuImages table reading: streaming rows, masks (vs pycocotools / the devkit), categories, indexing errors."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from nuimcli.data import nuimages as nu
from nuimcli.errors import UserError

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "converter_golden" / "input"


def _encode(m: np.ndarray) -> dict:
    """The nuImages mask format (what the devkit decodes)."""
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(x) for x in rle["size"]], "counts": base64.b64encode(rle["counts"]).decode()}


# ------------------------------------------------------------------------------------------------
# iter_table

@pytest.mark.parametrize("chunk", [7, 64, 1 << 22])
def test_iter_table_rows_and_byte_ranges(chunk):
    path = GOLDEN / "v1.0-mini" / "object_ann.json"
    raw = path.read_bytes()
    rows = list(nu.iter_table(path, chunk_bytes=chunk))
    assert [r for r, _, _ in rows] == json.loads(raw)
    for row, off, n in rows:
        assert json.loads(raw[off:off + n]) == row


def test_iter_table_non_ascii_offsets_are_bytes(tmp_path):
    rows = [{"token": "a", "name": "voiture é 車"}, {"token": "b", "name": "ü" * 50}, {"token": "c"}]
    p = tmp_path / "t.json"
    p.write_text(" [\n" + ",\n ".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n", encoding="utf-8")
    raw = p.read_bytes()
    for chunk in (3, 5, 1000):
        got = list(nu.iter_table(p, chunk_bytes=chunk))
        assert [r for r, _, _ in got] == rows
        for row, off, n in got:
            assert json.loads(raw[off:off + n].decode("utf-8")) == row
            with open(p, "rb") as f:
                assert nu.read_row(f, off, n, p) == row


@pytest.mark.parametrize("text,needle", [
    ('[{"token": "a"}, {"token": "b",}]', "not valid JSON"),
    ('[{"token": "a"}, {"token": "b"}', "unexpected end"),
    ('[{"token": "a"} {"token": "b"}]', "expected ',' or ']'"),
    ('{"token": "a"}', "expected a JSON array"),
    ('[{"token": "a"}, 3]', "row 1 is not a JSON object"),
    ('[{"token": "a"}] x', "extra data"),
    ('', "unexpected end"),
])
def test_iter_table_bad_json_names_the_file(tmp_path, text, needle):
    p = tmp_path / "object_ann.json"
    p.write_text(text)
    for chunk in (4, 1000):
        with pytest.raises(UserError) as e:
            list(nu.iter_table(p, chunk_bytes=chunk))
        assert str(p) in str(e.value) and needle in str(e.value)


def test_iter_table_empty_array_and_missing_file(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(" [ ] ")
    assert list(nu.iter_table(p)) == []
    with pytest.raises(UserError, match="missing"):
        list(nu.iter_table(tmp_path / "nope.json"))


def test_iter_table_not_utf8(tmp_path):
    p = tmp_path / "t.json"
    p.write_bytes(b'[{"token": "\xff\xfe"}]')
    with pytest.raises(UserError, match="not UTF-8"):
        list(nu.iter_table(p))


# ------------------------------------------------------------------------------------------------
# masks

def _random_masks(rng: np.random.Generator):
    h, w = 37, 53
    yield np.zeros((h, w), np.uint8)
    yield np.ones((h, w), np.uint8)
    one = np.zeros((h, w), np.uint8)
    one[0, 0] = 1
    yield one
    last = np.zeros((h, w), np.uint8)
    last[-1, -1] = 1
    yield last
    for p in (0.02, 0.3, 0.5, 0.9):
        yield (rng.random((h, w)) < p).astype(np.uint8)
    big = np.zeros((900, 1600), np.uint8)
    big[100:700, 30:1500] = 1
    big[300:310, :] = 0
    yield big


def test_rle_decoding_matches_pycocotools():
    rng = np.random.default_rng(0)
    for m in _random_masks(rng):
        enc = _encode(m)
        expected = mask_utils.decode({"size": enc["size"], "counts": base64.b64decode(enc["counts"])})
        got = nu.decode_mask(enc)
        assert got.shape == m.shape and np.array_equal(got, expected) and np.array_equal(got, m)


def test_paint_runs_overwrites_in_order():
    rng = np.random.default_rng(1)
    h, w = 20, 30
    masks = [(rng.random((h, w)) < 0.4).astype(np.uint8) for _ in range(4)]
    expected = np.zeros((h, w), np.uint8)
    flat = np.zeros(h * w, np.uint8)
    for v, m in enumerate(masks, start=3):
        expected[m == 1] = v
        nu.paint_runs(flat, nu.mask_runs(_encode(m)), v)
    assert np.array_equal(flat.reshape(w, h).T, expected)


def test_golden_masks_decode_like_the_devkit(nuimages_devkit):
    from nuimages.utils.utils import mask_decode

    n = 0
    for table in ("object_ann", "surface_ann"):
        for row in nu.load_table(GOLDEN / "v1.0-mini" / f"{table}.json"):
            if row["mask"] is not None:
                assert np.array_equal(nu.decode_mask(row["mask"]), mask_decode(row["mask"]))
                n += 1
    assert n > 200


@pytest.mark.parametrize("mutate,needle", [
    (lambda s: s[:-1] + "\x7f", "alphabet"),          # a character outside the COCO alphabet
    (lambda s: s + "m", "truncated"),                 # continuation bit on the last char
    (lambda s: s + "1", "covers"),                    # an extra run: too many pixels
    (lambda s: s[:-2] if len(s) > 3 else "", "covers"),
])
def test_corrupt_rle_is_detected(mutate, needle):
    m = np.zeros((10, 10), np.uint8)
    m[2:5, 3:8] = 1
    enc = _encode(m)
    s = base64.b64decode(enc["counts"]).decode()
    bad = {"size": enc["size"], "counts": base64.b64encode(mutate(s).encode("latin-1")).decode()}
    with pytest.raises(nu.CorruptMask, match=needle):
        nu.mask_runs(bad)


def test_bad_base64_and_size():
    with pytest.raises(nu.CorruptMask, match="base64"):
        nu.mask_runs({"size": [2, 2], "counts": "abc"})
    with pytest.raises(nu.CorruptMask, match="size"):
        nu.mask_runs({"size": [2], "counts": "MTA="})


# ------------------------------------------------------------------------------------------------
# categories

def test_semantic_index_mapping_matches_the_devkit(nuimages_devkit):
    from nuimages.utils.utils import name_to_index_mapping

    rows = nu.load_table(GOLDEN / "v1.0-mini" / "category.json")
    assert nu.name_to_index_mapping(rows) == name_to_index_mapping(rows)
    reduced = [r for r in rows if r["name"] not in ("animal", "vehicle.car")]
    assert nu.name_to_index_mapping(reduced) == name_to_index_mapping(reduced)
    m = nu.name_to_index_mapping(rows)
    assert m["animal"] == 1 and m["vehicle.truck"] == 23 and m["flat.driveable_surface"] == 24 and m["vehicle.ego"] == 31


def test_too_many_categories_is_a_user_error():
    rows = [{"token": str(i), "name": f"c{i:02d}"} for i in range(24)]
    with pytest.raises(UserError, match="23"):
        nu.name_to_index_mapping(rows)


def test_categories_coco_ids_follow_name_mapping():
    cats = nu.load_categories(GOLDEN / "v1.0-mini" / "category.json")
    by_name = {c.name: c for c in cats.values()}
    assert len(nu.NAME_MAPPING) == 14 and nu.NUS_CATEGORIES[0] == "car" and nu.NUS_CATEGORIES[9] == "barrier"
    for name, c in by_name.items():
        if name in nu.NAME_MAPPING:
            assert nu.NUS_CATEGORIES[c.coco_id] == nu.NAME_MAPPING[name]
        else:
            assert c.coco_id is None
    assert by_name["vehicle.emergency.police"].coco_id is None and by_name["vehicle.bus.bendy"].coco_id == 3


# ------------------------------------------------------------------------------------------------
# index_version

@pytest.fixture()
def root(tmp_path) -> Path:
    shutil.copytree(GOLDEN / "v1.0-mini", tmp_path / "v1.0-mini")
    return tmp_path


def _rewrite(path: Path, fn) -> None:
    rows = json.loads(path.read_text())
    fn(rows)
    path.write_text(json.dumps(rows))


def test_index_groups_rows_per_key_frame(root):
    idx = nu.index_version(root, "v1.0-mini")
    sd = json.loads((root / "v1.0-mini" / "sample_data.json").read_text())
    keys = [r for r in sd if r["is_key_frame"]]
    assert [k.token for k in idx.key_frames] == [r["token"] for r in keys]
    objects = json.loads((root / "v1.0-mini" / "object_ann.json").read_text())
    raw = (root / "v1.0-mini" / "object_ann.json").read_bytes()
    for i, k in enumerate(keys):
        got = [json.loads(raw[o:o + n]) for o, n in idx.objects.rows_of(i)]
        assert got == [o for o in objects if o["sample_data_token"] == k["token"]]
    assert idx.objects.num_rows == len(objects) and idx.objects.num_non_key_frame == 0


def test_index_errors_name_file_and_token(root):
    v = root / "v1.0-mini"
    with pytest.raises(UserError, match="data root .* does not exist"):
        nu.index_version(root / "nope", "v1.0-mini")
    with pytest.raises(UserError, match="version folder .*v1.0-trainval does not exist .*found: v1.0-mini"):
        nu.index_version(root, "v1.0-trainval")

    _rewrite(v / "object_ann.json", lambda rows: rows[5].update(sample_data_token="f" * 32))
    with pytest.raises(UserError) as e:
        nu.index_version(root, "v1.0-mini")
    assert "object_ann.json" in str(e.value) and "f" * 32 in str(e.value) and "sample_data.json" in str(e.value)

    shutil.copy(GOLDEN / "v1.0-mini" / "object_ann.json", v / "object_ann.json")
    _rewrite(v / "surface_ann.json", lambda rows: rows[2].update(category_token="c" * 32))
    with pytest.raises(UserError, match=f"surface_ann.json: surface_ann .*category_token {'c' * 32}"):
        nu.index_version(root, "v1.0-mini")

    (v / "surface_ann.json").unlink()
    with pytest.raises(UserError, match="surface_ann.json: table file is missing"):
        nu.index_version(root, "v1.0-mini")


def test_annotations_on_sweeps_are_ignored_and_counted(root):
    v = root / "v1.0-mini"
    sd = json.loads((v / "sample_data.json").read_text())
    sweep = next(r["token"] for r in sd if not r["is_key_frame"])
    _rewrite(v / "object_ann.json", lambda rows: rows[0].update(sample_data_token=sweep))
    idx = nu.index_version(root, "v1.0-mini")
    assert idx.objects.num_non_key_frame == 1
    assert sum(len(idx.objects.rows_of(i)) for i in range(len(idx.key_frames))) == idx.objects.num_rows - 1


def test_duplicate_key_frame_and_missing_field(root):
    v = root / "v1.0-mini"
    orig = (v / "sample_data.json").read_text()

    def dup(rows):
        keys = [r for r in rows if r["is_key_frame"]]
        keys[1]["token"] = keys[0]["token"]
    _rewrite(v / "sample_data.json", dup)
    with pytest.raises(UserError, match="duplicate token"):
        nu.index_version(root, "v1.0-mini")
    (v / "sample_data.json").write_text(orig)
    _rewrite(v / "object_ann.json", lambda rows: rows[3].pop("bbox"))
    with pytest.raises(UserError, match="object_ann .*'bbox' is missing"):
        nu.index_version(root, "v1.0-mini")
