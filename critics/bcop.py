"""BCOP: block convolution orthogonal parameterisation (Li et al., NeurIPS 2019), built to be fast.

The layer (after pixel unshuffle by the stride, c_in' = c_in*s^2 channels, kernel k' = k/s) is

    contracting or equal (c_out <= c_in'):  y = M . K(x)     M: c_out x c_in', orthonormal rows
    expanding (c_out > c_in'):              y = K(M . x)     M: c_out x c_in', orthonormal columns

with K the block convolution of k'-1 orthogonal 2x2 kernels, each [[PQ, P(I-Q)], [(I-P)Q, (I-P)(I-Q)]]
for symmetric projectors P = R R^T, Q, of rank c/2 in c = max(c_in', c_out) channels. This is the
paper's set (an orthogonal c x c H times K, keeping the first c_out rows or c_in' columns): H K(P, Q) =
K(H P H^T, H Q H^T) H, so M absorbs H and only c_out x c_in' of it is ever needed.

Speed comes from keeping every parameter matrix (M and the R's, each projector its own c x c/2 R)
orthonormal in place: before building, a matrix that drifted past `retract_tol` (an optimiser step)
is re-projected without autograd (usually one iteration; in training decided on the device on CUDA/MPS,
so a step never waits for it, and on the host on the CPU: critics.orthogonal.kept_orthonormal), then `bjorck_iters` differentiable Björck
steps are applied. At an orthonormal point one step's derivative equals the
polar factor's, so the gradient is the gradient of the orthogonal parameterisation, at the cost of
one iteration instead of the paper's twenty."""
from __future__ import annotations

import warnings

import torch

from critics.conv import LipschitzConv2d, pixel_unshuffle
from critics.orthogonal import bjorck_step_applied, check_bjorck_iters, kept_orthonormal, orthonormality_error


def _random_orthonormal(*shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Matrices with orthonormal columns (tall) or rows (wide), Haar-like via QR of a Gaussian."""
    rows, cols = shape[-2], shape[-1]
    wide = rows < cols
    g = torch.randn(*shape[:-2], max(rows, cols), min(rows, cols), generator=generator)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    return q.mT.contiguous() if wide else q


class BCOPConv2d(LipschitzConv2d):
    """Orthogonal convolution: an isometry when expanding, orthonormal rows when contracting,
    orthogonal per frequency (circular padding) when channels match. See the module docstring.

    bjorck_iters: differentiable Björck steps per build (1 suffices: parameters are kept orthonormal).
    retract_tol: drift ||W^T W - I||_F above which a parameter is re-projected before the build; after
        one differentiable step the applied matrices deviate by at most 0.75 * retract_tol**2.
    max_retract_iters: cap for re-projecting a badly drifted parameter in an eval build (verified on the
        host); hitting it warns, and the layer is then non-expansive but not orthogonal (see
        orthogonality_error()). Training builds spend at most RETRACT_STEPS (2) re-projection steps,
        chosen on the device (on the CPU: on the host, same bits), and write them into the parameters in place (under no_grad); a larger
        drift is finished over the following steps."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True, padding_mode: str = "circular", bjorck_iters: int = 1,
                 retract_tol: float = 5e-3, max_retract_iters: int = 100,
                 generator: torch.Generator | None = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, bias, padding_mode)
        check_bjorck_iters(bjorck_iters)
        if not 0 < retract_tol <= 0.1:
            raise ValueError(f"retract_tol must be in (0, 0.1], got {retract_tol}")
        self.bjorck_iters, self.retract_tol, self.max_retract_iters = bjorck_iters, retract_tol, max_retract_iters
        c_in, c_out = self.effective_in_channels, out_channels
        self.channels = max(c_in, c_out)
        self.rank = max(1, self.channels // 2)
        n_proj = 2 * (self.effective_kernel_size - 1)
        self.ortho = torch.nn.Parameter(_random_orthonormal(c_out, c_in, generator=generator))
        self.proj = torch.nn.Parameter(_random_orthonormal(n_proj, self.channels, self.rank, generator=generator))
        self.last_retract_iters = 0  # re-projection steps of the last build (a device tensor in training)

    def _factors(self, mutate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, R stack) with orthonormal rows/columns, differentiable w.r.t. the parameters."""
        self.last_retract_iters = 0
        return self._orthonormal(self.ortho, mutate), self._orthonormal(self.proj, mutate)

    def _orthonormal(self, p: torch.Tensor, mutate: bool) -> torch.Tensor:
        w, iters = kept_orthonormal(p, mutate=mutate, tol=self.retract_tol, max_iters=self.max_retract_iters,
                                    steps=self.bjorck_iters, owner=type(self).__name__)
        self.last_retract_iters += iters
        return w

    def build_weight(self) -> torch.Tensor:
        m, rs = self._factors(mutate=self.training)
        return self.compose(m, rs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A 1x1 kernel (no projectors: the layer is M on every pixel) in training, on fewer pixels than
        min(c_out, c_in'): M applied without forming it (critics.orthogonal.bjorck_step_applied), the
        same map as the conv with `weight`. Otherwise the conv with the built kernel."""
        pixels = x.shape[0] * x.shape[-2] * x.shape[-1] // (self.stride * self.stride)
        if not (self.training and self.effective_kernel_size == 1 and self.bjorck_iters == 1
                and pixels < min(self.ortho.shape)):
            return super().forward(x)
        if self.stride > 1:
            x = pixel_unshuffle(x, self.stride, name="stride")
        self.last_retract_iters = 0
        p, self.last_retract_iters = kept_orthonormal(self.ortho, mutate=True, tol=self.retract_tol,
                                                      owner=type(self).__name__, materialize=False)
        y = bjorck_step_applied(x.movedim(1, -1), p)
        if self.bias is not None:
            y = y + self.bias
        return y.movedim(-1, 1)

    def compose(self, m: torch.Tensor, rs: torch.Tensor) -> torch.Tensor:
        """The (c_out, c_in', k', k') kernel from M and the stacked projector bases: each projector
        is two matmuls over all taps at once and a shift-add, no loop over taps."""
        t = m[None, None]  # taps-first layout (kh, kw, c_out, c_in')
        right = self.out_channels <= self.effective_in_channels  # projectors act before M (M . K)
        for j in range(rs.shape[0]):
            r = rs[j]
            axis = j % 2  # vertical, then horizontal, alternately
            if right:   # X <- X [] V:  X[t] P + X[t-1] (I - P)
                z = (t @ r) @ r.mT
            else:       # X <- V [] X:  P X[t] + (I - P) X[t-1]
                z = ((t.mT @ r) @ r.mT).mT
            d = t - z
            if t.shape[axis] == 1:
                t = torch.cat([z, d], axis)
            else:  # cat backward is a split into views: no full-size zero fills as with narrow/pad
                pad = torch.zeros_like(z.narrow(axis, 0, 1))
                t = torch.cat([z, pad], axis) + torch.cat([pad, d], axis)
        return t.permute(2, 3, 0, 1).contiguous()

    @torch.no_grad()
    def orthogonality_error(self) -> float:
        """Worst max |W^T W - I| over the matrices the current kernel is built from (0 = exact)."""
        with warnings.catch_warnings():  # the number itself is the report here
            warnings.simplefilter("ignore", RuntimeWarning)
            m, rs = self._factors(mutate=False)
        return max(orthonormality_error(m), orthonormality_error(rs) if rs.numel() else 0.0)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bjorck_iters={self.bjorck_iters}"
