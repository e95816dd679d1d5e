"""Björck orthonormalisation, shared by every layer that needs an (almost) orthonormal matrix."""
from __future__ import annotations

import contextlib
import warnings

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


MAX_BJORCK_ITERS = 100  # differentiable steps per build: each one more matrix product and its saved activations


def check_bjorck_iters(iters: int) -> None:
    """Refuse a step count that would make every forward pass cost without bound (memory included)."""
    if isinstance(iters, bool) or not isinstance(iters, int) or not 1 <= iters <= MAX_BJORCK_ITERS:
        raise ValueError(f"bjorck_iters must be an integer in 1..{MAX_BJORCK_ITERS} (each is one more "
                         f"differentiable matrix product per forward pass), got {iters!r}")


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


def bjorck_step_applied(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """x @ bjorck_step(p).T without forming the step: 1.5 a - 0.5 (a p) p^T with a = x p^T.

    The same map (W = 1.5 p - 0.5 p p^T p for tall and wide p alike) and the same gradients, for rows x
    of the last dimension; three rows x matrix products instead of two matrix x matrix ones and their
    backward, so cheaper whenever x has fewer rows than min(p.shape)."""
    a = x.flatten(0, -2) @ p.mT
    return torch.addmm(a, a @ p, p.mT, beta=1.5, alpha=-0.5).view(*x.shape[:-1], p.shape[0])


def polar3_step(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """One third-order Newton-Schulz step W (15/8 I - 5/4 G + 3/8 G^2) with G = gram(w) given, without
    autograd (re-projection only). It maps every eigenvalue x of G - I to 5/8 x^3 - 15/64 x^4 + 9/64 x^5
    (polar3_error), where two Björck steps give ~0.42 x^4: the same re-projection at three matrix
    products of this size (G is the drift check's) instead of four. Singular values are mapped
    monotonically (derivative 15/8 (1 - s^2)^2 >= 0) and slightly above 1 for s > 1, so it is only used
    for |x| <= 0.5, where the result stays within a Björck step's region of convergence."""
    eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    poly = 1.875 * eye - 1.25 * g + 0.375 * (g @ g)
    return poly @ w if w.shape[-2] < w.shape[-1] else w @ poly


def polar3_error(e):
    """A bound on ||gram(polar3_step(w)) - I||_F from e = ||gram(w) - I||_F <= 0.5, plus float32 rounding:
    |x'| <= 5/8 |x|^3 (1 + 3/8 |x| + 9/40 x^2) for every eigenvalue, and max |x| <= e."""
    return 0.625 * e * e * e * (1 + 0.375 * e + 0.225 * e * e) + 1e-6


def bjorck_error(e):
    """A bound on ||gram(bjorck_step(w)) - I||_F from e = ||gram(w) - I||_F <= 0.5, plus float32 rounding."""
    return 0.75 * e * e * (1 + e / 3) + 1e-6


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


RETRACT_STEPS = 2  # no-grad steps (Björck or one third-order) a training build may spend re-projecting


def kept_orthonormal(p: torch.Tensor, *, mutate: bool, tol: float = 5e-3, max_iters: int = 100,
                     steps: int = 1, owner: str = "layer", retract_steps: int = RETRACT_STEPS,
                     materialize: bool = True) -> tuple[torch.Tensor, torch.Tensor | int]:
    """`steps` differentiable Björck steps on a parameter that is kept orthonormal in place.

    Returns (matrix, iterations spent re-projecting). The drift check is e = ||p^T p - I||_F. A
    drifted parameter (after an optimiser step) is re-projected without autograd: for e <= 0.5 a
    Björck step maps every eigenvalue x of p^T p - I to x' with |x'| <= 0.75 x^2 (1 + |x|/3), so the
    number of steps that bring the error under `tol` is known from e (no verification Gram needed).
    Where one step would not do but one third-order step would (polar3_step; an Adam step's usual
    drift on a 256 x 256 matrix, e = 0.1-0.19), that step is taken instead of two Björck steps: three
    matrix products instead of four. A larger drift is first scaled into the region of convergence
    and verified step by step.

    With `mutate` (a training step) on CUDA/MPS the decision is taken on the device, never on the host:
    up to `retract_steps` steps are computed and each is kept or dropped by torch.where, and the result
    is written back into the parameter, so the step never waits for the device (iterations come back
    as a device tensor). On the CPU the host takes the same decisions and computes only the steps it
    keeps (decide_on_device; same bits). Where the host rule needs more steps than that (a drift too large for the
    learning rate), the rest happens in the following builds; the applied matrix stays non-expansive
    either way (a Björck step maps every singular value in [0, sqrt 3] into [0, 1]). Without
    `mutate` (eval builds, reports) the re-projection is used functionally and verified on the host,
    up to `max_iters` steps, with a warning if that does not reach `tol`.
    At an orthonormal point one step's derivative equals the polar factor's, so one step gives the
    gradient of the orthogonal parameterisation at the cost of one iteration instead of twenty.
    `materialize=False` (one step, training only) returns the re-projected parameter instead of the
    step's result, for callers that apply the step to their input without forming it (OrthoLinear)."""
    if not p.numel():
        return p, 0
    if mutate:
        # p._version is a host-side counter: unchanged since our own write-back means no optimiser
        # step in between (a second forward in the same step), so there is nothing to re-project and
        # nothing may be written into a tensor that autograd has saved.
        iters = 0
        if getattr(p, "_w1_retracted_version", None) != p._version:
            retract = _retract_on_device if decide_on_device(p) else _retract_on_host
            iters = retract(p, tol, retract_steps)
            p._w1_retracted_version = p._version
        if not materialize:
            return p, iters
        g = gram(p)
    else:
        g = gram(p)
        p, g, iters = _retract_checked(p, g, tol, max_iters, owner)
    w = bjorck_step(p, g=g)
    for _ in range(steps - 1):
        w = bjorck_step(w)
    return w, iters


_DECIDE_ON_DEVICE: bool | None = None  # None: on the device wherever a host read would wait for it


def decide_on_device(p: torch.Tensor) -> bool:
    """Whether a training build decides its re-projection on the device (sync-free) or on the host.

    On the CPU a host read costs nothing, so the host decides and computes only the steps it keeps
    (the same operations in the same order: the same bits as the device rule). On CUDA or MPS the
    device decides, so a step never waits for the device. `sync_free(True)` forces the device rule
    (the tests count its host reads on the CPU)."""
    return p.device.type != "cpu" if _DECIDE_ON_DEVICE is None else _DECIDE_ON_DEVICE


@contextlib.contextmanager
def sync_free(on: bool | None = True):
    """Within the block, training builds decide re-projection on the device (True), on the host
    (False) or by the parameter's device (None)."""
    global _DECIDE_ON_DEVICE
    previous, _DECIDE_ON_DEVICE = _DECIDE_ON_DEVICE, on
    try:
        yield
    finally:
        _DECIDE_ON_DEVICE = previous


def _third_order_suffices(rec, tol: float):
    """Whether one polar3_step brings a drift `rec` (<= 0.5, a float or a device tensor) under `tol` where
    one Björck step does not: then it replaces the two Björck steps (three matrix products, not four)."""
    return (bjorck_error(rec) > tol) & (polar3_error(rec) <= tol) & (rec <= 0.5)


@torch.no_grad()
def _retract_on_host(p: torch.Tensor, tol: float, max_steps: int) -> int:
    """_retract_on_device's rule decided on the host: the steps it would keep, and only those, so the
    result has the same bits. Returns the number of steps applied."""
    w = p.detach()
    g = gram(w)
    rec = float(gram_error_of(g).amax())  # float32 value, compared in float64 as the device rule does
    if rec <= tol:
        return 0
    if _third_order_suffices(rec, tol):
        p.copy_(polar3_step(w, g))
        return 1
    big = rec > 0.5
    if big:
        bound = g.abs().sum(dim=-1).amax(dim=-1)
        scale = torch.where(bound > 2.9, (2.9 / bound).sqrt(), torch.ones_like(bound))
        w = w * scale[..., None, None]
        g = g * (scale * scale)[..., None, None]
    iters = 0
    while True:
        w = bjorck_step(w, g=g)
        iters += 1
        if iters == max_steps:
            break
        if big:
            g = gram(w)
            if float(gram_error_of(g).amax()) <= tol:
                break
        else:
            rec = bjorck_error(rec)
            if rec <= tol:
                break
            g = gram(w)
    p.copy_(w)
    return iters


@torch.no_grad()
def _retract_on_device(p: torch.Tensor, tol: float, max_steps: int) -> torch.Tensor:
    """Re-project `p` in place without a host synchronisation: the rule of _retract_on_host (the same
    operations, so the same bits), each step applied or not by torch.where on device-side errors.
    Returns the number of steps applied (a device tensor)."""
    w = p.detach()
    g = gram(w)
    rec = gram_error_of(g).amax().double()   # the drift check, as the host rule sees it (float64)
    big = rec > 0.5                           # verified mode: scaled start, measured errors
    active = rec > tol
    third = active & _third_order_suffices(rec, tol)  # one polar3_step and done
    bound = g.abs().sum(dim=-1).amax(dim=-1)  # >= spectral radius of the Gram matrix
    one = torch.ones_like(bound)
    scale = torch.where(big, torch.where(bound > 2.9, (2.9 / bound).sqrt(), one), one)
    w = w * scale[..., None, None]            # exactly w where scale is 1
    g = g * (scale * scale)[..., None, None]
    iters = torch.zeros((), dtype=torch.int64, device=p.device)
    for i in range(max_steps):
        step = bjorck_step(w, g=g)
        if i == 0:
            step = torch.where(third, polar3_step(w, g), step)
        w = torch.where(active, step, w)
        iters = iters + active.long()
        if i == max_steps - 1:
            break
        g = gram(w)
        measured = gram_error_of(g).amax().double()
        rec = bjorck_error(rec)
        active = active & ~third & torch.where(big, measured > tol, rec > tol)
    p.copy_(w)
    return iters


def _retract_checked(p: torch.Tensor, g: torch.Tensor, tol: float, max_iters: int,
                     owner: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Functional re-projection decided on the host (eval builds and reports only): (p, gram(p), iters)."""
    err = float(gram_error_of(g.detach()).amax())
    if err <= tol:
        return p, g, 0
    iters = 0
    with torch.no_grad():
        if err <= 0.5:
            fixed, gd = p.detach(), g.detach()
            while err > tol:
                fixed = bjorck_step(fixed, g=gd if iters == 0 else None)
                err = bjorck_error(err)
                iters += 1
        else:
            fixed, err, iters = orthonormalize(p.detach(), tol, max_iters)
            if err > tol:
                warnings.warn(f"{owner}: Björck did not converge in {iters} iterations "
                              f"(||W^T W - I||_F = {err:.2e}); the layer stays non-expansive but is "
                              "not orthogonal. Lower the learning rate.", RuntimeWarning, stacklevel=5)
    return fixed, gram(fixed), iters
