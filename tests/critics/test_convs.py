"""RKO, OSSN and the unconstrained baseline: the operators they apply, checked against dense matrices."""
import pytest
import torch
import torch.nn.functional as F

from critics import OSSNConv2d, RKOConv2d
from critics.lipschitz import circular_conv_norm
from critics.models import UnconstrainedConv2d


def _layer_operator(layer):
    """The layer's linear part (no bias) as a function of float64 inputs."""
    return lambda x: layer(x) - layer(torch.zeros_like(x[:1]))


@pytest.mark.parametrize("c_in,c_out,k,s", [(3, 8, 4, 2), (4, 4, 3, 1), (8, 2, 2, 1)])
def test_rko_weight_is_orthonormal_matrix_over_k(c_in, c_out, k, s):
    layer = RKOConv2d(c_in, c_out, k, s)
    kp = k // s
    m = (layer.weight.double() * kp).reshape(c_out, -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    torch.testing.assert_close(gram, torch.eye(min(m.shape), dtype=torch.float64), atol=2e-5, rtol=0)
    assert layer.orthogonality_error() < 2e-5


@pytest.mark.parametrize("mode", ["circular", "zeros"])
def test_rko_is_one_lipschitz(mode, dense_matrix):
    torch.manual_seed(1)
    layer = RKOConv2d(2, 6, 3, 1, padding_mode=mode).double().eval()
    with torch.no_grad():
        layer.kernel.add_(torch.randn_like(layer.kernel))
    norm = torch.linalg.matrix_norm(dense_matrix(_layer_operator(layer), (2, 5, 5)), ord=2).item()
    assert norm <= 1 + 1e-9
    assert norm < 0.99  # a bound, not orthogonal: RKO loses norm


@pytest.mark.parametrize("mode", ["circular", "zeros"])
def test_ossn_adjoint_is_exact(mode):
    layer = OSSNConv2d(3, 5, 4, 2, padding_mode=mode, input_size=(6, 6)).double()
    kernel = torch.randn_like(layer.kernel)
    v, y = torch.randn(2, 12, 3, 3, dtype=torch.float64), torch.randn(2, 5, 3, 3, dtype=torch.float64)
    torch.testing.assert_close((layer.operator(v, kernel) * y).sum(), (v * layer.adjoint(y, kernel)).sum())


@pytest.mark.parametrize("mode", ["circular", "zeros"])
def test_ossn_sigma_converges_to_operator_norm(mode, dense_matrix):
    torch.manual_seed(0)
    layer = OSSNConv2d(2, 4, 3, 1, padding_mode=mode, init_power_iters=500, input_size=(5, 5)).double()
    with torch.no_grad():
        layer.kernel.mul_(3.0)
        layer._reset_vector((5, 5))
    kernel_op = lambda x: layer.operator(x, layer.kernel.detach())
    exact = torch.linalg.matrix_norm(dense_matrix(kernel_op, (2, 5, 5)), ord=2).item()
    assert exact > 1.5
    assert layer.sigma.item() == pytest.approx(exact, rel=1e-6)
    layer.eval()
    final = torch.linalg.matrix_norm(dense_matrix(_layer_operator(layer), (2, 5, 5)), ord=2).item()
    assert final == pytest.approx(1.0, rel=1e-6)


def test_ossn_training_advances_vector_and_state_dict_adopts_its_shape():
    layer = OSSNConv2d(2, 4, 2, 1)
    with pytest.raises(RuntimeError, match="no power-iteration vector"):
        layer.weight
    layer(torch.randn(3, 2, 6, 6))
    u0 = layer.u.clone()
    layer(torch.randn(3, 2, 6, 6))
    assert layer.u.shape == (1, 2, 6, 6) and not torch.equal(u0, layer.u)
    fresh = OSSNConv2d(2, 4, 2, 1, input_size=(4, 4))
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh.eval().weight, layer.eval().weight)


def test_unconstrained_conv_matches_plain_conv2d():
    layer = UnconstrainedConv2d(3, 5, 4, 2, padding_mode="zeros")
    x = torch.randn(2, 3, 8, 8)
    ref = F.conv2d(F.pad(F.pixel_unshuffle(x, 2), (0, 1, 0, 1)), layer.kernel, layer.bias)
    torch.testing.assert_close(layer(x), ref)
    assert circular_conv_norm(layer.weight, (4, 4)) > 0


def test_conv_argument_errors():
    with pytest.raises(ValueError, match="multiple of stride"):
        RKOConv2d(3, 4, 3, 2)
    with pytest.raises(ValueError, match="bjorck_iters"):
        RKOConv2d(3, 4, 2, 1, bjorck_iters=0)
    with pytest.raises(ValueError, match="not divisible by stride 2"):
        OSSNConv2d(3, 4, 2, 2, input_size=(5, 6))
    with pytest.raises(ValueError, match="padding_mode"):
        OSSNConv2d(3, 4, 2, 1, padding_mode="reflect")
