"""Known answers where a linear critic LOSES (estimation.md): isotropic scaling about a point
(W1 = |1 - s| E|X - c|, optimal critic |x - c|) on Gaussians in 32 and 256 dimensions and on photo
patches at 16x16 and 32x32x3, and the mixture identity W1(P, (1 - a) P + a Q) = a W1(P, Q) with Q a
small GAN trained here on digits. All with DEFAULT options (only the input space for vectors).

Targets (issue 7): certified / true >= 0.96 on every scaling case; mixture ratios within 0.05 of a;
a translation keeps >= 0.99; the one-sided lower confidence bound never exceeds the true W1.
The 32x32x3 case is the slowest test of the suite (a few minutes on 2 cores).
Measured 2026-12-06 with bench/estimation_quality.py (the same cases, 1 thread, 2-3 seeds):
gauss32 0.964-1.023, gauss256 0.968-0.984, photos16 0.998-1.026, photos32x3 0.975-1.002 (auto chose
the BCOP conv critic, about 5 min on one busy core); the LCB above the truth in 0 of 31 runs.
Over 10 seeds (2026-12-07, bench/results/steps_and_retraction_*) gauss32 averaged 0.975 with two
runs under 0.96 (0.958, 0.947): its held-out standard error is 1.8 % of W1, so these bars hold on the
seed the CI runs (seed 0) and for the mean, not on every possible draw."""
from __future__ import annotations

import numpy as np
import pytest

from training import estimate_w1
from training.known_cases import (chi_mean, gaussian_scaling, image_scaling, mixture, photo_patches,
                                  train_small_gan, translated_digits)

RATIO = 0.96

SCALING = {
    "gauss32": lambda: gaussian_scaling(32, s=0.7, n=4000),
    "gauss256": lambda: gaussian_scaling(256, s=0.7, n=4000),
    "photos16": lambda: image_scaling(photo_patches(16, 3000, grey=True), 0.5, "photos16 grey s=0.5"),
    "photos32x3": lambda: image_scaling(photo_patches(32, 2000, grey=False), 0.5, "photos32 rgb s=0.5"),
}


def test_chi_mean_matches_monte_carlo():
    """The closed form E|Z| the Gaussian cases rest on, against 50,000 draws (relative s.e. < 3e-4)."""
    rng = np.random.default_rng(0)
    for d in (32, 256):
        mc = np.linalg.norm(rng.standard_normal((50_000, d)), axis=1).mean()
        assert chi_mean(d) == pytest.approx(mc, rel=2e-3)


@pytest.mark.parametrize("name", list(SCALING))
def test_scaling_certified_estimate_is_tight_and_lcb_below_truth(name, known_answers):
    case = SCALING[name]()
    r = estimate_w1(case.real, case.fake, **case.options)
    known_answers.add(case.name, case.true_w1, r)
    ratio = r.certified_lower_bound / case.true_w1
    print(f"{case.name}: certified/true {ratio:.4f}, lcb/true {r.lower_confidence_bound / case.true_w1:.4f}, "
          f"chosen {r.selection.chosen if r.selection else r.critic_spec['name']}, {r.timings.total_s:.0f} s")
    assert r.lower_confidence_bound <= case.true_w1, (r.lower_confidence_bound, case.true_w1)
    assert r.estimate - case.true_w1 <= r.ci[1] - r.estimate  # never above the truth beyond noise
    assert ratio >= RATIO, (case.name, ratio)


def test_translation_keeps_its_accuracy_with_auto(known_answers):
    real, fake, true_w1 = translated_digits(4.0)
    r = estimate_w1(real, fake)
    known_answers.add("digits + v, |v| = 4 (auto)", true_w1, r)
    assert r.lower_confidence_bound <= true_w1
    assert r.certified_lower_bound >= 0.99 * true_w1, (r.certified_lower_bound, true_w1)


@pytest.fixture(scope="session")
def gan_digits(tmp_path_factory):
    """Samples of a small GAN trained for 200 steps on digits in [0, 1] (training.known_cases), once per
    session (seconds), cached under the session's tmp dir. Its quality does not matter: the identity
    holds for any Q."""
    from sklearn.datasets import load_digits

    digits = load_digits().images.astype(np.float32)[:, None] / 16.0
    cache = tmp_path_factory.getbasetemp() / "gan_digits_200.npy"
    if not cache.exists():
        np.save(cache, train_small_gan(digits, checkpoints=(200,))[200])
    return digits, np.load(cache)


def test_mixture_ratios_follow_the_mixing_weight(gan_digits):
    """P = the digits, Q = GAN samples: W1(P, (1 - a) P + a Q) / W1(P, Q) = a. The mixture keeps the
    digits at the indices it does not replace, so those held-out pairs cancel exactly (less noise)."""
    digits, q = gan_digits
    full = estimate_w1(digits, q[:len(digits)])
    assert full.lower_confidence_bound > 10 * full.stderr  # W1 well above the noise
    for a in (0.5,):
        mixed = estimate_w1(digits, mixture(digits, digits, q, a, seed=1))
        ratio = mixed.certified_lower_bound / full.certified_lower_bound
        print(f"mixture a={a}: W1(P,Q) >= {full.certified_lower_bound:.4f} (s.e. {full.stderr:.4f}), "
              f"W1(P, mix) >= {mixed.certified_lower_bound:.4f} (s.e. {mixed.stderr:.4f}), ratio {ratio:.4f}")
        assert abs(ratio - a) <= 0.05, (a, ratio)
