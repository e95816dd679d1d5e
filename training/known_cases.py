"""Problems whose W1 is known in closed form and whose optimal critic is NOT linear (for tests and
bench/estimation_quality.py). Translations (W1 = |v|) cannot tell a good critic from a linear one;
these can (estimation.md, "Cases with a known answer").

- scaling about a point: Q = c + s (P - c) has W1(P, Q) = |1 - s| E|X - c| for ANY P (the map is an
  optimal transport, f(x) = |x - c| the optimal critic), also between two finite sets of pairs;
- mixtures: W1(P, (1 - a) P + a Q) = a W1(P, Q) for any Q;
- small data (`digits_contraction`): P = scikit-learn's digits as a distribution (each of the 1,797
  images with probability 1/1,797), Q = its contraction; both sides drawn independently, as a
  generator's samples are independent of the real set.

Arrays are returned in the units the estimator sees: vectors (N, D) with value_range="none", images
(N, C, H, W) in [0, 1] measured in the default [-1, 1] space (every distance doubled)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class KnownCase:
    name: str
    real: np.ndarray
    fake: np.ndarray
    true_w1: float
    options: dict  # what the estimator needs to measure in the right space (space only, never tuning)


def translated_digits(norm_in_space: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Digits in [0, 0.5] and the same images shifted by u >= 0 (so both stay in [0, 1]); in the
    default [-1, 1] space the shift is v = 2u, and W1 = |v| exactly (also between the two finite sets).
    A translation: a linear critic is optimal, so it only checks that nothing is lost."""
    from sklearn.datasets import load_digits

    digits = load_digits().images.astype(np.float32)[:, None] / 16.0 * 0.5
    u = np.random.default_rng(seed).random((1, 1, 8, 8)).astype(np.float32)
    u *= norm_in_space / (2 * np.linalg.norm(u))
    assert u.max() <= 0.5
    return digits, digits + u, float(np.linalg.norm(2 * u.astype(np.float64)))


def digits_contraction(s: float, n: int, seed: int = 0) -> KnownCase:
    """n real and n fake samples for small-data tests: P uniform over the 1,797 digits (in [0, 1]),
    Q = c + s (P - c) with c the mean digit. Both sides are drawn with replacement and independently
    (seed), so every held-out sample is independent of every training sample and the held-out estimate
    is unbiased for the trained critic's dual value under (P, Q), never above W1(P, Q).

    The truth is over the distributions, not the samples: W1(P, Q) = |1 - s| E_P |X - c| (scaling about
    a point, optimal critic |x - c|), here an exact mean over the 1,797 images, doubled in the default
    [-1, 1] space. The fake images are stored as float32 (rounding < 1e-7 per pixel)."""
    digits, contracted = _digits_contraction(s)
    rng = np.random.default_rng(seed)
    real = digits[rng.integers(len(digits), size=n)]
    fake = contracted[rng.integers(len(digits), size=n)]
    c = digits.mean(axis=0, keepdims=True)
    radius = np.sqrt(((digits - c) ** 2).reshape(len(digits), -1).sum(axis=1)).mean()
    return KnownCase(f"digits contraction s={s} n={n}", real.astype(np.float32), fake.astype(np.float32),
                     2 * abs(1 - s) * float(radius), {})


def digits_contraction_population(s: float):
    """The whole of digits_contraction's P and Q (all 1,797 digits and their contractions by s), as float32
    tensors in the default [-1, 1] space: a critic's dual value over them is its population value, the
    estimate without sampling error."""
    import torch

    return tuple(torch.from_numpy((2 * side - 1).astype(np.float32)) for side in _digits_contraction(s))


def _digits_contraction(s: float) -> tuple[np.ndarray, np.ndarray]:
    """(the 1,797 digits in [0, 1], float64; each contracted toward the mean digit by s)."""
    from sklearn.datasets import load_digits

    digits = load_digits().images.astype(np.float64)[:, None] / 16.0
    c = digits.mean(axis=0, keepdims=True)
    return digits, c + s * (digits - c)


def chi_mean(d: int) -> float:
    """E|Z| for Z ~ N(0, I_d): sqrt(2) Gamma((d+1)/2) / Gamma(d/2)."""
    return math.sqrt(2.0) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))


