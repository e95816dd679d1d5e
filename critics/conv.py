"""The shared shape of every Lipschitz convolution here: stride by invertible downsampling, then a
stride-1 'same' convolution with a kernel that subclasses build from their parameters.

Keeping forward() in one place means the kernel that `weight` returns is exactly what is applied,
so certificates (critics.lipschitz) and exports (plain nn.Conv2d) can never drift from the layer.
(A strided layer computes unshuffle + convolution as the one strided convolution it equals, with the
kernel's channels shuffled back into taps: the same linear map, fewer copies.)"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PADDING_MODES = ("circular", "zeros")


def check_divisible(x: torch.Tensor, factor: int, name: str) -> None:
    """A clear error (naming the factor as `name`) when H or W of x is not divisible by `factor`."""
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"input size {tuple(x.shape[-2:])} is not divisible by {name} {factor}")


def pixel_unshuffle(x: torch.Tensor, factor: int, name: str = "the downsampling factor") -> torch.Tensor:
    """(C, H, W) -> (C s^2, H/s, W/s), with a clear error (naming the factor as `name`) when H or W is
    not divisible by s."""
    check_divisible(x, factor, name)
    return F.pixel_unshuffle(x, factor)


class _CircularPad(torch.autograd.Function):
    """F.pad(x, pad, mode="circular") whose backward folds the padding's gradient back onto the edges it
    copies (a few slice additions). Autograd's own backward of the circular pad replays its in-place
    slice copies: several full-size zero-filled buffers per layer, 10-15 % of a 32x32x3 conv critic's
    training step on the CPU (bench/results/profile_step_*)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
        ctx.pad = pad
        return F.pad(x, pad, mode="circular")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        left, right, top, bottom = ctx.pad
        grad = _fold(grad, left, right, dim=-1)
        return _fold(grad, top, bottom, dim=-2), None


def _fold(grad: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """The gradient of circular padding by (before, after) along `dim`, from the padded one's."""
    size = grad.shape[dim] - before - after
    out = grad.narrow(dim, before, size).clone()
    if after:
        out.narrow(dim, 0, after).add_(grad.narrow(dim, before + size, after))
    if before:
        out.narrow(dim, size - before, before).add_(grad.narrow(dim, 0, before))
    return out


class CachedWeight(nn.Module):
    """A layer whose applied weight is built from its parameters: rebuilt in training mode, built once
    and cached in eval mode until a parameter changes, so inference costs a plain layer."""

    _cached_weight: torch.Tensor | None = None
    _cache_key = None

    def build_weight(self) -> torch.Tensor:
        """The applied weight from the current parameters. Subclasses implement it."""
        raise NotImplementedError

    @property
    def weight(self) -> torch.Tensor:
        if self.training:
            self._cached_weight = None
            return self.build_weight()
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if self._cached_weight is None or key != self._cache_key:
            with torch.no_grad():
                self._cached_weight = self.build_weight().detach()
            self._cache_key = key
        return self._cached_weight


class LipschitzConv2d(CachedWeight):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True, padding_mode: str = "circular"):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channel counts must be positive, got in={in_channels}, out={out_channels}")
        if kernel_size < 1 or stride < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got kernel_size={kernel_size}, stride={stride}")
        if kernel_size < stride:
            raise ValueError(f"kernel_size ({kernel_size}) is smaller than stride ({stride}): "
                             "the strided convolution would skip input pixels")
        if kernel_size % stride:
            raise ValueError(f"kernel_size ({kernel_size}) must be a multiple of stride ({stride}): "
                             "a stride-s layer is pixel unshuffle by s followed by a (k/s)x(k/s) convolution")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding_mode = kernel_size, stride, padding_mode
        self.effective_in_channels = in_channels * stride * stride
        self.effective_kernel_size = kernel_size // stride
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def build_weight(self) -> torch.Tensor:
        """The (c_out, c_in*s^2, k/s, k/s) kernel from the current parameters: exactly what forward()
        applies to the unshuffled input. Subclasses implement it."""
        raise NotImplementedError

    def same_padding(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) padding that keeps the spatial size for the effective kernel."""
        total = self.effective_kernel_size - 1
        lo = total // 2
        return (lo, total - lo, lo, total - lo)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel unshuffle by s, 'same' padding, then the conv with `weight`; for s > 1 computed as the
        stride-s conv it equals: the kernel pixel-shuffled (channel c*s^2 + i*s + j, tap (a, b) becomes
        channel c, tap (a*s + i, b*s + j)) on the input padded by s times the padding. On the CPU this
        saves the unshuffle and its backward copy (87.7 -> 78.7 ms per 32x32x3 conv critic step, one A/B run)."""
        s, weight = self.stride, self.weight
        if s > 1:
            check_divisible(x, s, name="stride")
            weight = F.pixel_shuffle(weight, s)
        return F.conv2d(self.pad(x, tuple(p * s for p in self.same_padding())), weight, self.bias, stride=s)

    def pad(self, x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
        """x padded by (left, right, top, bottom) in the layer's padding mode (none needed: x itself)."""
        if not any(pad):
            return x
        return _CircularPad.apply(x, pad) if self.padding_mode == "circular" else F.pad(x, pad)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"bias={self.bias is not None}, padding_mode={self.padding_mode!r}")
