"""Certificates: an upper bound on a critic's Lipschitz constant (Euclidean norms), computed in float64
from the exact operators the layers apply, never from the layers' own estimates.

Contract for certifiable models: the model is an `nn.Sequential` (nested Sequentials allowed) whose
leaves, taken in order, are the forward pass. Every leaf must be a LipschitzConv2d, a stride-1
nn.Conv2d (zeros or circular padding, possibly as nn.CircularPad2d directly before it), nn.Linear,
OrthoLinear, or one of the 1-Lipschitz kinds in `_NORM_ONE`; anything else raises TypeError rather
than being guessed at. A new architecture complies by being built from these leaves
(see critics.models.build_critic)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from critics.conv import LipschitzConv2d
from critics.layers import GroupSort, InvertibleDownsample, MaxMin, OrthoLinear

# Leaves that are 1-Lipschitz: permutations almost everywhere, reshapings, embeddings by a constant pad.
_NORM_ONE = (MaxMin, GroupSort, nn.ReLU, nn.Identity, InvertibleDownsample, nn.PixelUnshuffle,
             nn.Flatten, nn.ZeroPad2d, nn.ConstantPad2d)


@dataclass(frozen=True)
class LayerBound:
    name: str     # the module's path in the model
    kind: str     # its class name
    bound: float  # upper bound on its operator norm / Lipschitz constant
    method: str   # how the bound was obtained


@dataclass
class LipschitzCertificate:
    bound: float                    # product of the layer bounds: never below the true constant
    layers: list[LayerBound] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {"bound": self.bound, "input_shape": list(self.input_shape),
                "layers": [asdict(layer) for layer in self.layers]}


def circular_conv_norm(kernel: torch.Tensor, size: tuple[int, int]) -> float:
    """Exact operator norm of the circular convolution with `kernel` (c_out, c_in, kh, kw) on an
    (H, W) grid: max over the DFT frequencies of sigma_max(W_hat(omega)), in float64.

    Kernel taps are wrapped modulo the grid first, so kernels larger than the grid are handled exactly.
    rfft suffices: for a real kernel W_hat(-omega) is the conjugate of W_hat(omega)."""
    n1, n2 = int(size[0]), int(size[1])
    if n1 < 1 or n2 < 1:
        raise ValueError(f"grid size must be positive, got {size}")
    w = kernel.detach().to(device="cpu", dtype=torch.float64)
    co, ci, kh, kw = w.shape
    w = F.pad(w, (0, (-kw) % n2, 0, (-kh) % n1))
    w = w.reshape(co, ci, w.shape[2] // n1, n1, w.shape[3] // n2, n2).sum(dim=(2, 4))
    spectrum = torch.fft.rfft2(w).permute(2, 3, 0, 1)  # (n1, n2//2+1, c_out, c_in)
    return _largest_singular_value(spectrum)


def linear_norm(weight: torch.Tensor) -> float:
    """Exact largest singular value, float64."""
    return _largest_singular_value(weight.detach().to(device="cpu", dtype=torch.float64))


def _largest_singular_value(mats: torch.Tensor) -> float:
    """max sigma_max over a batch of float64 matrices, as sqrt of the top eigenvalue of the Gram matrix
    on the smaller side: several times faster than an SVD, and the top eigenvalue of a Hermitian matrix
    is perfectly conditioned (error ~ 1e-15 relative)."""
    gram = mats @ mats.mH if mats.shape[-2] <= mats.shape[-1] else mats.mH @ mats
    return float(torch.linalg.eigvalsh(gram).amax().clamp_min(0.0).sqrt())


def _leaves(module: nn.Module, prefix: str = ""):
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            yield from _leaves(child, f"{prefix}.{name}" if prefix else name)
    else:
        yield prefix or type(module).__name__, module


def _conv_bound(weight: torch.Tensor, size: tuple[int, int], pad: tuple[int, int, int, int],
                circular: bool) -> tuple[float, str]:
    """Bound for 'pad (left, right, top, bottom) then valid conv' on an input of spatial `size`.

    Zero padding: the valid outputs on the padded grid (H + top + bottom, ...) are a subset of the
    circular convolution's outputs on that grid, and zero padding is an isometric embedding, so the
    operator is a compression of that circular convolution: its norm is an upper bound.
    Circular padding with total pad k-1 per axis is exactly the circular convolution on (H, W); with
    less padding the outputs are a subset of it (an upper bound); with more, pixels wrap twice."""
    kh, kw = weight.shape[-2:]
    (lo_w, hi_w, lo_h, hi_h), (h, w) = pad, size
    if circular:
        if lo_h + hi_h > kh - 1 or lo_w + hi_w > kw - 1:
            raise TypeError(f"circular padding {pad} exceeds kernel_size - 1 for a {kh}x{kw} kernel: not certifiable")
        exact = (lo_h + hi_h, lo_w + hi_w) == (kh - 1, kw - 1)
        return circular_conv_norm(weight, (h, w)), ("exact: float64 spectrum per frequency, circular" if exact else
                                                   "upper bound: circular norm (outputs are a subset)")
    grid = (h + lo_h + hi_h, w + lo_w + hi_w)
    if grid[0] < kh or grid[1] < kw:
        raise ValueError(f"padded input {grid} is smaller than the {kh}x{kw} kernel")
    method = "exact: 1x1 kernel" if (kh, kw) == (1, 1) else \
        f"upper bound: circular norm on the zero-padded {grid[0]}x{grid[1]} grid"
    return circular_conv_norm(weight, grid), method


def _nn_conv_padding(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    kh, kw = conv.kernel_size
    if conv.padding == "valid":
        return (0, 0, 0, 0)
    if conv.padding == "same":
        return ((kw - 1) // 2, kw - 1 - (kw - 1) // 2, (kh - 1) // 2, kh - 1 - (kh - 1) // 2)
    ph, pw = conv.padding
    return (pw, pw, ph, ph)


def lipschitz_bound(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> LipschitzCertificate:
    """Certify `model` on inputs of per-sample shape `input_shape` (default: `model.input_shape`).

    The bound is the product of per-layer bounds: exact float64 spectra for circular convolutions and
    linear layers, guaranteed upper bounds for zero-padded convolutions, 1 for the norm-one leaves."""
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise ValueError("input_shape is required for a model without an .input_shape attribute")
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"lipschitz_bound needs an nn.Sequential model (leaves in forward order), "
                        f"got {type(model).__name__}")
    shape = tuple(int(d) for d in input_shape)
    layers: list[LayerBound] = []
    pending_pad: tuple[str, nn.Module] | None = None  # a CircularPad2d waiting for its convolution
    with torch.no_grad():
        for name, m in _leaves(model):
            kind = type(m).__name__
            if pending_pad is not None and not (isinstance(m, nn.Conv2d) and _nn_conv_padding(m) == (0,) * 4):
                raise TypeError(f"{pending_pad[0]}: circular padding must be followed directly by an unpadded "
                                f"nn.Conv2d to be certifiable, got {kind} ({name})")
            if isinstance(m, LipschitzConv2d):
                shape, bound, method = _lipschitz_conv(name, m, shape)
            elif isinstance(m, nn.CircularPad2d):
                pending_pad = (name, m)
                continue
            elif isinstance(m, nn.Conv2d):
                shape, bound, method = _plain_conv(name, m, shape, pending_pad)
                if pending_pad is not None:
                    name = f"{pending_pad[0]}+{name}"
                pending_pad = None
            elif isinstance(m, (nn.Linear, OrthoLinear)):
                if shape[-1:] != (m.in_features,):
                    raise ValueError(f"{name}: expects {m.in_features} features, gets shape {shape}")
                shape = shape[:-1] + (m.out_features,)
                bound, method = linear_norm(m.weight), "exact: float64 spectrum"
            elif isinstance(m, _NORM_ONE) or (isinstance(m, nn.LeakyReLU) and 0 <= m.negative_slope <= 1):
                shape = _run_shape(name, m, shape)
                bound, method = 1.0, "1-Lipschitz by construction"
            else:
                raise TypeError(f"cannot certify {name} ({kind}): not a known layer kind; build critics from "
                                "the layers listed in critics.lipschitz")
            layers.append(LayerBound(name, kind, float(bound), method))
    if pending_pad is not None:
        raise TypeError(f"{pending_pad[0]}: trailing circular padding is not certifiable")
    return LipschitzCertificate(math.prod(layer.bound for layer in layers), layers, tuple(int(d) for d in input_shape))


def _lipschitz_conv(name: str, m: LipschitzConv2d, shape: tuple[int, ...]):
    if len(shape) != 3 or shape[0] != m.in_channels:
        raise ValueError(f"{name}: expects ({m.in_channels}, H, W) input, gets shape {shape}")
    s = m.stride
    if shape[1] % s or shape[2] % s:
        raise ValueError(f"{name}: input size {shape[1:]} is not divisible by stride {s}")
    size = (shape[1] // s, shape[2] // s)
    pad = m.same_padding() if m.effective_kernel_size > 1 else (0, 0, 0, 0)
    bound, method = _conv_bound(m.weight, size, pad, circular=m.padding_mode == "circular")
    return (m.out_channels,) + size, bound, method


def _plain_conv(name: str, m: nn.Conv2d, shape: tuple[int, ...], pending_pad):
    if m.stride != (1, 1) or m.dilation != (1, 1) or m.groups != 1:
        raise TypeError(f"{name}: only stride-1, undilated, ungrouped nn.Conv2d is certifiable "
                        "(express strides as nn.PixelUnshuffle + stride-1 conv)")
    if len(shape) != 3 or shape[0] != m.in_channels:
        raise ValueError(f"{name}: expects ({m.in_channels}, H, W) input, gets shape {shape}")
    if pending_pad is not None:
        pad, circular = tuple(pending_pad[1].padding), True
    elif m.padding_mode in ("zeros", "circular"):
        pad, circular = _nn_conv_padding(m), m.padding_mode == "circular"
    else:
        raise TypeError(f"{name}: padding_mode {m.padding_mode!r} is not certifiable (use 'zeros' or 'circular')")
    bound, method = _conv_bound(m.weight, shape[1:], pad, circular)
    kh, kw = m.kernel_size
    out = (m.out_channels, shape[1] + pad[2] + pad[3] - kh + 1, shape[2] + pad[0] + pad[1] - kw + 1)
    return out, bound, method


def _run_shape(name: str, m: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per-sample output shape of a parameter-free leaf, by running it on one zero sample."""
    if isinstance(m, nn.Flatten) and m.start_dim == 0 and math.prod(shape) != 1:
        raise ValueError(f"{name}: Flatten(start_dim=0) would mix samples of shape {shape}")
    try:
        out = m(torch.zeros((1,) + shape))
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{name}: cannot take per-sample input of shape {shape}: {err}") from err
    return tuple(out.shape[1:])


def orthogonality_error(model: nn.Module) -> float:
    """Worst deviation from orthonormality over the model's Björck-parameterised matrices (0 if none)."""
    errors = [float(m.orthogonality_error()) for m in model.modules()
              if m is not model and callable(getattr(m, "orthogonality_error", None))]
    return max(errors, default=0.0)
