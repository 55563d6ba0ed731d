"""ResNet / ResNeXt backbone: stride placement, widths, DCN numerics, freezing, norm_eval."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from nuimcli.models.backbones import Bottleneck, DeformConv2d, ResNet


def _x(b=2, h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, h, w, generator=g)


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("style", ["pytorch", "caffe"])
def test_stride_placement(style):
    net = ResNet(depth=50, style=style)
    for name in ("layer2", "layer3", "layer4"):
        block = getattr(net, name)[0]
        if style == "caffe":
            assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
        else:
            assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
        assert block.downsample[0].stride == (2, 2)  # both styles
        for later in list(getattr(net, name))[1:]:
            assert later.conv1.stride == (1, 1) and later.conv2.stride == (1, 1)
    # layer1 never strides (the max-pool did)
    assert net.layer1[0].conv1.stride == (1, 1) and net.layer1[0].conv2.stride == (1, 1)


def test_caffe_and_pytorch_differ_numerically_with_same_weights():
    a = ResNet(depth=50, style="pytorch", zero_init_residual=False).eval()
    b = ResNet(depth=50, style="caffe", zero_init_residual=False).eval()
    b.load_state_dict(a.state_dict())
    x = _x(1)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert [t.shape for t in ya] == [t.shape for t in yb]
    assert not torch.allclose(ya[1], yb[1])


@pytest.mark.parametrize("depth,channels", [(18, [64, 128, 256, 512]), (34, [64, 128, 256, 512]), (50, [256, 512, 1024, 2048])])
def test_output_shapes(depth, channels):
    net = ResNet(depth=depth).eval()
    assert net.out_channels == channels
    with torch.no_grad():
        outs = net(_x(2, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, c, 64 // s, 96 // s) for c, s in zip(channels, (4, 8, 16, 32))]


def test_odd_input_size():
    with torch.no_grad():
        outs = ResNet(depth=18).eval()(_x(1, 67, 101))
    # conv 7x7/2 pad 3 then pool 3/2 pad 1: ceil halvings
    assert [tuple(o.shape[2:]) for o in outs] == [(17, 26), (9, 13), (5, 7), (3, 4)]


@pytest.mark.parametrize("groups,widths", [(32, [128, 256, 512, 1024]), (64, [256, 512, 1024, 2048])])
def test_resnext_widths(groups, widths):
    with torch.device("meta"):
        net = ResNet(depth=101, groups=groups, base_width=4)
    for i, w in enumerate(widths):
        block = getattr(net, f"layer{i + 1}")[0]
        assert tuple(block.conv2.weight.shape) == (w, w // groups, 3, 3)
        assert block.conv2.groups == groups
        assert tuple(block.conv3.weight.shape) == (4 * 64 * 2**i, w, 1, 1)
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]


def test_zero_init_residual():
    net = ResNet(depth=50)
    assert all(float(m.bn3.weight.detach().abs().sum()) == 0 for m in net.modules() if isinstance(m, Bottleneck))
    net = ResNet(depth=50, zero_init_residual=False)
    assert all(float(m.bn3.weight.detach().abs().sum()) > 0 for m in net.modules() if isinstance(m, Bottleneck))


def test_basic_block_rejects_resnext_and_dcn():
    with pytest.raises(ValueError):
        ResNet(depth=18, groups=32, base_width=4)
    with pytest.raises(ValueError):
        ResNet(depth=18, dcn_stages=(False, True, False, False))
    with pytest.raises(ValueError):
        ResNet(depth=42)


# --------------------------------------------------------------------------- equals torchvision


def _copy_from_torchvision(ours: ResNet, tv: torch.nn.Module) -> None:
    sd = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    ours.load_state_dict(sd, strict=True)


@pytest.mark.parametrize(
    "ctor,kw",
    [
        (torchvision.models.resnet18, dict(depth=18)),
        (torchvision.models.resnet50, dict(depth=50)),
        (torchvision.models.resnext50_32x4d, dict(depth=50, groups=32, base_width=4)),
    ],
)
def test_pytorch_style_equals_torchvision(ctor, kw):
    """torchvision's ResNets put the stride on the 3x3 (v1.5): mmdet's pytorch style, same keys."""
    torch.manual_seed(0)
    tv = ctor(weights=None).eval()
    # non-trivial BN statistics so a wrong BN mapping would show
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.0)
    ours = ResNet(**kw).eval()
    _copy_from_torchvision(ours, tv)
    x = _x(1)
    with torch.no_grad():
        outs = ours(x)
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        ref = []
        for name in ("layer1", "layer2", "layer3", "layer4"):
            y = getattr(tv, name)(y)
            ref.append(y)
    for a, b in zip(outs, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- DCN


def _bilinear(img: np.ndarray, y: float, x: float) -> float:
    """Direct transcription of DCN's sampling: bilinear, zero outside, 0 unless -1 < y < H and -1 < x < W."""
    h, w = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    ly, lx = y - y0, x - x0
    val = 0.0
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < h and 0 <= xx < w:
                val += wy * wx * img[yy, xx]
    return val


