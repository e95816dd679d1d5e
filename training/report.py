"""Step 4: the numbers reported from the chosen critic's values on the held-out samples.

estimate     mean f(real) - mean f(fake) on held-out samples (unbiased for the critic's dual value);
stderr, ci   its standard error and two-sided interval at `confidence`;
certified    estimate / L, L the critic's certified Lipschitz bound: a lower bound on W1 in expectation;
lower confidence bound  max(0, (estimate - z1 * stderr) / L) with z1 the one-sided quantile: W1 is at
             least this with probability >= confidence (the honest headline; W1 is never negative)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def same_indices(real, fake, part: str) -> bool:
    """Whether both finite sides use the same indices for `part` ('heldout', 'validation'): the samples
    may then be paired (fake = g(real)), and stderr must allow for it."""
    a, b = getattr(real, part), getattr(fake, part)
    return a is not None and b is not None and len(a) == len(b) and bool(torch.equal(a, b))


def same_heldout(real, fake) -> bool:
    """Whether both finite sides were evaluated on the same indices (possibly paired samples)."""
    return same_indices(real, fake, "heldout")


def stderr(fr: np.ndarray, ff: np.ndarray, paired: bool) -> float:
    """Standard error of mean(fr) - mean(ff). Independent sides: from the two sample variances. When
    both sides used the same indices, the samples may be paired (fake = g(real)), so the larger of the
    independent and the paired (variance of differences) errors is reported: valid either way."""
    independent = math.sqrt(fr.var(ddof=1) / len(fr) + ff.var(ddof=1) / len(ff))
    if not paired:
        return independent
    return max(independent, float(np.std(fr - ff, ddof=1)) / math.sqrt(len(fr)))


@dataclass(frozen=True)
class Statistics:
    estimate: float
    stderr: float
    ci: tuple[float, float]
    lipschitz_bound: float
    certified: float
    certified_ci: tuple[float, float]
    lower_confidence_bound: float
    confidence: float

    @classmethod
    def of(cls, fr: np.ndarray, ff: np.ndarray, paired: bool, lipschitz: float, confidence: float) -> "Statistics":
        from scipy.stats import norm

        est = float(fr.mean() - ff.mean())
        se = stderr(fr, ff, paired)
        z2 = float(norm.ppf(0.5 + confidence / 2))  # two-sided interval
        z1 = float(norm.ppf(confidence))  # one-sided lower bound
        ci = (est - z2 * se, est + z2 * se)
        return cls(estimate=est, stderr=se, ci=ci, lipschitz_bound=lipschitz, certified=est / lipschitz,
                   certified_ci=(ci[0] / lipschitz, ci[1] / lipschitz),
                   lower_confidence_bound=max(0.0, (est - z1 * se) / lipschitz), confidence=confidence)

    @classmethod
    def pooled(cls, folds: list[tuple[np.ndarray, np.ndarray, bool, float]], confidence: float) -> "Statistics":
        """Cross-fitting: fold k's critic, certified bound L_k, on fold k's held-out values (fr, ff, paired).
        Folds are weighted by their share of held-out values and each fold's values are divided by its
        own L_k. The standard error is the weighted SUM of the folds' own errors, as if their errors were
        fully dependent: each fold's values are independent of its own critic, but that critic trained
        on the other folds' samples, and a critic that memorised a training sample also scores its
        neighbours in the fold it is evaluated on, so the folds' errors are positively correlated
        (bench/cross_fit_coverage.py: errors 1.35x the independent combination on digits). The
        sum is valid whatever the dependence; `lipschitz_bound` is the largest L_k."""
        from scipy.stats import norm

        weights = np.array([len(fr) + len(ff) for fr, ff, _, _ in folds], dtype=np.float64)
        weights /= weights.sum()
        est = np.array([fr.mean() - ff.mean() for fr, ff, _, _ in folds])
        se = np.array([stderr(fr, ff, paired) for fr, ff, paired, _ in folds])
        bounds = np.array([b for _, _, _, b in folds])
        estimate, certified = float(weights @ est), float(weights @ (est / bounds))
        se_raw, se_cert = float(weights @ se), float(weights @ (se / bounds))
        z2, z1 = float(norm.ppf(0.5 + confidence / 2)), float(norm.ppf(confidence))
        return cls(estimate=estimate, stderr=se_raw, ci=(estimate - z2 * se_raw, estimate + z2 * se_raw),
                   lipschitz_bound=float(bounds.max()), certified=certified,
                   certified_ci=(certified - z2 * se_cert, certified + z2 * se_cert),
                   lower_confidence_bound=max(0.0, certified - z1 * se_cert), confidence=confidence)

    def notes(self) -> list[str]:
        """Plain-language warnings a reader needs next to the numbers."""
        notes = []
        pct = f"{self.confidence:.0%}"
        if self.certified < 0:
            notes.append(
                f"The certified value {self.certified:.4g} is negative. W1 is never negative: this means the "
                f"critic found no difference between the held-out samples that exceeds the noise (the "
                f"{pct} interval [{self.certified_ci[0]:.4g}, {self.certified_ci[1]:.4g}] contains 0 or lies "
                "near it), so the two sides are indistinguishable at this sample size and training budget; "
                "W1 may still be positive but small. The lower confidence bound is reported as 0.")
            if self.certified_ci[1] < 0:
                notes.append(
                    "The whole interval lies below 0, which noise alone rarely gives: check whether the same "
                    "samples appear on both sides (a sample the critic learned as real is then evaluated as "
                    "fake), or whether very few validation samples let training overfit.")
        elif self.ci[0] <= 0:
            notes.append(f"The {pct} interval contains 0: the difference is within the noise; "
                         "the lower confidence bound is 0.")
        if self.lipschitz_bound > 1.0 + 1e-3:
            notes.append(f"The critic's certified Lipschitz bound is {self.lipschitz_bound:.4g} > 1; its values "
                         "are divided by it to certify the bound.")
        return notes


# Fewer steps than this (without early stopping having ended training) and a critic has barely trained:
# the default schedule needs about 100-200 steps to come within 1 % of its final value on the
# known-answer cases (training.options).
BARELY_TRAINED_STEPS = 200


def training_notes(steps_run: int, ended_by: str | None, opts, selection=None) -> list[str]:
    """Warnings about how training ended: the time budget bound it, or the critic barely trained."""
    notes = []
    few = steps_run < BARELY_TRAINED_STEPS and ended_by != "early stopping"
    if ended_by == "time budget":
        notes.append(f"The time budget ({opts.time_budget_s:g} s; --time, time_budget_s) ended training at step "
                     f"{steps_run} of {opts.steps}" + (": the critic barely trained, so the bound is likely far "
                                                      "below W1" if few else ": a longer run may give a tighter bound")
                     + " (a valid lower bound all the same). Raise the budget for a tighter one.")
    elif few:
        notes.append(f"The critic trained only {steps_run} steps: it barely trained, so the bound is likely far "
                     "below W1 (a valid lower bound all the same); more steps give a tighter one.")
    if selection is not None and "time budget" in selection.reason:
        notes.append(f"The time budget ended the candidates' trials at step {selection.decided_at_step}: "
                     f"{selection.chosen} was chosen on what the validation split showed by then.")
    return notes


def small_data_notes(train_samples: int | None, small_below: int) -> list[str]:
    """What a reader of a small-data estimate should expect (train_samples: the smaller side's training
    samples, None for a generator side). Measured on digits contractions at 900 samples a side
    (bench/results/small_data_choice_2026-12-07_cpu.md): the chosen critic's value over the whole
    distribution was 0.93-0.96 of W1 at W1 = 1.29-2.15 and 0.76 at 0.43."""
    if train_samples is None or train_samples >= small_below:
        return []
    return [f"Small data: {train_samples} training samples on a side (under {small_below:,}). A critic partly "
            "memorises so few, so the certified value tends to fall short of W1, most where W1 is small against the "
            "data's spread (digits, 900 a side: about 0.95 of W1 where it is large, 0.75 at a fifth of that); still a "
            "valid lower bound. More samples, or a generator to sample from, give a tighter one."]


def legend(confidence: float) -> dict[str, str]:
    """What each reported number is, in words (stored in the JSON beside the numbers)."""
    pct = f"{confidence:.0%}"
    return {
        "lower_confidence_bound": f"headline: W1 >= this with {pct} confidence (one-sided), "
                                  "max(0, (estimate - z*stderr) / lipschitz_bound)",
        "certified_lower_bound": "estimate / lipschitz_bound: a lower bound on W1 up to sampling error "
                                 "(the point estimate to rank by)",
        "certified_ci": f"two-sided {pct} interval of certified_lower_bound",
        "estimate": "mean f(real) - mean f(fake) of the chosen critic f on held-out samples",
        "stderr": "standard error of estimate",
        "ci": f"two-sided {pct} interval of estimate",
        "lipschitz_bound": "certified upper bound on the critic's Lipschitz constant (1 = exactly 1-Lipschitz)",
        "space": "the input space W1 is measured in; results are comparable only in the same space",
    }
