"""Norm-preserving building blocks besides convolutions: activations that permute their input almost
everywhere (so they keep gradient norm), the invertible downsampling, and an orthogonal linear layer."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from critics.conv import CachedWeight, pixel_unshuffle
from critics.orthogonal import bjorck_step_applied, check_bjorck_iters, kept_orthonormal, orthonormality_error


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


def sorting_network(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort that sort n lanes: after
    compare-exchanging every pair in order (larger value to lane i) the lanes are in descending order.
    Built for the next power of two and cut to n: lanes past n would hold -inf, which never moves, so
    a comparator touching one is dropped (tests check every 0/1 input, which proves a network sorts)."""
    size = 1 << max(n - 1, 0).bit_length()
    pairs: list[tuple[int, int]] = []

    def merge(lo: int, count: int, stride: int) -> None:  # merge two sorted halves of lanes lo, lo+stride, ...
        if 2 * stride < count:
            merge(lo, count, 2 * stride)
            merge(lo + stride, count, 2 * stride)
            pairs.extend((i, i + stride) for i in range(lo + stride, lo + count - stride, 2 * stride))
        else:
            pairs.append((lo, lo + stride))

    def sort(lo: int, count: int) -> None:
        if count > 1:
            sort(lo, count // 2)
            sort(lo + count // 2, count // 2)
            merge(lo, count, 1)

    sort(0, size)
    return tuple((i, j) for i, j in pairs if j < n)


class _NetworkSort(torch.autograd.Function):
    """Descending sort of dim 2 of a (N, groups, g[, rest]) tensor by a sorting network. A comparator's
    swap is a 0/1 weight w (1 where lane i < lane j) and both the values and, in the backward, the
    gradients move by lerp with weight w, which is exact for w in {0, 1} and finite values: the output is
    a permutation of the input (the values torch.sort gives) and the gradient the same permutation transposed. Built from
    elementwise ops torch vectorises on the CPU (torch.where and torch.sort's backward scatter are not):
    about 5x faster than torch.sort forward and backward on the conv critics' groups of 4."""

    @staticmethod
    def forward(ctx, grouped: torch.Tensor, pairs: tuple[tuple[int, int], ...]) -> torch.Tensor:
        lanes = list(grouped.unbind(2))
        swaps = []
        for i, j in pairs:
            swap = (lanes[j] - lanes[i]).clamp_(min=0).sign_()
            lanes[i], lanes[j] = torch.lerp(lanes[i], lanes[j], swap), torch.lerp(lanes[j], lanes[i], swap)
            swaps.append(swap)
        ctx.pairs = pairs
        ctx.save_for_backward(*swaps)
        return torch.stack(lanes, 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        lanes = list(grad.unbind(2))
        for (i, j), swap in zip(reversed(ctx.pairs), reversed(ctx.saved_tensors)):
            lanes[i], lanes[j] = torch.lerp(lanes[i], lanes[j], swap), torch.lerp(lanes[j], lanes[i], swap)
        return torch.stack(lanes, 2), None


# Where the network sorts: groups of at most NETWORK_MAX_GROUP (its comparators grow as g log^2 g) in
# tensors of more than NETWORK_MIN_SIZE elements (below, torch.sort's fewer op calls cost less; the
# crossover measured on one CPU thread, fixed per-op cost ~5 us against ~1 ns per element).
NETWORK_MAX_GROUP = 16
NETWORK_MIN_SIZE = 1 << 15


class GroupSort(nn.Module):
    """Sort (descending) within consecutive groups of `group_size` channels along dim 1.

    group_size=2 is MaxMin on neighbouring channel pairs. A permutation at every input, so 1-Lipschitz
    and gradient-norm preserving. Large CPU tensors of small groups sort by a sorting network in eager
    mode (same values as torch.sort, several times faster); other devices, TorchScript, tracing and
    torch.compile/export use torch.sort."""

    def __init__(self, group_size: int = 2):
        super().__init__()
        if group_size < 2:
            raise ValueError(f"GroupSort group_size must be >= 2, got {group_size}")
        self.group_size = group_size
        self.by_network = group_size <= NETWORK_MAX_GROUP
        self.pairs = sorting_network(group_size) if self.by_network else ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, g = x.shape[1], self.group_size
        if not torch.jit.is_tracing() and c % g:
            raise ValueError(f"GroupSort: {c} channels are not divisible by group_size {g}")
        shape = x.shape
        # Vectors (N, C) group as (N, C/g, g): torch.sort on the last dim of a 3-d view is ~15 % faster
        # forward + backward than on dim 2 of (N, C/g, g, 1) (FC critics; same values and gradients).
        grouped = x.reshape(shape[0], c // g, g) if x.dim() == 2 else x.reshape(shape[0], c // g, g, -1)
        if self.by_network and not torch.jit.is_scripting() and not torch.jit.is_tracing():
            return self._sort_eager(grouped).reshape(shape)
        return grouped.sort(dim=2, descending=True).values.reshape(shape)

    @torch.jit.unused
    def _sort_eager(self, grouped: torch.Tensor) -> torch.Tensor:
        if (grouped.device.type != "cpu" or grouped.numel() <= NETWORK_MIN_SIZE
                or torch.compiler.is_compiling()):  # measured on the CPU only; compile/export see the operator
            return grouped.sort(dim=2, descending=True).values
        return _NetworkSort.apply(grouped, self.pairs)

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
        check_bjorck_iters(bjorck_iters)
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