def gaussian_scaling(d: int, s: float = 0.7, n: int = 4000, seed: int = 0) -> KnownCase:
    """P = N(0, I_d), Q = s P (independent draws): W1 = |1 - s| E|Z| (chi distribution, exact)."""
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n, d)).astype(np.float32)
    fake = (s * rng.standard_normal((n, d))).astype(np.float32)
    return KnownCase(f"gauss{d} s={s}", real, fake, abs(1 - s) * chi_mean(d),
                     {"space": {"value_range": "none"}})


def image_scaling(images01: np.ndarray, s: float, name: str) -> KnownCase:
    """Images in [0, 1] and the same images contracted toward their mean image (pairs, so the fake
    set is exactly the image of the real set under the map): W1 = |1 - s| mean |x - c|, doubled in the
    [-1, 1] space. Both sides keep every value in [0, 1]."""
    x = images01.astype(np.float64)
    c = x.mean(axis=0, keepdims=True)
    fake = c + s * (x - c)
    dist = np.sqrt(((x - c) ** 2).reshape(len(x), -1).sum(axis=1)).mean()
    return KnownCase(name, x.astype(np.float32), fake.astype(np.float32), 2 * abs(1 - s) * float(dist), {})


def photo_patches(size: int, count: int, grey: bool, seed: int = 0) -> np.ndarray:
    """Patches of scikit-image's sample photographs in [0, 1], (N, C, H, W)."""
    from training.builtin import photos

    x = photos(size=size, count=count, seed=seed)[0].transpose(0, 3, 1, 2).astype(np.float64) / 255.0
    if grey:
        x = (x * np.array([0.299, 0.587, 0.114])[None, :, None, None]).sum(axis=1, keepdims=True)
    return x


def mixture(p_real: np.ndarray, p_fake: np.ndarray, q: np.ndarray, a: float, seed: int = 0) -> np.ndarray:
    """(1 - a) P + a Q as a set of len(p_fake) samples: a random part of p_fake replaced by samples of q
    (p_fake may be p_real itself: then the kept samples pair with the real side's and cancel)."""
    rng = np.random.default_rng(seed)
    n = len(p_fake)
    k = int(round(a * n))
    out = p_fake.copy()
    idx = rng.choice(n, size=k, replace=False)
    out[idx] = q[rng.choice(len(q), size=k, replace=len(q) < k)]
    return out


def train_small_gan(images01: np.ndarray, checkpoints: tuple[int, ...] = (200,), samples: int = 4000,
                    seed: int = 0, lr: float = 2e-3) -> dict[int, np.ndarray]:
    """Samples of a small GAN (MLP generator with an 8-d latent, non-saturating loss, Adam) trained on
    images in [0, 1], taken after each number of steps in `checkpoints`: models of different quality
    for the mixture identity (which holds for any Q) and for ranking checkpoints in the benchmark.
    Seconds on a CPU at 8x8 to 16x16. The same latents for every checkpoint."""
    import torch

    generators = small_gan_generators(images01, checkpoints, seed, lr)
    z = torch.randn(samples, 8, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        return {step: gen(z).numpy() for step, gen in generators.items()}


def small_gan_generators(images01: np.ndarray, checkpoints: tuple[int, ...] = (200,), seed: int = 0,
                         lr: float = 2e-3) -> dict:
    """The generator of train_small_gan (latent: 8 normal numbers -> images in [0, 1]) as it was after each
    number of steps in `checkpoints`: {step: nn.Module in eval mode} (copies taken along one run). `lr`:
    both networks' Adam rate (2e-4, DCGAN's, moves the generator less per step)."""
    import copy

    import torch

    torch.manual_seed(seed)
    data = torch.from_numpy(images01.astype(np.float32))
    shape, dim = data.shape[1:], int(np.prod(data.shape[1:]))
    gen = torch.nn.Sequential(torch.nn.Linear(8, 128), torch.nn.ReLU(), torch.nn.Linear(128, dim),
                              torch.nn.Sigmoid(), torch.nn.Unflatten(1, tuple(shape)))
    disc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(dim, 128), torch.nn.LeakyReLU(0.2),
                               torch.nn.Linear(128, 1))
    opt_g = torch.optim.Adam(gen.parameters(), lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr, betas=(0.5, 0.999))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    ones, zeros = torch.ones(64, 1), torch.zeros(64, 1)
    out = {}
    for step in range(1, max(checkpoints) + 1):
        real = data[torch.randint(len(data), (64,))]
        fake = gen(torch.randn(64, 8))
        loss_d = bce(disc(real), ones) + bce(disc(fake.detach()), zeros)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = bce(disc(fake), ones)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if step in checkpoints:
            out[step] = copy.deepcopy(gen).eval()
    return out
