"""Critic architectures on known-answer cases whose optimal critic is NOT linear (issue 7).

Scaling about a point, Q = c + s (P - c): W1 = |1 - s| E||X - c||, optimal critic ||x - c||. The fake side
is the real array scaled (paired), so on the two empirical sets W1 = |1 - s| mean_i ||x_i - c|| exactly.
- gauss64:  64-d standard Gaussian shaped 1x8x8, s = 0.7, c = 0
- gauss256: 256-d standard Gaussian shaped 1x16x16, s = 0.7, c = 0
- photo32:  32x32x3 patches of scikit-image photos (training.builtin.photos), in [-1, 1], contracted
            toward their mean patch by s = 0.5
and one translation (linear optimal critic), which must stay >= 0.99:
- digits+v: sklearn digits in [0, 0.5] and the same shifted by v, |v| = 4 in the [-1, 1] space
Each run is training.estimate_w1 with the default preset plus the candidate's critic options; the ratio is
certified lower bound / true W1.

    PYTHONPATH=. python bench/critic_design.py --cases gauss64,photo32 --candidates conv,fc-gs8 [--seeds 1]
        [--threads 2] [--out bench/results/critic_design_runs.jsonl]
    PYTHONPATH=. python bench/critic_design.py --speed --cases photo32 --candidates dcgan,conv-default  # ms/step
    PYTHONPATH=. python bench/critic_design.py --report --out bench/results/critic_design_2026-12-03_cpu.jsonl
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import training  # noqa: F401, I001 - before torch: OpenMP's waits as the product sets them (training.threads)
import torch

from training import estimate_w1
from training.sources.arrays import open_array

N_GAUSS = 8000
N_PHOTOS = 4000

# name -> estimate_w1 keyword options (the critic part; everything else is the default preset)
CANDIDATES = {
    "dcgan": dict(critic="dcgan"),  # the default preset's critic before issue 7 (MaxMin)
    "dcgan-min2": dict(critic="dcgan", critic_options={"min_size": 2}),
    "conv-default": dict(critic="conv", activation="groupsort"),  # the conv builder's defaults
    "conv-mm-min2": dict(critic="conv", activation="maxmin", critic_options={"min_size": 2, "max_width": 256}),
    "conv-min1": dict(critic="conv", activation="maxmin", critic_options={"min_size": 1, "max_width": 256}),
    "conv-mm-min1": dict(critic="conv", activation="maxmin", critic_options={"min_size": 1, "max_width": 256}),
    "conv-gs": dict(critic="conv", activation="groupsort", critic_options={"min_size": 2, "max_width": 256}),
    "conv-min1-gs": dict(critic="conv", activation="groupsort", critic_options={"min_size": 1, "max_width": 256}),
    "conv-min1-gs8": dict(critic="conv", activation="groupsort",
                          critic_options={"min_size": 1, "group_size": 8, "max_width": 256}),
    "conv-gs-mw48-min4": dict(critic="conv", activation="groupsort", critic_options={"max_width": 48, "min_size": 4}),
    "conv-gs-mw64": dict(critic="conv", activation="groupsort", critic_options={"max_width": 64, "min_size": 2}),
    "fc-default-gs": dict(critic="fc", activation="groupsort"),  # the fc builder's defaults (256 wide, groups of 8)
    "fc-gs4-256": dict(critic="fc", width=256, activation="groupsort", critic_options={"group_size": 4}),
    "fc-gs8-256": dict(critic="fc", width=256, activation="groupsort", critic_options={"group_size": 8}),
    "fc-gs16-256": dict(critic="fc", width=256, activation="groupsort", critic_options={"group_size": 16}),
    "fc-gs8-128": dict(critic="fc", width=128, activation="groupsort", critic_options={"group_size": 8}),
}

def _gaussian(d: int, shape, s: float, seed: int):
    z = np.random.default_rng(seed).standard_normal((N_GAUSS, *shape)).astype(np.float32)
    r = float(np.ceil(np.abs(z).max())) + 1.0
    real = open_array(z, value_range=(-r, r))
    fake = open_array(s * z, value_range=(-r, r))
    true = (1 - s) * float(np.linalg.norm(z.reshape(len(z), -1).astype(np.float64), axis=1).mean())
    return real, fake, true, {"space": {"value_range": (-r, r)}}, (z, s * z)


def _photos(s: float, seed: int):
    from training.builtin import photos
    x = photos(size=32, count=N_PHOTOS, seed=seed)[0].transpose(0, 3, 1, 2).astype(np.float64) / 255.0
    x = 2 * x - 1  # the default [-1, 1] space
    c = x.mean(axis=0, keepdims=True)
    y = c + s * (x - c)
    true = (1 - s) * float(np.linalg.norm((x - c).reshape(len(x), -1), axis=1).mean())
    real = open_array(x.astype(np.float32), value_range=(-1.0, 1.0))
    fake = open_array(y.astype(np.float32), value_range=(-1.0, 1.0))
    return real, fake, true, {}, (x.astype(np.float32), y.astype(np.float32))


def _digits_shift(norm: float, seed: int):
    from sklearn.datasets import load_digits
    x = (load_digits().images[:, None] / 16.0 * 0.5).astype(np.float32)
    u = np.random.default_rng(1000 + seed).random((1, 1, 8, 8)).astype(np.float32)
    u *= norm / (2 * np.linalg.norm(u))
    return x, x + u, float(np.linalg.norm(2 * u.astype(np.float64))), {}, (2 * x - 1, 2 * (x + u) - 1)


CASES = {
    "gauss64": lambda seed: _gaussian(64, (1, 8, 8), 0.7, seed),
    "gauss256": lambda seed: _gaussian(256, (1, 16, 16), 0.7, seed),
    "photo32": lambda seed: _photos(0.5, seed),
    "digits+v4": lambda seed: _digits_shift(4.0, seed),
}


def run(case: str, candidate: str, seed: int) -> dict:
    real, fake, true, extra, (xs, ys) = CASES[case](seed)
    opts = {**CANDIDATES[candidate], **extra}
    t0 = time.perf_counter()
    r = estimate_w1(real, fake, seed=seed, device="cpu", **opts)
    seconds = time.perf_counter() - t0
    critic = r.critic.eval()
    with torch.no_grad():
        f = lambda a: torch.cat([critic(torch.from_numpy(b)).double() for b in np.array_split(a, 32)])
        all_dual = float(f(xs).mean() - f(ys).mean())
    return dict(case=case, candidate=candidate, options=CANDIDATES[candidate], seed=seed, true_w1=true,
                all_samples_ratio=all_dual / r.lipschitz_bound / true,
                estimate=r.estimate, stderr=r.stderr, lipschitz_bound=r.lipschitz_bound,
                certified=r.certified_lower_bound, ratio=r.certified_lower_bound / true, steps=r.steps_run,
                train_s=r.timings.train_s, seconds=seconds, threads=torch.get_num_threads(),
                params=sum(p.numel() for p in r.critic.parameters()))


SHAPES = {"gauss64": (1, 8, 8), "gauss256": (1, 16, 16), "photo32": (3, 32, 32), "digits+v4": (1, 8, 8)}


def step_ms(candidate: str, shape, steps: int = 20, batch: int = 64) -> float:
    """Milliseconds per training step (forward of 2 x batch, backward, Adam), as the estimator runs it."""
    from critics import build_critic
    from training.options import EstimateOptions
    opts = EstimateOptions(**{k: v for k, v in CANDIDATES[candidate].items()}).resolved()
    torch.manual_seed(0)
    critic = build_critic(opts.critic, shape, conv=opts.conv, activation=opts.activation, width=opts.width,
                          **opts.critic_options).train()
    optimizer = torch.optim.Adam(critic.parameters(), lr=opts.lr, betas=(0.5, 0.999))
    x = torch.randn(2 * batch, *shape)
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        out = critic(x)
        loss = out[batch:].mean() - out[:batch].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - t0) / steps * 1e3


def report(path: Path) -> str:
    """Markdown table of every run in a JSON-lines file: ratio, seconds, steps per (case, candidate)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = ["| case | candidate | options | seed | certified / true | all-sample ratio | estimate +- stderr | "
             "true W1 | steps | seconds | threads |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['candidate']} | `{json.dumps(r['options'])}` | {r['seed']} | "
                     f"{r['ratio']:.4f} | {r['all_samples_ratio'] if 'all_samples_ratio' in r else float('nan'):.4f} | {r['estimate']:.3f} +- {r['stderr']:.3f} | {r['true_w1']:.3f} | "
                     f"{r['steps']} | {r['seconds']:.0f} | {r['threads']} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--candidates", default="conv,fc-gs8-256")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/critic_design_runs.jsonl")
    ap.add_argument("--report", action="store_true", help="only print the Markdown table of --out")
    ap.add_argument("--speed", action="store_true", help="only time training steps (ms/step) per case shape")
    args = ap.parse_args()
    if args.report:
        return print(report(Path(args.out)))
    if args.speed:
        torch.set_num_threads(args.threads)
        for case in args.cases.split(","):
            for cand in args.candidates.split(","):
                print(f"| {case} {SHAPES[case]} | {cand} | {step_ms(cand, SHAPES[case]):.1f} ms/step | "
                      f"{args.threads} thread(s) |", flush=True)
        return None
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for case in args.cases.split(","):
            for cand in args.candidates.split(","):
                row = run(case, cand, seed)
                row.update(torch=torch.__version__, machine=platform.machine(),
                           date=time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()))
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{case:10s} {cand:16s} seed {seed}: ratio {row['ratio']:.4f} (est {row['estimate']:.3f} "
                      f"+- {row['stderr']:.3f}, true {row['true_w1']:.3f}, L {row['lipschitz_bound']:.5f}, "
                      f"all-sample ratio {row['all_samples_ratio']:.4f}) "
                      f"steps {row['steps']} {row['seconds']:.1f}s", flush=True)


if __name__ == "__main__":
    main()
