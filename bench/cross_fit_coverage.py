"""Is the cross-fitted standard error honest? Many cross-fitted estimates of independent draws of a
digits contraction (training.known_cases.digits_contraction), each compared with theta, the pooled
certified dual value of its own fold critics over the whole distribution (all 1,797 digits and their
images: exact, no sampling error). z = (estimate - theta) / s.e. should have a spread of at most 1.

Two standard errors from the same folds (W1Result.folds): the folds' errors combined as independent,
sqrt(sum w_k^2 se_k^2), and as the estimator reports it, their weighted sum (valid whatever the
folds' dependence: a fold's critic trained on the other folds' samples).

    python bench/cross_fit_coverage.py [--runs 30] [--folds 5] [--n 300] [--out bench/results]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm

from training import estimate_w1
from training.known_cases import digits_contraction, digits_contraction_population

OPTIONS = dict(critic="fc", width=64, steps=300, eval_every=50)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    z1 = norm.ppf(0.95)
    rows = []
    for i in range(args.runs):
        s = (0.7, 0.9)[i % 2]
        case = digits_contraction(s, args.n, seed=1000 + i)
        r = estimate_w1(case.real, case.fake, folds=args.folds, seed=i, **OPTIONS)
        x, y = digits_contraction_population(s)
        w = np.array([f.real_heldout + f.fake_heldout for f in r.folds], dtype=np.float64)
        w /= w.sum()
        with torch.no_grad():
            pop = np.array([float(k(x).double().mean() - k(y).double().mean()) / f.lipschitz_bound
                            for k, f in zip(r.critics, r.folds)])
        theta = float(w @ pop)
        se = np.array([f.stderr / f.lipschitz_bound for f in r.folds])
        se_independent, se_summed = float(np.sqrt(w ** 2 @ se ** 2)), float(w @ se)
        row = {"s": s, "run": i, "estimate": r.certified_lower_bound, "theta": theta, "true_w1": case.true_w1,
               "z_independent": (r.certified_lower_bound - theta) / se_independent,
               "z_summed": (r.certified_lower_bound - theta) / se_summed,
               "covered_independent": bool(r.certified_lower_bound - z1 * se_independent <= theta),
               "covered_summed": bool(r.lower_confidence_bound <= theta)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"cross_fit_coverage_{stamp}_cpu.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    load = os.getloadavg()
    lines = [f"# Cross-fitting: is the standard error honest? ({stamp}, CPU {platform.machine()}, 1 thread, "
             f"load {load[0]:.1f})", "", f"    python bench/cross_fit_coverage.py --runs {args.runs} --folds "
             f"{args.folds} --n {args.n}", "", f"{args.runs} runs, {args.n} samples per side, s = 0.7 and 0.9 "
             f"alternately, options {OPTIONS}, {args.folds} folds.", "",
             "| folds' errors combined | mean z | std z | 95 % one-sided bound <= theta |", "|---|---|---|---|"]
    for key, name in (("independent", "as independent"), ("summed", "summed (reported)")):
        z = np.array([r[f"z_{key}"] for r in rows])
        lines.append(f"| {name} | {z.mean():.2f} | {z.std(ddof=1):.2f} | "
                     f"{sum(r[f'covered_{key}'] for r in rows)} of {len(rows)} |")
    (out / f"cross_fit_coverage_{stamp}_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
