"""Checkpoint series for tests and benchmarks (issue 13), next to training.known_cases:

- contraction toward the mean, Q_s = c + s (P - c), for a list of s (a generator converging as s -> 1):
  W1 = |1 - s| E|X - c| for every item (training.known_cases), on Gaussians (one latent draw scaled
  by every s, like a generator's fixed latents), photo patches and digits;
- a small GAN trained here, its samples saved at checkpoints along its run (no closed form); at DCGAN's
  rate (2e-4) by default, or faster (lr=2e-3: a generator that moves far between checkpoints).

Arrays come in the estimator's units (known_cases): vectors with value_range="none", images in [0, 1]
measured in the default [-1, 1] space."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.known_cases import chi_mean, image_scaling, photo_patches, train_small_gan

# s = 0.5, 0.55, ..., 0.95: W1 shrinks item by item, as for a converging generator
CONVERGING = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))


@dataclass
class SeriesCase:
    name: str
    real: np.ndarray
    fakes: list[np.ndarray]
    labels: list[str]
    steps: list[int]
    true_w1: list[float] | None  # None: no closed form (GAN checkpoints)
    options: dict = field(default_factory=dict)  # the input space only, never tuning


def gaussian_contraction(d: int, s_values=CONVERGING, n: int = 2000, seed: int = 0) -> SeriesCase:
    """P = N(0, I_d); item s: s Z' with one draw Z' for every item: W1 = |1 - s| E|Z| exactly."""
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n, d)).astype(np.float32)
    base = rng.standard_normal((n, d))
    return SeriesCase(f"gauss{d}", real, [(s * base).astype(np.float32) for s in s_values],
                      [f"s={s}" for s in s_values], list(range(len(s_values))),
                      [abs(1 - s) * chi_mean(d) for s in s_values], {"space": {"value_range": "none"}})


def image_contraction(images01: np.ndarray, name: str, s_values=CONVERGING) -> SeriesCase:
    """Images in [0, 1] contracted toward their mean image by each s (pairs of the real set)."""
    cases = [image_scaling(images01, s, f"{name} s={s}") for s in s_values]
    return SeriesCase(name, cases[0].real, [c.fake for c in cases], [f"s={s}" for s in s_values],
                      list(range(len(s_values))), [c.true_w1 for c in cases])


def digits01(count: int | None = None) -> np.ndarray:
    from sklearn.datasets import load_digits

    x = load_digits().images.astype(np.float32)[:, None] / 16.0
    return x if count is None else x[:count]


def digits_contraction(s_values=CONVERGING, count: int | None = None) -> SeriesCase:
    return image_contraction(digits01(count), "digits", s_values)


def photos_contraction(size: int = 16, count: int = 2000, grey: bool = True, s_values=CONVERGING) -> SeriesCase:
    name = f"photos{size}" + ("" if grey else "x3")
    return image_contraction(photo_patches(size, count, grey=grey), name, s_values)


GAN_CHECKPOINTS = tuple(range(2000, 4000, 250))  # 8 checkpoints, 250 generator steps apart


def gan_series(images01: np.ndarray, name: str, checkpoints=GAN_CHECKPOINTS, samples: int = 2000, seed: int = 0,
               lr: float = 2e-4) -> SeriesCase:
    """A small GAN (known_cases.small_gan_generators, Adam at DCGAN's 2e-4 by default) trained on the
    images, sampled with the same latents after each checkpoint step: related generators, W1 unknown."""
    out = train_small_gan(images01, checkpoints=tuple(checkpoints), samples=samples, seed=seed, lr=lr)
    return SeriesCase(f"{name} GAN", images01.astype(np.float32), [out[c] for c in checkpoints],
                      [f"ckpt_{c:06d}" for c in checkpoints], list(checkpoints), None)
