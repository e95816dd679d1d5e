"""OSSN convolution (operator spectral normalisation), a comparison method of Li et al. 2019."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from critics.conv import LipschitzConv2d


class OSSNConv2d(LipschitzConv2d):
    """Kernel divided by max(sigma, 1), sigma the largest singular value of the actual convolution
    operator (padding included, at the layer's input size) estimated by power iteration.

    The power-iteration vector is a persistent buffer `u` of shape (1, c_in s^2, H/s, W/s); each training
    forward advances it by `power_iters` steps. Only *approximately* 1-Lipschitz: sigma underestimates
    the norm until the iteration has converged, and the kernel moves between steps. A certificate must
    therefore come from the exact spectrum of `weight` (critics.lipschitz), never from `sigma`.

    `input_size` (H, W) lets the vector be created at construction; otherwise the first forward does it
    (and any forward at a new size re-creates it with `init_power_iters` steps)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True, padding_mode: str = "circular", power_iters: int = 1,
                 init_power_iters: int = 50, input_size: tuple[int, int] | None = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, bias, padding_mode)
        if power_iters < 1 or init_power_iters < 1:
            raise ValueError(f"power_iters and init_power_iters must be >= 1, got {power_iters}, {init_power_iters}")
        self.power_iters, self.init_power_iters = power_iters, init_power_iters
        k = self.effective_kernel_size
        self.kernel = nn.Parameter(torch.empty(out_channels, self.effective_in_channels, k, k))
        nn.init.orthogonal_(self.kernel.view(out_channels, -1))
        self.register_buffer("u", torch.zeros(0))
        self.register_buffer("sigma", torch.ones(()))
        if input_size is not None:
            self._reset_vector(tuple(input_size))

    # --- the linear operator (no bias) on the unshuffled input, and its exact adjoint ---------------
    def operator(self, v: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.pad(v, self.same_padding()), kernel)

    def adjoint(self, y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """A^T y: the convolution with the flipped, transposed kernel and mirrored padding (lo <-> hi)."""
        lo_w, hi_w, lo_h, hi_h = self.same_padding()
        return F.conv2d(self.pad(y, (hi_w, lo_w, hi_h, lo_h)), kernel.flip(-1, -2).transpose(0, 1))

    # --- power iteration -----------------------------------------------------------------------------
    def _power_steps(self, n: int) -> None:
        with torch.no_grad():
            kernel, v = self.kernel.detach(), self.u
            for _ in range(n):
                v = self.adjoint(self.operator(v, kernel), kernel)
                v = v / v.norm().clamp_min(1e-12)
            self.u.copy_(v)
            self.sigma.copy_(self.operator(v, kernel).norm())
        self._cached_weight = None

    def _reset_vector(self, size: tuple[int, int]) -> None:
        s = self.stride
        if size[0] % s or size[1] % s:
            raise ValueError(f"input size {size} is not divisible by stride {s}")
        shape = (1, self.effective_in_channels, size[0] // s, size[1] // s)
        v = torch.randn(shape, device=self.kernel.device, dtype=self.kernel.dtype)
        self.u = v / v.norm()
        self._power_steps(self.init_power_iters)

    def build_weight(self) -> torch.Tensor:
        if self.u.numel() == 0:
            raise RuntimeError("OSSNConv2d has no power-iteration vector yet: pass input_size=(H, W) "
                               "or run a forward pass first")
        sigma = self.operator(self.u, self.kernel).norm()
        return self.kernel / sigma.clamp_min(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        s = self.stride
        if self.u.numel() == 0 or tuple(self.u.shape[-2:]) != (size[0] // s, size[1] // s):
            self._reset_vector(size)
        elif self.training:
            self._power_steps(self.power_iters)
        return super().forward(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The vector's shape depends on the input size it was trained at: adopt the saved one.
        saved = state_dict.get(prefix + "u")
        if saved is not None and saved.shape != self.u.shape:
            self.u = torch.empty_like(saved, device=self.u.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", power_iters={self.power_iters}"
