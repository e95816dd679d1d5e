"""Björck orthonormalisation, shared by every layer that needs an (almost) orthonormal matrix."""
from __future__ import annotations

import torch


def bjorck(w: torch.Tensor, iters: int = 20, beta: float = 0.5) -> torch.Tensor:
    """Orthonormalise the last two dimensions of `w` (batched).

    A tall matrix (m >= n) gets orthonormal columns, a wide one orthonormal rows. The input is first
    divided by its Frobenius norm, a guaranteed bound on its spectral norm, so the iteration
    R <- (1 + beta) R - beta R (R^T R) starts inside its region of convergence and every singular
    value of the result stays <= 1 even when it has not converged (non-expansive either way)."""
    wide = w.shape[-2] < w.shape[-1]
    r = w.mT if wide else w
    r = r / r.flatten(-2).norm(dim=-1).clamp_min(1e-12)[..., None, None]
    for _ in range(iters):
        r = (1 + beta) * r - beta * r @ (r.mT @ r)
    return r.mT if wide else r


def orthonormality_error(w: torch.Tensor) -> float:
    """max |W^T W - I| (or W W^T for wide matrices) over a batch: how far Björck is from converged."""
    wide = w.shape[-2] < w.shape[-1]
    g = w @ w.mT if wide else w.mT @ w
    eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    return float((g - eye).abs().amax()) if g.numel() else 0.0
