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


def gram(w: torch.Tensor) -> torch.Tensor:
    """W^T W for tall matrices, W W^T for wide ones (the small Gram matrix)."""
    return w @ w.mT if w.shape[-2] < w.shape[-1] else w.mT @ w


def bjorck_step(w: torch.Tensor, beta: float = 0.5, g: torch.Tensor | None = None) -> torch.Tensor:
    """One Björck iteration on the last two dims (tall: columns, wide: rows), differentiable, as a
    single fused addmm. `g` may pass in the already computed gram(w).

    At an orthonormal point its derivative is exactly the derivative of the polar factor (the
    projection onto the tangent space), so one differentiable step on a kept-orthonormal parameter
    gives the true gradient of the orthogonal parameterisation."""
    if g is None:
        g = gram(w)
    wide = w.shape[-2] < w.shape[-1]
    a, b = (g, w) if wide else (w, g)
    if w.dim() == 2:
        return torch.addmm(w, a, b, beta=1 + beta, alpha=-beta)
    if w.dim() == 3:
        return torch.baddbmm(w, a, b, beta=1 + beta, alpha=-beta)
    return (1 + beta) * w - beta * (a @ b)


def gram_error(w: torch.Tensor) -> torch.Tensor:
    """Per-matrix Frobenius norm of W^T W - I (W W^T for wide): an upper bound on max |sigma^2 - 1|."""
    return gram_error_of(gram(w))


def gram_error_of(g: torch.Tensor) -> torch.Tensor:
    """Per-matrix ||G - I||_F of a batch of Gram matrices."""
    eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    return (g - eye).flatten(-2).norm(dim=-1)


@torch.no_grad()
def orthonormalize(w: torch.Tensor, tol: float, max_iters: int = 100, beta: float = 0.5) -> tuple[torch.Tensor, float, int]:
    """Björck without autograd, warm-started: iterate until ||W^T W - I||_F <= tol for every matrix.

    Returns (result, final Frobenius error, iterations). A near-orthonormal input (the usual case
    after an optimiser step) needs zero or one iteration. Before iterating, a matrix whose guaranteed
    bound ||W^T W||_inf >= sigma_max^2 exceeds 3 is scaled down, so the iteration cannot diverge and
    every singular value ends <= 1 (non-expansive) even if `max_iters` runs out."""
    g = gram(w)
    err = gram_error_of(g)
    iters = 0
    if float(err.amax()) > tol:
        bound = g.abs().sum(dim=-1).amax(dim=-1)  # >= spectral radius of the Gram matrix
        scale = torch.where(bound > 2.9, (2.9 / bound).sqrt(), torch.ones_like(bound))
        w = w * scale[..., None, None]
        g = g * (scale * scale)[..., None, None]
    while float(err.amax()) > tol and iters < max_iters:
        w = bjorck_step(w, beta, g)
        g = gram(w)
        err = gram_error_of(g)
        iters += 1
    return w, float(err.amax()), iters
