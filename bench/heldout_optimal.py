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

from estimation_quality import scaling_cases  # noqa: E402  (bench/, this script's folder)
from training.data import open_sides  # noqa: E402
from training.options import EstimateOptions  # noqa: E402
from training.report import Statistics, same_indices  # noqa: E402


def centre(real: np.ndarray, options: dict) -> np.ndarray:
    """The contraction's centre in the estimator's input space: 0 for the Gaussian cases (value_range
    none: the identity; Q = s P about the origin), the mean image mapped into [-1, 1] for the photo cases
    (their fake side is the real side contracted about its own mean)."""
    if options.get("space", {}).get("value_range") == "none":
        return np.zeros((1, real[0].size))
    return 2 * real.astype(np.float64).mean(axis=0, keepdims=True) - 1


def optimal_on_heldout(real, fake, options: dict, seed: int) -> Statistics:
    opts = EstimateOptions(seed=seed, **options).resolved()
    sides = open_sides(real, fake, opts)
    sides.real.unseal()
    sides.fake.unseal()
    c = torch.from_numpy(centre(real, options).reshape(1, -1))

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
        for name, real, fake, truth, options in scaling_cases(seed):
            st = optimal_on_heldout(real, fake, options, seed)
            print(f"| {name} | {seed} | {st.certified / truth:.4f} | {st.lower_confidence_bound / truth:.4f} |",
                  flush=True)


if __name__ == "__main__":
    main()
