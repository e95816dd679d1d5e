"""Norm-preserving building blocks besides convolutions: activations that permute their input almost
everywhere (so they keep gradient norm), the invertible downsampling, and an orthogonal linear layer."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from critics.conv import CachedWeight, pixel_unshuffle
from critics.orthogonal import bjorck_step_applied, kept_orthonormal, orthonormality_error


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
        return pixel_unshuffle(x, self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class OrthoLinear(CachedWeight):
    """Linear layer whose weight is Björck-orthonormalised: orthonormal rows when out < in (gradient-norm
    preserving backwards), orthonormal columns when out > in (an isometry). With one output the weight
    is the unit vector param/||param||, normalised exactly.

    The parameter is kept orthonormal in place (re-projected after optimiser steps, decided on the
    device on CUDA/MPS and on the host on the CPU, see critics.orthogonal.kept_orthonormal), so `bjorck_iters` differentiable steps (default 1)
    give the exact gradient of the orthogonal parameterisation. Like LipschitzConv2d, `weight` is rebuilt
    in training mode and cached in eval mode; a training forward on fewer rows than min(in, out) applies
    the step without forming the weight (same map, no Gram matrix)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bjorck_iters: int = 1,
                 retract_tol: float = 5e-3, max_retract_iters: int = 100):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"feature counts must be positive, got in={in_features}, out={out_features}")
        if bjorck_iters < 1:
            raise ValueError(f"bjorck_iters must be >= 1, got {bjorck_iters}")
        self.in_features, self.out_features, self.bjorck_iters = in_features, out_features, bjorck_iters
        self.retract_tol, self.max_retract_iters = retract_tol, max_retract_iters
        # Re-projection steps per training build: one where a Gram matrix costs as much as the rest of
        # the step (the applied Björck step squares the remaining error again), else two (cheap there,
        # and what the host rule needs after the large steps small FC critics take).
        small, large = min(in_features, out_features), max(in_features, out_features)
        self.retract_steps = 2 if small * small * large <= 2 ** 24 else 1
        self.param = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.orthogonal_(self.param)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def build_weight(self) -> torch.Tensor:
        return self._matrix(mutate=self.training)

    def _matrix(self, mutate: bool) -> torch.Tensor:
        if self.out_features == 1:
            return self.param / self.param.norm().clamp_min(1e-12)
        w, _ = kept_orthonormal(self.param, mutate=mutate, tol=self.retract_tol, max_iters=self.max_retract_iters,
                                steps=self.bjorck_iters, owner="OrthoLinear", retract_steps=self.retract_steps)
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"OrthoLinear expects {self.in_features} input features, got {x.shape[-1]}")
        rows = x.numel() // self.in_features
        if (self.training and self.out_features > 1 and self.bjorck_iters == 1
                and rows < min(self.in_features, self.out_features)):
            # The Björck step W = 1.5 P - 0.5 P P^T P applied without forming it (no Gram matrix):
            # x W^T = 1.5 a - 0.5 (a P) P^T with a = x P^T. Same map, a few rows x matrix products
            # instead of matrix x matrix ones: cheaper when the batch has fewer rows than min(in, out).
            p, _ = kept_orthonormal(self.param, mutate=True, tol=self.retract_tol, owner="OrthoLinear",
                                    retract_steps=self.retract_steps, materialize=False)
            y = bjorck_step_applied(x, p)
            return y if self.bias is None else y + self.bias
        return F.linear(x, self.weight, self.bias)

    def orthogonality_error(self) -> float:
        """max |W W^T - I| (or W^T W): how far Björck is from converged (0 for the exact unit vector)."""
        with torch.no_grad(), warnings.catch_warnings():  # the number itself is the report here
            warnings.simplefilter("ignore", RuntimeWarning)
            return orthonormality_error(self._matrix(mutate=False).double())

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, bjorck_iters={self.bjorck_iters}"
