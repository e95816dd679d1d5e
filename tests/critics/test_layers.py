import pytest
import torch
import torch.nn.functional as F

from critics import GroupSort, InvertibleDownsample, MaxMin, OrthoLinear


def test_maxmin_matches_elementwise_definition():
    x = torch.randn(5, 6, 3, 4)
    y = MaxMin()(x)
    a, b = x[:, :3], x[:, 3:]
    assert torch.equal(y[:, :3], torch.where(a > b, a, b))
    assert torch.equal(y[:, 3:], torch.where(a > b, b, a))
    flat = torch.randn(7, 10)
    assert torch.equal(MaxMin()(flat).sort(dim=1).values, flat.sort(dim=1).values)  # a permutation per sample


def test_groupsort_sorts_each_group_descending():
    x = torch.randn(4, 12, 2, 2)
    y = GroupSort(4)(x)
    for g in range(3):
        group, out = x[:, 4 * g:4 * g + 4], y[:, 4 * g:4 * g + 4]
        assert torch.equal(out.sort(dim=1).values, group.sort(dim=1).values)  # the group's values...
        assert (out[:, :3] >= out[:, 1:]).all()  # ...in descending order
    z = torch.randn(3, 8)
    assert torch.equal(GroupSort(2)(z)[:, 0::2], torch.maximum(z[:, 0::2], z[:, 1::2]))


@pytest.mark.parametrize("act", [MaxMin(), GroupSort(2), GroupSort(4)])
def test_activations_preserve_gradient_norm(act):
    x = torch.randn(16, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(16, 8, dtype=torch.float64)
    (act(x) * v).sum().backward()
    torch.testing.assert_close(x.grad.norm(dim=1), v.norm(dim=1))


def test_activation_errors():
    with pytest.raises(ValueError, match="even number of channels"):
        MaxMin()(torch.randn(2, 3))
    with pytest.raises(ValueError, match="not divisible by group_size 4"):
        GroupSort(4)(torch.randn(2, 6))
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        GroupSort(1)


def test_invertible_downsample_is_an_orthogonal_permutation():
    x = torch.randn(3, 2, 8, 6)
    y = InvertibleDownsample(2)(x)
    assert y.shape == (3, 8, 4, 3)
    assert torch.equal(F.pixel_shuffle(y, 2), x)
    assert torch.equal(y.flatten().sort().values, x.flatten().sort().values)
    with pytest.raises(ValueError, match="not divisible"):
        InvertibleDownsample(4)(x)


@pytest.mark.parametrize("n_in,n_out", [(20, 8), (8, 20), (12, 12)])
def test_ortholinear_is_orthonormal(n_in, n_out):
    """Far from the orthogonal init: an eval build (verified on the host) is orthonormal at once; a
    training build (at most RETRACT_STEPS re-projection steps, decided on the device) stays
    non-expansive and is orthonormal after a few optimiser steps."""
    torch.manual_seed(0)
    layer = OrthoLinear(n_in, n_out)
    with torch.no_grad():
        layer.param.add_(0.3 * torch.randn_like(layer.param))  # away from the orthogonal init

    def gram_error():
        w = layer.weight.double()
        gram = w @ w.T if n_out <= n_in else w.T @ w
        return (gram - torch.eye(min(n_in, n_out), dtype=torch.float64)).abs().max().item()

    assert torch.linalg.matrix_norm(layer.weight.double(), 2) <= 1 + 1e-6
    layer.eval()
    assert gram_error() < 1e-5
    layer.train()
    opt = torch.optim.SGD(layer.parameters(), lr=1e-7)
    for _ in range(6):
        layer(torch.randn(3, n_in)).sum().backward()
        opt.step()
        opt.zero_grad()
    assert gram_error() < 1e-5
    assert layer.orthogonality_error() < 1e-5


def test_ortholinear_training_forward_without_forming_the_weight_is_the_same_map():
    """With fewer rows than min(in, out), training applies 1.5 x P^T - 0.5 (x P^T P) P^T instead of
    forming W: the same values and gradients as x W^T with W built from the same parameter."""
    torch.manual_seed(0)
    layer = OrthoLinear(40, 24).double()
    with torch.no_grad():
        layer.param.add_(1e-3 * torch.randn_like(layer.param))
    x = torch.randn(5, 40, dtype=torch.float64)
    y = layer(x)  # re-projects the parameter in place, then applies the step without forming it
    (gp,) = torch.autograd.grad((y * y).sum(), layer.param)
    w = layer.weight  # built from the same (now re-projected) parameter
    ref = F.linear(x, w, layer.bias)
    (gr,) = torch.autograd.grad((ref * ref).sum(), layer.param)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gp, gr, rtol=1e-10, atol=1e-12)


