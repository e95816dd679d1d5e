"""RKO convolution (reshaped kernel orthogonalisation), a comparison method of Li et al. 2019."""
from __future__ import annotations

import torch
from torch import nn

from critics.conv import LipschitzConv2d
from critics.orthogonal import bjorck, check_bjorck_iters, orthonormality_error


class RKOConv2d(LipschitzConv2d):
    """Reshape the (c_out, c_in', k', k') kernel to a c_out x (c_in' k'^2) matrix M, Björck-orthonormalise
    it and divide by k' (c_in' = c_in s^2 and k' = k/s after the unshuffle of the stride).

    1-Lipschitz, *not* orthogonal: the convolution is M applied to the k'^2 shifted copies of the input,
    a map of norm <= k' (each pixel appears k'^2 times), so ||conv|| <= ||M|| k' / k' <= 1. The bound is
    usually loose, which is why RKO critics attenuate gradients."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True, padding_mode: str = "circular", bjorck_iters: int = 20):
        super().__init__(in_channels, out_channels, kernel_size, stride, bias, padding_mode)
        check_bjorck_iters(bjorck_iters)
        self.bjorck_iters = bjorck_iters
        k = self.effective_kernel_size
        self.kernel = nn.Parameter(torch.empty(out_channels, self.effective_in_channels, k, k))
        nn.init.orthogonal_(self.kernel.view(out_channels, -1))

    def _matrix(self) -> torch.Tensor:
        return bjorck(self.kernel.reshape(self.out_channels, -1), self.bjorck_iters)

    def build_weight(self) -> torch.Tensor:
        return (self._matrix() / self.effective_kernel_size).reshape(self.kernel.shape)

    def orthogonality_error(self) -> float:
        """Deviation of the reshaped matrix M from orthonormal rows/columns."""
        with torch.no_grad():
            return orthonormality_error(self._matrix().double())
