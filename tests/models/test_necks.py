"""FPN: key names, shapes, exact-size nearest top-down path, P6 by stride-2 subsampling."""

from __future__ import annotations

import numpy as np
import torch

from nuimcli.models.necks import FPN


def _inputs(sizes, channels=(8, 16, 32, 64), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, c, h, w, generator=g) for c, (h, w) in zip(channels, sizes)]


def test_key_names_and_order():
    fpn = FPN((256, 512, 1024, 2048), 256, 5)
    keys = list(fpn.state_dict())
    assert keys[:4] == ["lateral_convs.0.conv.weight", "lateral_convs.0.conv.bias", "lateral_convs.1.conv.weight", "lateral_convs.1.conv.bias"]
    assert keys[8:10] == ["fpn_convs.0.conv.weight", "fpn_convs.0.conv.bias"]
    assert len(keys) == 16
    assert tuple(fpn.state_dict()["lateral_convs.3.conv.weight"].shape) == (256, 2048, 1, 1)
    assert tuple(fpn.state_dict()["fpn_convs.2.conv.weight"].shape) == (256, 256, 3, 3)


def test_shapes_with_odd_sizes():
    # C2..C5 of a 67x101 image: P6 is ceil(P5 / 2)
    fpn = FPN((8, 16, 32, 64), 4, 5)
    outs = fpn(_inputs([(17, 26), (9, 13), (5, 7), (3, 4)]))
    assert [tuple(o.shape) for o in outs] == [(1, 4, 17, 26), (1, 4, 9, 13), (1, 4, 5, 7), (1, 4, 3, 4), (1, 4, 2, 2)]


def _nearest_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """PyTorch 'nearest' to an exact size: source index floor(dst * in / out)."""
    _, ih, iw = x.shape
    ys = np.floor(np.arange(h) * (ih / h)).astype(int)
    xs = np.floor(np.arange(w) * (iw / w)).astype(int)
    return x[:, ys][:, :, xs]


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((o, h, wd))
    for i in range(k):
        for j in range(k):
            out += np.einsum("oc,chw->ohw", w[:, :, i, j], xp[:, i : i + h, j : j + wd])
    return out + b[:, None, None]


def test_matches_numpy_transcription():
    torch.manual_seed(0)
    fpn = FPN((8, 16, 32, 64), 4, 5)
    for p in fpn.parameters():  # non-zero biases too
        torch.nn.init.uniform_(p, -0.5, 0.5)
    sizes = [(17, 26), (9, 13), (5, 7), (3, 4)]
    xs = _inputs(sizes)
    with torch.no_grad():
        outs = [o[0].double().numpy() for o in fpn(xs)]
    sd = {k: v.double().numpy() for k, v in fpn.state_dict().items()}
    lat = [_conv(x[0].double().numpy(), sd[f"lateral_convs.{i}.conv.weight"], sd[f"lateral_convs.{i}.conv.bias"], 0) for i, x in enumerate(xs)]
    for i in (3, 2, 1):  # top-down, cumulative
        lat[i - 1] = lat[i - 1] + _nearest_to(lat[i], *lat[i - 1].shape[1:])
    ref = [_conv(lat[i], sd[f"fpn_convs.{i}.conv.weight"], sd[f"fpn_convs.{i}.conv.bias"], 1) for i in range(4)]
    ref.append(ref[3][:, ::2, ::2])
    for a, b in zip(outs, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_init_zero_bias():
    fpn = FPN((8, 16, 32, 64), 4, 5)
    assert all(float(m.conv.bias.detach().abs().sum()) == 0 for m in list(fpn.lateral_convs) + list(fpn.fpn_convs))