def test_ortholinear_single_output_is_exact_unit_vector():
    layer = OrthoLinear(50, 1)
    with torch.no_grad():
        layer.param.mul_(7.0)
    assert abs(layer.weight.double().norm().item() - 1) < 1e-6
    x = torch.randn(4, 50)
    torch.testing.assert_close(layer(x), x @ (layer.param / layer.param.norm()).T + layer.bias)


def test_ortholinear_caches_weight_in_eval_and_refreshes_after_update():
    layer = OrthoLinear(6, 4).eval()
    w1 = layer.weight
    assert layer.weight is w1
    with torch.no_grad():
        layer.param.add_(0.1)
    w2 = layer.weight
    assert w2 is not w1 and not torch.equal(w1, w2)
    layer.train()
    assert layer.weight.requires_grad


def test_ortholinear_errors():
    with pytest.raises(ValueError, match="feature counts must be positive"):
        OrthoLinear(0, 3)
    with pytest.raises(ValueError, match="expects 6 input features, got 5"):
        OrthoLinear(6, 2)(torch.randn(1, 5))


@pytest.mark.parametrize("g", range(2, 17))
def test_sorting_network_sorts_every_zero_one_input(g):
    """The 0-1 principle: a comparator network that sorts all 2^g inputs of zeros and ones sorts every
    input. Checked here for the network behind GroupSort, against torch.sort."""
    from critics.layers import _NetworkSort, sorting_network
    codes = torch.arange(2 ** g)
    bits = ((codes[:, None] >> torch.arange(g)) & 1).to(torch.float32)  # (2^g, g)
    out = _NetworkSort.apply(bits[:, None, :, None], sorting_network(g))[:, 0, :, 0]
    assert torch.equal(out, bits.sort(dim=1, descending=True).values)


@pytest.mark.parametrize("g,shape", [(4, (64, 12, 16, 16)), (8, (300, 256)), (2, (40, 16, 8, 8)), (3, (50, 12, 10, 10))])
def test_groupsort_network_equals_torch_sort_values_and_gradients(g, shape):
    from critics.layers import NETWORK_MIN_SIZE
    assert torch.Size(shape).numel() > NETWORK_MIN_SIZE  # the network path
    x = torch.randint(-3, 4, shape).to(torch.float64)  # many ties
    grouped = x.reshape(shape[0], shape[1] // g, g, -1)
    want = grouped.sort(dim=2, descending=True).values.reshape(shape)
    xr = x.clone().requires_grad_()
    y = GroupSort(g)(xr)
    assert torch.equal(y, want)
    v = torch.randn(shape, dtype=torch.float64)
    (y * v).sum().backward()
    # The gradient is a permutation of v within each group (the transpose of the forward's), so it
    # preserves each group's values and hence the norm; where values are distinct it is torch.sort's.
    gv = v.reshape(grouped.shape).sort(dim=2).values
    assert torch.equal(xr.grad.reshape(grouped.shape).sort(dim=2).values, gv)
    distinct = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    (GroupSort(g)(distinct) * v).sum().backward()
    ref = distinct.detach().clone().requires_grad_()
    (ref.reshape(grouped.shape).sort(dim=2, descending=True).values.reshape(shape) * v).sum().backward()
    assert torch.equal(distinct.grad, ref.grad)


def test_groupsort_network_gradcheck():
    from critics.layers import _NetworkSort, sorting_network
    x = torch.randn(3, 2, 8, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _NetworkSort.apply(t, sorting_network(8)), (x,))


@pytest.mark.parametrize("pad", [(1, 1, 1, 1), (0, 1, 0, 1), (2, 1, 0, 3)])
def test_circular_pad_gradient_equals_autograds(pad):
    from critics.conv import _CircularPad
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    y = _CircularPad.apply(x, pad)
    assert torch.equal(y, F.pad(x.detach(), pad, mode="circular"))
    v = torch.randn(y.shape, dtype=torch.float64)
    (y * v).sum().backward()
    ref = x.detach().clone().requires_grad_()
    (F.pad(ref, pad, mode="circular") * v).sum().backward()
    torch.testing.assert_close(x.grad, ref.grad, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: _CircularPad.apply(t, pad), (x.detach().requires_grad_(),))
