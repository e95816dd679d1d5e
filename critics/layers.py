"""Norm-preserving building blocks besides convolutions: activations that permute their input almost
everywhere (so they keep gradient norm), the invertible downsampling, and an orthogonal linear layer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from critics.orthogonal import bjorck, orthonormality_error


class MaxMin(nn.Module):
    """Split the channels (dim 1) into halves a, b and return cat(max(a, b), min(a, b)).

    1-Lipschitz and gradient-norm preserving: on each pixel it is a permutation of its inputs.
    Built from max/min/cat only, so TorchScript and ONNX export it as is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if not torch.jit.is_tracing() and c % 2:  # (traced shapes are tensors: checked when eager)
            raise ValueError(f"MaxMin needs an even number of channels, got {c}")
        a, b = x[:, : c // 2], x[:, c // 2:]
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=1)


class GroupSort(nn.Module):
    """Sort (descending) within consecutive groups of `group_size` channels along dim 1.

    group_size=2 is MaxMin on neighbouring channel pairs. A permutation at every input, so 1-Lipschitz
    and gradient-norm preserving."""

    def __init__(self, group_size: int = 2):
        super().__init__()
        if group_size < 2:
            raise ValueError(f"GroupSort group_size must be >= 2, got {group_size}")
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, g = x.shape[1], self.group_size
        if not torch.jit.is_tracing() and c % g:
            raise ValueError(f"GroupSort: {c} channels are not divisible by group_size {g}")
        shape = x.shape
        grouped = x.reshape(shape[0], c // g, g, -1)
        return grouped.sort(dim=2, descending=True).values.reshape(shape)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class InvertibleDownsample(nn.Module):
    """Pixel unshuffle by `factor`: (C, H, W) -> (C s^2, H/s, W/s). A permutation of coordinates, hence
    orthogonal; it replaces striding so that downsampling loses neither information nor gradient norm."""

    def __init__(self, factor: int = 2):
        super().__init__()
        if factor < 1:
            raise ValueError(f"InvertibleDownsample factor must be >= 1, got {factor}")
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.factor
        if x.shape[-1] % s or x.shape[-2] % s:
            raise ValueError(f"input size {tuple(x.shape[-2:])} is not divisible by the downsampling factor {s}")
        return F.pixel_unshuffle(x, s)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class OrthoLinear(nn.Module):
    """Linear layer whose weight is Björck-orthonormalised: orthonormal rows when out < in (gradient-norm
    preserving backwards), orthonormal columns when out > in (an isometry). With one output the weight
    is the unit vector param/||param||, normalised exactly.

    Like LipschitzConv2d, `weight` is rebuilt in training mode and cached in eval mode."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bjorck_iters: int = 25):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"feature counts must be positive, got in={in_features}, out={out_features}")
        if bjorck_iters < 1:
            raise ValueError(f"bjorck_iters must be >= 1, got {bjorck_iters}")
        self.in_features, self.out_features, self.bjorck_iters = in_features, out_features, bjorck_iters
        self.param = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.orthogonal_(self.param)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._cached_weight: torch.Tensor | None = None
        self._cache_key = None

    def build_weight(self) -> torch.Tensor:
        if self.out_features == 1:
            return self.param / self.param.norm().clamp_min(1e-12)
        return bjorck(self.param, self.bjorck_iters)

    @property
    def weight(self) -> torch.Tensor:
        """The (out, in) matrix forward() applies; cached in eval mode until a parameter changes."""
        if self.training:
            self._cached_weight = None
            return self.build_weight()
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if self._cached_weight is None or key != self._cache_key:
            with torch.no_grad():
                self._cached_weight = self.build_weight().detach()
            self._cache_key = key
        return self._cached_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"OrthoLinear expects {self.in_features} input features, got {x.shape[-1]}")
        return F.linear(x, self.weight, self.bias)

    def orthogonality_error(self) -> float:
        """max |W W^T - I| (or W^T W): how far Björck is from converged (0 for the exact unit vector)."""
        with torch.no_grad():
            return orthonormality_error(self.build_weight().double())

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, bjorck_iters={self.bjorck_iters}"
