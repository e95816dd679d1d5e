"""BCOPConv2d: orthogonality checked independently (float64 FFT + SVD per frequency), the kernel
being exactly what forward applies, the block-convolution convention, eval caching, gradient-norm
preservation, state_dict round trips and argument errors."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from critics.bcop import BCOPConv2d


def frequency_singular_values(kernel: torch.Tensor, n: int = 8) -> torch.Tensor:
    """All singular values of the circular convolution with `kernel` on an n x n input (float64)."""
    assert n >= kernel.shape[-1]
    k = torch.fft.fft2(kernel.detach().double(), s=(n, n))  # (c_out, c_in, n, n), one matrix per frequency
    return torch.linalg.svdvals(k.permute(2, 3, 0, 1))


def assert_orthogonal(layer: BCOPConv2d, tol: float = 1e-4):
    w = layer.weight
    c_out, c_in = w.shape[:2]
    sv = frequency_singular_values(w)
    assert sv.shape[-1] == min(c_in, c_out)
    assert (sv - 1).abs().max().item() < tol, f"singular values in [{sv.min():.6f}, {sv.max():.6f}]"


def random_steps(layer: BCOPConv2d, steps: int = 5, lr: float = 1e-2, size: int = 8):
    """A few Adam steps on a random loss: large enough to push the parameters off orthonormality."""
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, layer.in_channels, size, size, generator=g)
    target = torch.randn(2, layer.out_channels, size // layer.stride, size // layer.stride, generator=g)
    for _ in range(steps):
        loss = (layer(x) * target).sum() + layer(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


CASES = [  # (kernel, stride, c_in, c_out)
    *[(k, 1, c_in, c_out) for k in (1, 2, 3, 4, 5) for c_in, c_out in ((6, 6), (4, 10), (10, 4))],
    *[(k, 2, c_in, c_out) for k in (2, 4) for c_in, c_out in ((4, 16), (3, 20), (8, 12))],
]


@pytest.mark.parametrize("k,s,c_in,c_out", CASES)
def test_orthogonal_per_frequency_before_and_after_training(k, s, c_in, c_out):
    torch.manual_seed(k * 100 + s * 10 + c_in)
    layer = BCOPConv2d(c_in, c_out, k, stride=s)
    assert layer.weight.shape == (c_out, c_in * s * s, k // s, k // s)
    assert_orthogonal(layer)
    random_steps(layer)
    assert_orthogonal(layer)
    assert layer.orthogonality_error() < 1e-5
    layer.eval()
    assert_orthogonal(layer)


def test_drifted_parameters_are_reprojected_in_place():
    layer = BCOPConv2d(8, 8, 3)
    random_steps(layer, steps=3, lr=5e-2)
    with torch.no_grad():
        layer.ortho.add_(0.01 * torch.randn_like(layer.ortho))  # an optimiser step's drift, beyond retract_tol
    before = layer.ortho.detach().clone()
    assert (before @ before.T - torch.eye(8)).norm() > layer.retract_tol
    layer.weight
    assert layer.last_retract_iters > 0
    assert not torch.equal(before, layer.ortho)
    gram = layer.ortho.detach() @ layer.ortho.detach().T
    assert (gram - torch.eye(8)).norm() < layer.retract_tol
    assert_orthogonal(layer)


def test_large_drift_is_fixed_over_training_steps_and_at_once_in_eval():
    """A training build spends at most RETRACT_STEPS re-projection steps (decided on the device), so
    a drift far beyond what one optimiser step causes takes a few steps; the applied kernel stays
    non-expansive meanwhile, and an eval build (verified on the host) is orthogonal at once."""
    torch.manual_seed(0)
    layer = BCOPConv2d(8, 8, 3)
    with torch.no_grad():
        layer.ortho.add_(0.3 * torch.randn_like(layer.ortho))
    layer.eval()
    assert_orthogonal(layer)
    layer.train()
    assert frequency_singular_values(layer.weight).max() <= 1 + 1e-5
    random_steps(layer, steps=4, lr=1e-6)  # optimiser steps that hardly move the parameters
    assert_orthogonal(layer)


@pytest.mark.parametrize("k,s,mode", [(3, 1, "circular"), (4, 1, "circular"), (4, 2, "circular"),
                                      (3, 1, "zeros"), (2, 2, "zeros")])
def test_weight_is_what_forward_applies(k, s, mode):
    torch.manual_seed(0)
    layer = BCOPConv2d(3, 8, k, stride=s, padding_mode=mode)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, 12, 12)
    keff = k // s
    lo = (keff - 1) // 2
    padded = F.pad(F.pixel_unshuffle(x, s), (lo, keff - 1 - lo, lo, keff - 1 - lo),
                   mode="circular" if mode == "circular" else "constant")
    layer.eval()  # fixed kernel: no re-projection between the two evaluations
    expected = F.conv2d(padded, layer.weight, layer.bias)
    torch.testing.assert_close(layer(x), expected)


def _projector_conv(r: torch.Tensor, axis: int) -> torch.Tensor:
    """The two-tap orthogonal kernel [P, I - P] along `axis` (0: vertical, 1: horizontal)."""
    p = r @ r.T
    taps = torch.stack([p, torch.eye(p.shape[0], dtype=p.dtype) - p], -1)
    return taps[:, :, :, None] if axis == 0 else taps[:, :, None, :]


def _circular(x, kernel):
    """Cross-correlation with circular padding only after (bottom/right): shifts then add up exactly."""
    kh, kw = kernel.shape[-2:]
    return F.conv2d(F.pad(x, (0, kw - 1, 0, kh - 1), mode="circular"), kernel)


@pytest.mark.parametrize("c_in,c_out", [(6, 6), (4, 6), (6, 4)])
def test_block_convolution_is_sequential_application(c_in, c_out):
    """A [] B applied = B then A: the composed kernel equals the factors applied one by one."""
    torch.manual_seed(3)
    layer = BCOPConv2d(c_in, c_out, 3).double().eval()
    m, rs = (t.detach() for t in layer._factors(mutate=False))
    factors = [_projector_conv(rs[j], j % 2) for j in range(rs.shape[0])]
    x = torch.randn(2, c_in, 7, 7, dtype=torch.float64)
    y = x
    if c_out <= c_in:  # M . V0 . H1 . V2 . H3: the last factor acts first
        for f in reversed(factors):
            y = _circular(y, f)
        y = _circular(y, m[:, :, None, None])
    else:              # H3 . V2 . H1 . V0 . M: M acts first
        y = _circular(y, m[:, :, None, None])
        for f in factors:
            y = _circular(y, f)
    torch.testing.assert_close(_circular(x, layer.weight), y)


def test_eval_caches_kernel_and_refreshes_after_a_step():
    torch.manual_seed(0)
    layer = BCOPConv2d(4, 4, 3)
    layer.eval()
    w1, w2 = layer.weight, layer.weight
    assert w1 is w2
    x = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(layer(x), layer(x))
    layer.train()
    assert layer.weight is not layer.weight
    random_steps(layer, steps=1)
    layer.eval()
    w3 = layer.weight
    assert w3 is not w1 and not torch.allclose(w3, w1)
    assert layer.weight is w3
    layer.train()
    torch.testing.assert_close(layer.weight.detach(), w3)


def _maxmin(x):
    a, b = x.chunk(2, dim=1)
    return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=1)


def test_gradient_norm_is_one_through_a_stack():
    torch.manual_seed(0)
    layers = [BCOPConv2d(4, 4, 3), BCOPConv2d(4, 16, 4, stride=2), BCOPConv2d(16, 8, 3),
              BCOPConv2d(8, 8, 2, stride=2)]  # equal, equal (after unshuffle), contracting, contracting
    for l, size in zip(layers, (8, 8, 4, 4)):
        random_steps(l, steps=2, size=size)
    layers = [l.double() for l in layers]
    v = torch.randn(8 * 2 * 2, dtype=torch.float64)
    v /= v.norm()
    for seed in range(4):
        x = torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed),
                        requires_grad=True)
        y = x
        for l in layers:
            y = _maxmin(l(y))
        f = y.flatten() @ v
        (g,) = torch.autograd.grad(f, x)
        assert abs(g.norm().item() - 1) < 1e-3


def test_gradient_matches_finite_differences():
    """The gradient is that of the applied kernel (one Björck step of the kept-orthonormal parameters)."""
    torch.manual_seed(0)
    layer = BCOPConv2d(4, 6, 3, retract_tol=0.1).double()
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    c = torch.randn(1, 6, 5, 5, dtype=torch.float64)
    loss = lambda: (layer(x) * c).sum()  # noqa: E731
    loss().backward()
    for p in (layer.ortho, layer.proj):
        d = torch.randn_like(p)
        analytic = (p.grad * d).sum().item()
        eps = 1e-6
        with torch.no_grad():
            p.add_(eps * d)
            up = loss().item()
            p.sub_(2 * eps * d)
            down = loss().item()
            p.add_(eps * d)
        assert abs((up - down) / (2 * eps) - analytic) < 1e-6 * max(1.0, abs(analytic))


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a = BCOPConv2d(3, 8, 4, stride=2)
    random_steps(a, steps=2)
    b = BCOPConv2d(3, 8, 4, stride=2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_non_convergence_is_reported_and_stays_non_expansive():
    layer = BCOPConv2d(6, 6, 2, max_retract_iters=2)
    with torch.no_grad():
        layer.ortho.copy_(torch.diag(torch.tensor([1.0, 1, 1, 1, 1, 1e-6])))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a training build never stops to ask the device
        assert frequency_singular_values(layer.weight).max() <= 1 + 1e-5
    layer.eval()
    with pytest.warns(RuntimeWarning, match="did not converge"):
        w = layer.weight
    assert layer.orthogonality_error() > 0.1
    assert frequency_singular_values(w).max() <= 1 + 1e-5


@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel_size=1, stride=2), "smaller than stride"),
    (dict(kernel_size=3, stride=2), "multiple of stride"),
    (dict(kernel_size=3, bjorck_iters=0), "bjorck_iters"),
    (dict(kernel_size=3, padding_mode="reflect"), "padding_mode"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BCOPConv2d(4, 4, **kwargs)


def test_input_not_divisible_by_stride():
    layer = BCOPConv2d(4, 4, 4, stride=2)
    with pytest.raises(ValueError, match="not divisible by stride"):
        layer(torch.randn(1, 4, 7, 8))


def test_no_warning_in_normal_training():
    layer = BCOPConv2d(4, 8, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        random_steps(layer, steps=3, lr=1e-3)


def test_separate_real_and_fake_forwards_share_one_backward():
    """The usual critic step calls the layer twice before backward; the in-place re-projection must
    happen at most once (in the first call) so the first graph stays valid."""
    torch.manual_seed(0)
    layer = BCOPConv2d(4, 8, 4, stride=2)
    opt = torch.optim.RMSprop(layer.parameters(), lr=1e-2)
    real, fake = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for _ in range(3):
        loss = layer(fake).mean() - layer(real).mean()
        opt.zero_grad()
        loss.backward()
        assert layer.ortho.grad.abs().sum() > 0 and layer.proj.grad.abs().sum() > 0
        opt.step()
    assert_orthogonal(layer)


@pytest.mark.parametrize("c_in,c_out,k,s,size", [(64, 48, 2, 2, 2), (32, 32, 1, 1, 1), (16, 40, 1, 1, 1)])
def test_training_forward_of_a_1x1_kernel_without_forming_it_is_the_same_map(c_in, c_out, k, s, size):
    """A 1x1 effective kernel on fewer pixels than min(c_out, c_in') is applied in training as
    1.5 x M'^T - 0.5 (x M'^T M') M'^T (M' the re-projected parameter): the same values and gradients
    as the convolution with the kernel `weight` builds from that parameter."""
    torch.manual_seed(0)
    layer = BCOPConv2d(c_in, c_out, k, stride=s).double()
    with torch.no_grad():
        layer.ortho.add_(1e-3 * torch.randn_like(layer.ortho))
        layer.bias.normal_()
    x = torch.randn(3, c_in, size, size, dtype=torch.float64)
    assert 3 * size * size // (s * s) < min(layer.ortho.shape)  # the path under test
    y = layer(x)  # re-projects in place, then applies the step without forming the kernel
    grads = torch.autograd.grad((y * y).sum(), [layer.ortho, layer.bias])
    ref = F.conv2d(F.pixel_unshuffle(x, s) if s > 1 else x, layer.weight, layer.bias)
    ref_grads = torch.autograd.grad((ref * ref).sum(), [layer.ortho, layer.bias])
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
