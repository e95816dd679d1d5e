"""Cross-fitting (folds > 1): every sample is held out exactly once, each fold's critic never sees its
fold, each is certified on its own, the pooled numbers follow from the folds' values, and the
standard error stays honest: the lower confidence bound covers the critics' own dual value (computed
exactly over the whole distribution) at least as often as it says."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from training import estimate_w1
from training.data import open_sides, split_indices
from training.known_cases import digits_contraction, digits_contraction_population
from training.options import EstimateOptions
from training.report import stderr

SMALL = dict(critic="fc", width=32, steps=150, eval_every=50, batch_size=32)


def test_folds_partition_the_samples_and_keep_each_fold_out_of_its_training():
    opts = EstimateOptions(folds=5, seed=2).resolved()
    held = []
    for k in range(5):
        heldout, validation, train = split_indices(103, opts, True, fold=(k, 5))
        assert not set(heldout.tolist()) & (set(validation.tolist()) | set(train.tolist()))
        assert len(heldout) + len(validation) + len(train) == 103 and len(validation) == round(0.1 * 103)
        held += heldout.tolist()
    assert sorted(held) == list(range(103))  # every sample held out exactly once


def test_pooled_numbers_follow_from_each_folds_certified_critic(known_answers):
    case = digits_contraction(0.7, 200, seed=5)
    r = estimate_w1(case.real, case.fake, folds=4, **SMALL)
    known_answers.add("digits contraction s=0.7, 200 a side, 4 folds", case.true_w1, r)
    assert len(r.folds) == len(r.critics) == 4
    assert r.samples.real_heldout == r.samples.fake_heldout == 200
    opts = EstimateOptions(folds=4, **SMALL).resolved()
    estimates, certified, errors, weights = [], [], [], []
    for k, (fold, critic) in enumerate(zip(r.folds, r.critics)):
        sides = open_sides(case.real, case.fake, opts, fold=(k, 4))
        sides.unseal()
        with torch.no_grad():
            fr = torch.cat([critic(x) for x in sides.real.heldout_batches()]).double().numpy()
            ff = torch.cat([critic(x) for x in sides.fake.heldout_batches()]).double().numpy()
        assert fold.real_heldout == len(fr) and fold.estimate == pytest.approx(fr.mean() - ff.mean(), abs=1e-9)
        assert fold.certified == pytest.approx(fold.estimate / fold.lipschitz_bound)
        assert 1.0 <= fold.lipschitz_bound < 1.001
        estimates.append(fold.estimate)
        certified.append(fold.certified)
        errors.append(stderr(fr, ff, True))
        weights.append(len(fr) + len(ff))
    w = np.array(weights) / sum(weights)
    assert r.estimate == pytest.approx(w @ estimates) and r.certified_lower_bound == pytest.approx(w @ certified)
    assert r.stderr == pytest.approx(w @ errors)  # summed: valid whatever the folds' dependence
    z1 = norm.ppf(r.confidence)
    se_cert = w @ (np.array(errors) / [f.lipschitz_bound for f in r.folds])
    assert r.lower_confidence_bound == pytest.approx(max(0.0, r.certified_lower_bound - z1 * se_cert))
    assert r.lower_confidence_bound <= case.true_w1


def test_the_pooled_standard_error_is_honest(known_answers):
    """12 cross-fitted estimates of independent draws: z = (certified - theta) / s.e., with theta the
    pooled certified dual value of the fold critics over the whole distribution (all 1,797 digits and
    their images: no sampling error). The s.e. must not understate the spread of z (combining the folds'
    errors as independent did: bench/results/cross_fit_coverage_*), and the one-sided bound at 95 %
    covers theta in at least 10 of 12 runs (expected 12)."""
    z, covered = [], 0
    for i in range(12):
        s = 0.7 if i % 2 else 0.85
        case = digits_contraction(s, 240, seed=100 + i)
        r = estimate_w1(case.real, case.fake, folds=4, seed=i, **SMALL)
        known_answers.add(f"digits contraction s={s}, 240 a side, 4 folds, seed {i}", case.true_w1, r)
        x, y = digits_contraction_population(s)
        w = np.array([f.real_heldout + f.fake_heldout for f in r.folds], dtype=np.float64)
        with torch.no_grad():
            theta = sum(wk / w.sum() * float(critic(x).double().mean() - critic(y).double().mean()) / f.lipschitz_bound
                        for wk, critic, f in zip(w, r.critics, r.folds))
        se = (r.certified_ci[1] - r.certified_ci[0]) / (2 * norm.ppf(0.5 + r.confidence / 2))
        z.append((r.certified_lower_bound - theta) / se)
        covered += r.lower_confidence_bound <= theta
        assert r.lower_confidence_bound <= case.true_w1
    assert np.std(z, ddof=1) <= 1.0, z
    assert covered >= 10, z


def test_a_cross_fitted_estimate_resumes_exactly(tmp_path):
    """Cancelled in the third fold, resumed from the checkpoints (one folder per fold): the result and
    every fold's critic equal the uninterrupted run's; progress never goes back across folds."""
    from training import Cancelled

    case = digits_contraction(0.7, 200, seed=6)
    opts = dict(folds=3, checkpoint_every=5, progress_every=10, **SMALL)
    events = []
    full = estimate_w1(case.real, case.fake, checkpoint_dir=tmp_path / "full", progress=events.append, **opts)
    positions = [e.step for e in events]
    assert positions == sorted(positions) and events[-1].phase == "evaluation"
    calls = []
    cut = sum(f.steps for f in full.folds[:2]) + 7
    with pytest.raises(Cancelled) as info:
        estimate_w1(case.real, case.fake, should_stop=lambda: calls.append(1) or len(calls) > cut,
                    checkpoint_dir=tmp_path / "cut", **opts)
    assert info.value.step == cut
    resumed = estimate_w1(case.real, case.fake, checkpoint_dir=tmp_path / "cut", **opts)
    assert resumed.folds == full.folds and resumed.estimate == full.estimate
    for a, b in zip(full.critics, resumed.critics):
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), k
