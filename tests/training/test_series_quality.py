"""Quality of warm-started series items against cold estimates of the same items (issue 13).

Known answers: contraction toward the mean, W1 = |1 - s| E|X - c| for every item, on Gaussians, photo
patches and digits (training.known_series), s = 0.6 ... 0.9 (a converging generator), 3 seeds. Every
warm item must be at least as tight as a cold estimate of the same item within 1 SE (means over the
seeds), reach 0.96 of the truth wherever the cold estimate does, and its lower confidence bound never
exceeds the truth. GAN checkpoints (a small GAN trained here, Adam 2e-4, its samples saved along its
run): each warm item's certified value within 1 SE of (or above) a cold estimate of the same item.

To stay cheap in CI these use small data (700-1,200 samples a side), the FC critic named (the family auto
picks at these sizes) at width 64 and 400 steps for a cold estimate (1,000 on the GAN, where the
warm item's 375 + 25 steps must be cheaper); the warm items use the shipped WarmStart.
bench/series_speed.py and bench/series_design.py measure the same at full size with default options."""
from __future__ import annotations

import numpy as np
import pytest

from training import estimate_w1
from training.known_series import digits01, digits_contraction, gan_series, gaussian_contraction, photos_contraction
from training.series import estimate_series

S = (0.6, 0.7, 0.8, 0.9)
SEEDS = (0, 1, 2)
OPTIONS = dict(critic="fc", width=64, steps=400, time_budget_s=0)
CASES = {
    "gauss16": lambda: gaussian_contraction(16, S, n=1000),
    "photos8": lambda: photos_contraction(8, 1000, grey=True, s_values=S),
    "digits": lambda: digits_contraction(S, count=700),
}


def _runs(case) -> tuple[list, list]:
    """(warm items, cold results) per seed."""
    warm, cold = [], []
    for seed in SEEDS:
        opts = {**OPTIONS, **case.options, "seed": seed}
        warm.append(estimate_series(case.real, case.fakes, options=opts).items)
        cold.append([None] + [estimate_w1(case.real, f, opts) for f in case.fakes[1:]])
    return warm, cold


@pytest.mark.parametrize("name", list(CASES))
def test_warm_items_are_as_tight_as_cold_estimates_on_known_answers(name, known_answers):
    case = CASES[name]()
    warm, cold = _runs(case)
    for k, truth in enumerate(case.true_w1):
        for seed, warm_items, cold_results in zip(SEEDS, warm, cold):
            known_answers.add(f"series {name} s={S[k]}, warm, seed {seed}", truth, warm_items[k])
            if k:  # the first item has no cold twin: it is the series' own cold start
                known_answers.add(f"series {name} s={S[k]}, cold, seed {seed}", truth, cold_results[k])
        for seed_items in warm:  # every item, every seed: never above the truth with confidence
            assert seed_items[k].lower_confidence_bound <= truth, (name, k)
        if k == 0:
            continue
        w = np.mean([items[k].certified_lower_bound for items in warm])
        se = np.mean([items[k].certified_stderr for items in warm])
        c = np.mean([runs[k].certified_lower_bound for runs in cold])
        starts = [items[k].start for items in warm]
        print(f"{name} s={S[k]}: warm {w / truth:.4f} cold {c / truth:.4f} (se {se / truth:.4f}) {starts}")
        assert w >= c - se, (name, k, w, c, se)
        if c >= 0.96 * truth:
            assert w >= 0.96 * truth, (name, k, w / truth)


def test_warm_items_on_gan_checkpoints_are_within_one_se_of_cold():
    case = gan_series(digits01(), "digits", checkpoints=(1000, 1250, 1500), samples=1200)
    opts = {**OPTIONS, "steps": 1000, "seed": 0}  # a cold estimate trains more steps than a warm item
    series = estimate_series(case.real, case.fakes, case.labels, case.steps, options=opts)
    for item, fake in zip(series.items[1:], case.fakes[1:]):
        cold = estimate_w1(case.real, fake, opts)
        print(f"{item.label}: {item.start} {item.certified_lower_bound:.4f} vs cold {cold.certified_lower_bound:.4f} "
              f"(se {item.certified_stderr:.4f}), {item.train_steps} vs {cold.steps_run} steps")
        assert item.certified_lower_bound >= cold.certified_lower_bound - item.certified_stderr
