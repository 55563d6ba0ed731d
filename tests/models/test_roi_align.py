"""The CPU RoIAlign used in training: torchvision's forward, and a backward equal to torchvision's."""

import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from nuimcli.models.roi_align import roi_align


def _rois(n: int, img_w: float, img_h: float, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([img_w, img_h], dtype=torch.float64) - 10
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 120
    rois = torch.cat([torch.randint(0, batch, (n, 1), generator=g).double(), xy, xy + wh], dim=1)
    # corner cases: off the map, past the bottom-right edge, zero size, inverted, one pixel
    extra = torch.tensor([[0, -50, -50, -20, -20], [batch - 1, img_w - 3, img_h - 3, img_w + 40, img_h + 40],
                          [0, 10, 10, 10, 10], [0, 30, 30, 20, 20], [batch - 1, 5, 5, 6, 6]], dtype=torch.float64)
    return torch.cat([rois, extra])


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("size", [7, 14])
def test_forward_and_gradient_equal_torchvision(aligned, sampling_ratio, size):
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(2, 5, 23, 37, generator=g, dtype=torch.float64)
    rois = _rois(60, 37 * 4, 23 * 4, batch=2, seed=2)
    ours_in = feat.clone().requires_grad_()
    ref_in = feat.clone().requires_grad_()
    ours = roi_align(ours_in, rois, size, 0.25, sampling_ratio, aligned)
    ref = tv_roi_align(ref_in, rois, (size, size), 0.25, sampling_ratio, aligned)
    assert torch.equal(ours, ref)
    assert "SparseBackward" in type(ours.grad_fn).__name__
    upstream = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (ours * upstream).sum().backward()
    (ref * upstream).sum().backward()
    assert ours_in.grad.shape == feat.shape
    assert ref_in.grad.abs().max() > 0
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=0, atol=1e-12)


def test_float32_gradient_and_empty_rois():
    feat = torch.randn(1, 8, 16, 16, requires_grad=True)
    rois = _rois(30, 64, 64, batch=1, seed=3).float()
    out = roi_align(feat, rois, 7, 0.25)
    out.square().sum().backward()
    ref_feat = feat.detach().clone().requires_grad_()
    tv_roi_align(ref_feat, rois, (7, 7), 0.25, 0, True).square().sum().backward()
    torch.testing.assert_close(feat.grad, ref_feat.grad, rtol=1e-5, atol=1e-5)
    empty = roi_align(feat, rois[:0], 7, 0.25)
    assert empty.shape == (0, 8, 7, 7)


def test_no_grad_path_is_torchvision():
    feat = torch.randn(2, 3, 10, 12)
    rois = _rois(10, 48, 40, batch=2, seed=4).float()
    with torch.no_grad():
        assert torch.equal(roi_align(feat, rois, 7, 0.25), tv_roi_align(feat, rois, (7, 7), 0.25, 0, True))
