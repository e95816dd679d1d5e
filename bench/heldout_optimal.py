"""What the optimal critic reports on the estimator's own held-out split, for the scaling cases.

On a contraction toward c the optimal critic is |x - c| (1-Lipschitz, exact), so its held-out value is
the most any critic can report on that split: the ceiling of a certified estimate there, and the
split's own luck. A trained critic's certified / true W1 is read against it: e.g. 1.024 on a split
where the optimal critic gives 1.049 is 2.4 % below optimal, not 2.4 % above the truth. Its lower
confidence bound shows whether a near-optimal critic could keep the one-sided 95 % bound below the
truth on that split at all. Default options (the split depends on them and on the seed only).

    python bench/heldout_optimal.py [--seeds 0-2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data import open_sides  # noqa: E402
from training.known_cases import gaussian_scaling, image_scaling, photo_patches  # noqa: E402
from training.options import EstimateOptions  # noqa: E402
from training.report import Statistics, same_indices  # noqa: E402


def cases(seed: int):
    """(case, centre in the estimator's input space): the CI's scaling cases (test_estimate_nonlinear)."""
    for d in (32, 256):
        yield gaussian_scaling(d, s=0.7, n=4000, seed=seed), np.zeros((1, d))  # value_range none: identity
    for size, count, grey in ((16, 3000, True), (32, 2000, False)):
        case = image_scaling(photo_patches(size, count, grey=grey, seed=seed), 0.5,
                             f"photos{size}{'' if grey else 'x3'} s=0.5")
        yield case, 2 * case.real.astype(np.float64).mean(axis=0, keepdims=True) - 1  # the [-1, 1] space


def optimal_on_heldout(case, centre: np.ndarray, seed: int) -> Statistics:
    opts = EstimateOptions(seed=seed, **case.options).resolved()
    sides = open_sides(case.real, case.fake, opts)
    sides.real.unseal()
    sides.fake.unseal()
    c = torch.from_numpy(centre.reshape(1, -1))

    def values(side):
        x = torch.cat(list(side.heldout_batches())).double().flatten(1)
        return (x - c).norm(dim=1).numpy()

    return Statistics.of(values(sides.real), values(sides.fake), paired=same_indices(sides.real, sides.fake, "heldout"),
                         lipschitz=1.0, confidence=opts.confidence)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0", help="e.g. 0-2")
    lo, _, hi = ap.parse_args().seeds.partition("-")
    print("| case | seed | optimal critic on the held-out split: value / W1 | its lower confidence bound / W1 |")
    print("|---|---|---|---|")
    for seed in range(int(lo), int(hi or lo) + 1):
        for case, centre in cases(seed):
            st = optimal_on_heldout(case, centre, seed)
            print(f"| {case.name} | {seed} | {st.certified / case.true_w1:.4f} | "
                  f"{st.lower_confidence_bound / case.true_w1:.4f} |", flush=True)


if __name__ == "__main__":
    main()
