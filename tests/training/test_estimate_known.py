"""The estimator against cases whose W1 is known independently (estimation.md, "Cases with a known
answer"): a translation of real images, one-dimensional data (scipy), and small discrete problems
(POT's exact optimal transport). An estimate above a known W1 by more than its interval is a bug."""
from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from scipy.stats import wasserstein_distance

from training import estimate_w1
from training.known_cases import translated_digits


def test_translated_digits_certified_bound_is_tight_and_never_above(known_answers):
    real, fake, true_w1 = translated_digits(4.0)
    r = estimate_w1(real, fake, critic="dcgan", width=16, steps=400, seed=1)
    known_answers.add("digits + v, |v| = 4 (dcgan, 400 steps)", true_w1, r)
    half = r.ci[1] - r.estimate
    assert r.space["value_range"] == [-1.0, 1.0]
    assert r.lipschitz_bound == pytest.approx(1.0, abs=1e-4)
    assert r.estimate - true_w1 <= half, (r.estimate, true_w1, r.ci)
    assert r.certified_ci[0] <= true_w1
    assert 0.95 * true_w1 <= r.certified_lower_bound, (r.certified_lower_bound, true_w1)
    assert r.samples.real_heldout == r.samples.fake_heldout == round(0.2 * len(real))


def test_one_dimensional_against_scipy():
    """P = Beta(5, 5) vs Q = half Beta(1, 10), half Beta(10, 1): the CDFs cross, so the optimal
    critic is not linear. Reference: scipy on 200,000 draws per side (error ~1e-3)."""
    rng = np.random.default_rng(0)

    def draw_p(n):
        return rng.beta(5, 5, n)

    def draw_q(n):
        return np.where(rng.random(n) < 0.5, rng.beta(1, 10, n), rng.beta(10, 1, n))

    true_w1 = wasserstein_distance(draw_p(200_000), draw_q(200_000))  # in [0, 1]
    real = draw_p(6000).astype(np.float32).reshape(-1, 1, 1, 1)
    fake = draw_q(6000).astype(np.float32).reshape(-1, 1, 1, 1)
    r = estimate_w1(real, fake, critic="fc", width=32, critic_options={"depth": 2},
                    space={"value_range": (0.0, 1.0)}, steps=600, eval_every=50, seed=0)
    half = r.ci[1] - r.estimate
    assert r.estimate <= true_w1 + half + 2e-3, (r.estimate, true_w1, r.ci)
    assert r.certified_lower_bound >= 0.93 * true_w1, (r.certified_lower_bound, true_w1)


def test_discrete_points_never_exceed_exact_ot():
    """200 + 200 points in 3-D: a critic trained on them and evaluated on all of them gives a dual
    value that can never exceed the exact empirical W1 (POT, Euclidean cost)."""
    rng = np.random.default_rng(3)
    x = rng.random((200, 3)).astype(np.float32)
    y = (0.3 * rng.random((200, 3)) + np.array([0.6, 0.1, 0.5])).astype(np.float32)
    exact = float(ot.emd2(ot.unif(200), ot.unif(200), ot.dist(x.astype(np.float64), y.astype(np.float64),
                                                                   metric="euclidean")))
    r = estimate_w1(x.reshape(200, 1, 1, 3), y.reshape(200, 1, 1, 3), critic="fc", width=64,
                    critic_options={"depth": 2}, space={"value_range": (0.0, 1.0)}, holdout=2, validation=0,
                    early_stopping=False, steps=500, seed=0)
    critic = r.critic.eval()
    with torch.no_grad():
        f_x = critic(torch.from_numpy(x).view(200, 1, 1, 3)).double()
        f_y = critic(torch.from_numpy(y).view(200, 1, 1, 3)).double()
    dual = float(f_x.mean() - f_y.mean()) / r.lipschitz_bound
    assert dual <= exact + 1e-5, (dual, exact)
    assert dual >= 0.8 * exact, (dual, exact)  # and the critic did learn most of it
