"""Test-time preprocessing: mmcv's keep-ratio size rule, cv2 bilinear, normalisation, padding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from nuimcli.data.transforms import (load_image, normalize, pad_batch, padded_size, rescale_size,
                                     resize_keep_ratio, to_chw_tensor)
from nuimcli.errors import UserError


def test_rescale_size_rounds_half_up():
    # s = min(1000/13, 5/10) = 0.5 → 13 * 0.5 = 6.5 → int(6.5 + 0.5) = 7 (round() gives 6, floor 6)
    assert rescale_size(13, 10, (1000, 5)) == ((7, 5), 0.5)
    # s = min(150/301, 100/201) → 301 * s = 149.75 → 150 (floor would give 149)
    (w, h), s = rescale_size(301, 201, (150, 100))
    assert (w, h) == (150, 100) and s == pytest.approx(100 / 201)
    # the order of the scale pair does not matter (long/short), 1600x900 is unchanged
    assert rescale_size(1600, 900, (900, 1600)) == ((1600, 900), 1.0)
    assert rescale_size(800, 450, (1600, 900))[0] == (1600, 900)
    with pytest.raises(UserError):
        rescale_size(10, 10, (0, 5))


def test_resize_keep_ratio_is_cv2_bilinear_with_realised_scale():
    img = np.random.RandomState(0).randint(0, 256, (201, 301, 3)).astype(np.uint8)
    out, sf = resize_keep_ratio(img, (150, 100))
    assert out.shape == (100, 150, 3) and out.dtype == np.uint8
    assert np.array_equal(out, cv2.resize(img, (150, 100), interpolation=cv2.INTER_LINEAR))
    assert sf.dtype == np.float32
    assert sf.tolist() == pytest.approx([150 / 301, 100 / 201, 150 / 301, 100 / 201])
    same, sf1 = resize_keep_ratio(img, (301, 201))
    assert same is img and sf1.tolist() == [1, 1, 1, 1]


def test_normalize_pytorch_and_caffe_style():
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # B, G, R
    rgb = normalize(img, [1, 2, 3], [2, 4, 5], to_rgb=True)
    assert rgb.dtype == np.float32
    assert rgb[0, 0].tolist() == pytest.approx([(30 - 1) / 2, (20 - 2) / 4, (10 - 3) / 5])
    bgr = normalize(img, [103.53, 116.28, 123.675], [1, 1, 1], to_rgb=False)
    assert bgr[0, 0].tolist() == pytest.approx([10 - 103.53, 20 - 116.28, 30 - 123.675], abs=1e-4)
    assert img[0, 0].tolist() == [10, 20, 30]  # input untouched
    with pytest.raises(UserError):
        normalize(np.zeros((4, 4), np.uint8), [0, 0, 0], [1, 1, 1], True)


def test_normalize_matches_mmdet2_to_the_last_bit():
    # mmdet 2.x keeps mean/std as float32 and mmcv widens them to float64: for R = 6 this gives
    # -2.0151556 where pure float64 constants give -2.0151553 (one ulp apart).
    img = np.zeros((1, 1, 3), np.uint8)
    img[0, 0] = (11, 7, 6)  # B, G, R
    out = normalize(img, [123.675, 116.28, 103.53], [58.395, 57.12, 57.375], to_rgb=True)
    assert out[0, 0].tolist() == [np.float32(-2.0151556), np.float32(-1.9131653),
                                  np.float32(-1.6127232)]


def test_normalize_is_the_same_for_every_dtype_and_size():
    # uint8 goes through a lookup table, other dtypes through float64 arithmetic: same bits; a
    # 1x1 image is normalised too (OpenCV 5 read the (1, 3) mean as an array for it)
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for mean, std, rgb in (([123.675, 116.28, 103.53], [58.395, 57.12, 57.375], True),
                           ([103.53, 116.28, 123.675], [1.0, 1.0, 1.0], False)):
        a = normalize(img, mean, std, rgb)
        assert a.dtype == np.float32 and a.shape == img.shape
        assert np.array_equal(a, normalize(img.astype(np.float32), mean, std, rgb))
        assert np.array_equal(a[:1, :1], normalize(img[:1, :1].copy(), mean, std, rgb))
    small = np.array([[[0, 128, 255], [37, 201, 99]]], np.uint8)  # known answers (mmcv on OpenCV 4)
    out = normalize(small, [123.675, 116.28, 103.53], [58.395, 57.12, 57.375], to_rgb=True)
    assert out.tolist() == [[[np.float32(2.2489083), np.float32(0.2051821), np.float32(-1.8044444)],
                             [np.float32(-0.42255336), np.float32(1.4831933), np.float32(-1.1595643)]]]


def test_pad_batch_bottom_right_to_multiple():
    a = torch.ones(3, 33, 40)
    b = torch.full((3, 20, 70), 2.0)
    batch = pad_batch([a, b], 32)
    assert batch.shape == (2, 3, 64, 96)
    assert batch[0, :, :33, :40].eq(1).all() and batch[0, :, 33:].eq(0).all() and batch[0, :, :, 40:].eq(0).all()
    assert batch[1, :, :20, :70].eq(2).all() and batch[1, :, 20:].eq(0).all()
    assert padded_size(900, 1600) == (928, 1600)
    assert to_chw_tensor(np.zeros((5, 6, 3), np.float32)).shape == (3, 5, 6)


def test_load_image(tmp_path):
    img = np.random.RandomState(1).randint(0, 256, (7, 9, 3)).astype(np.uint8)
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), img)
    assert np.array_equal(load_image(path), img)
    assert load_image(img) is img
    assert load_image(img[:, :, 0]).shape == (7, 9, 3)
    with pytest.raises(UserError, match="cannot read"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(UserError, match="uint8"):
        load_image(img.astype(np.float32))
    with pytest.raises(UserError, match="H x W x 3"):
        load_image(np.zeros((4, 4, 4), np.uint8))