def _dcn_reference(x, weight, offsets, stride, pad, groups):
    """x [C,H,W]; weight [O, C/g, k, k]; offsets [k*k, 2] (dy, dx) constant over positions."""
    c, h, w = x.shape
    o, cg, k, _ = weight.shape
    ho = (h + 2 * pad - k) // stride + 1
    wo = (w + 2 * pad - k) // stride + 1
    out = np.zeros((o, ho, wo))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for oy in range(ho):
            for ox in range(wo):
                acc = 0.0
                for ci in range(cg):
                    for i in range(k):
                        for j in range(k):
                            dy, dx = offsets[i * k + j]
                            py = oy * stride - pad + i + dy
                            px = ox * stride - pad + j + dx
                            acc += weight[oc, ci, i, j] * _bilinear(x[g * cg + ci], py, px)
                out[oc, oy, ox] = acc
    return out


@pytest.mark.parametrize("stride,groups", [(1, 1), (2, 2)])
def test_dcn_matches_hand_computed_bilinear_sample(stride, groups):
    torch.manual_seed(0)
    conv = DeformConv2d(4, 4, 3, stride=stride, padding=1, groups=groups)
    assert tuple(conv.conv_offset.weight.shape) == (18, 4, 3, 3)
    rng = np.random.default_rng(1)
    # distinct, fractional dy != dx per kernel position: a swapped (dx, dy) layout would fail
    offsets = np.stack([rng.uniform(-1.5, 1.5, 9), rng.uniform(-1.5, 1.5, 9)], axis=1)
    with torch.no_grad():
        conv.conv_offset.bias.copy_(torch.tensor(offsets.reshape(-1), dtype=torch.float32))
    x = torch.randn(1, 4, 7, 9)
    with torch.no_grad():
        got = conv(x)[0].double().numpy()
    ref = _dcn_reference(x[0].double().numpy(), conv.weight.detach().double().numpy(), offsets, stride, 1, groups)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_dcn_with_zero_offsets_is_a_plain_conv():
    torch.manual_seed(0)
    conv = DeformConv2d(8, 8, 3, stride=2, padding=1, groups=4)
    x = torch.randn(2, 8, 11, 13)
    with torch.no_grad():
        ref = torch.nn.functional.conv2d(x, conv.weight, stride=2, padding=1, groups=4)
        torch.testing.assert_close(conv(x), ref, rtol=1e-4, atol=1e-5)


def test_dcn_tiny_input_padded_like_mmcv():
    conv = DeformConv2d(2, 2, 3, stride=1, padding=1)
    with torch.no_grad():
        assert tuple(conv(torch.randn(1, 2, 1, 2)).shape) == (1, 2, 1, 2)


def test_dcn_backbone_layout():
    with torch.device("meta"):
        net = ResNet(depth=101, groups=64, base_width=4, dcn_stages=(False, True, True, True))
    assert not isinstance(net.layer1[0].conv2, DeformConv2d)
    assert all(isinstance(b.conv2, DeformConv2d) for name in ("layer2", "layer3", "layer4") for b in getattr(net, name))
    keys = [k for k in net.state_dict() if k.startswith("layer2.0.conv2")]
    assert keys == ["layer2.0.conv2.weight", "layer2.0.conv2.conv_offset.weight", "layer2.0.conv2.conv_offset.bias"]
    assert net.layer2[0].conv2.conv_offset.stride == (2, 2)


# --------------------------------------------------------------------------- training behaviour


def test_frozen_stages_get_no_gradient():
    net = ResNet(depth=18, frozen_stages=1).train()
    sum(o.sum() for o in net(_x(2))).backward()
    frozen = [net.conv1, net.bn1, net.layer1]
    for m in frozen:
        for p in m.parameters():
            assert not p.requires_grad and p.grad is None
        assert not m.training  # eval mode even after .train()
    assert all(p.grad is not None for p in net.layer2.parameters())
    assert net.layer2.training


def test_frozen_stages_minus_one_trains_everything():
    net = ResNet(depth=18, frozen_stages=-1).train()
    sum(o.sum() for o in net(_x(2))).backward()
    assert net.conv1.weight.grad is not None


@pytest.mark.parametrize("norm_eval", [True, False])
def test_norm_eval_keeps_running_stats(norm_eval):
    net = ResNet(depth=18, frozen_stages=-1, norm_eval=norm_eval)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running_" in k}
    net.train()
    net(_x(2))
    after = {k: v for k, v in net.state_dict().items() if "running_" in k}
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if norm_eval:
        assert changed == []
        assert all(not m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    else:
        assert len(changed) == len(before)


def test_norm_requires_grad_false_freezes_bn_affine():
    net = ResNet(depth=18, frozen_stages=-1, norm_requires_grad=False)
    bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not p.requires_grad for m in bn for p in m.parameters())
    assert net.layer2[0].conv1.weight.requires_grad


def test_channels_last_inference_matches_nchw():
    net = ResNet(depth=18, zero_init_residual=False).eval()
    x = _x(2)
    with torch.no_grad():
        net.channels_last = True
        a = net(x)
        net.channels_last = False
        b = net(x)
    assert a[0].is_contiguous(memory_format=torch.channels_last) and b[0].is_contiguous()
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)


def test_default_layout_is_nchw_and_auto_is_inference_only():
    net = ResNet(depth=18).eval()
    with torch.no_grad():
        assert net(_x(1))[0].is_contiguous()  # default: NCHW, mmdet's layout (bit-exact)
        net.channels_last = None
        assert net(_x(1))[0].is_contiguous(memory_format=torch.channels_last)
    assert net(_x(1))[0].is_contiguous()  # auto: never with autograd on
