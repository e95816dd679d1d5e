"""Time to a converged W1 estimate on a 32x32x3 problem, beside POT's exact ot.emd2.

Problem: n = 10,000 photo patches (32x32 RGB, scikit-image photographs, scaled into [0, 0.5]) vs the
same patches shifted by a fixed vector v (|v| = 4 in the [-1, 1] space): W1 = |v| = 4, both between
the populations and between the two finite sets. The critic (default preset; dcgan BCOP, --width,
--min-size) is trained with validation every --eval-every steps; "converged" is the first time the
validation estimate is within 1 % of its final value and stays there. POT's exact emd2 (Euclidean
cost) is timed at smaller n, on the paired sets (exact answer 4) and on disjoint halves (same
distributions, so W1 = 4 too; the empirical value is biased upwards in 3,072 dimensions).

    python bench/convergence_time.py [--device cuda] [--n 10000] [--steps 600] [--pot-n 250,500,1000,2000]
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import training  # noqa: F401, I001 - before torch: OpenMP's waits as the product sets them (training.threads)
import torch

from training import estimate_w1
from training.builtin import photos


def problem(n: int, norm: float = 4.0):
    patches = photos(size=32, count=n, seed=0)[0].transpose(0, 3, 1, 2).astype(np.float32) / 255.0 * 0.5
    u = np.random.default_rng(7).random((1, 3, 32, 32)).astype(np.float32)
    u *= norm / (2 * np.linalg.norm(u))
    return patches, patches + u, float(np.linalg.norm(2 * u.astype(np.float64)))


def converged_time(curve, tol=0.01):
    """(time, step) from which the validation estimate stays within tol of its final value."""
    val = [(p.time_s, p.step, p.validation) for p in curve if p.validation is not None]
    final = val[-1][2]
    hit = None
    for t, step, v in val:
        if abs(v - final) <= tol * abs(final):
            hit = hit or (t, step)
        else:
            hit = None
    return hit


def pot_time(real, fake, n, offset=0):
    """emd2 between real[:n] and fake[offset:offset + n] in the critic's [-1, 1] space, and its time."""
    import ot
    x = real[:n].reshape(n, -1).astype(np.float64) * 2 - 1
    y = fake[offset:offset + n].reshape(n, -1).astype(np.float64) * 2 - 1
    t0 = time.perf_counter()
    value = float(ot.emd2(ot.unif(n), ot.unif(n), ot.dist(x, y, metric="euclidean"), numItermax=10_000_000))
    return value, time.perf_counter() - t0


def markdown(report: dict) -> str:
    c = report["critic"]
    lines = [f"# Convergence time ({report['date']}, {report['device']} {report['device_name']}, "
             f"{report['threads']} thread(s), torch {report['torch']})", "",
             f"Photo patches 32x32x3, n = {c['n']} per side, vs the same patches shifted by |v| = {c['true_w1']:.3f}.", "",
             f"- critic: dcgan BCOP width {c['width']}, min_size {c['min_size']}, default preset; "
             f"{c['steps']} steps (early stop: {c['stopped_early']}), {c['step_ms']:.0f} ms/step",
             f"- converged (validation within 1 % of final, and stays): {c['converged_s']:.1f} s "
             f"(step {c['converged_step']}); training {c['train_s']:.1f} s; whole estimate {c['total_s']:.1f} s",
             f"- held-out estimate {c['estimate']:.4f}, CI [{c['ci'][0]:.4f}, {c['ci'][1]:.4f}], certified ratio "
             f"{c['ratio']:.4f}", "", "| n | POT emd2 paired (exact 4) | time | POT emd2 disjoint halves | time |",
             "|---|---|---|---|---|"]
    for p in report["pot"]:
        un = f"{p['unpaired_value']:.3f} | {p['unpaired_seconds']:.2f} s" if p.get("unpaired_value") else "— | —"
        lines.append(f"| {p['n']} | {p['value']:.3f} | {p['seconds']:.2f} s | {un} |")
    if report.get("pot_time_exponent"):
        lines += ["", f"POT time grows like n^{report['pot_time_exponent']:.2f} over this range (cubic worst case); "
                  f"extrapolated to n = {c['n']}: {report['pot_extrapolated_s_at_n']:.0f} s. The critic's cost is "
                  "per training step (independent of n) plus one pass over the held-out samples."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--min-size", type=int, default=8,
                    help="dcgan stops downsampling at this size: 32x32x3 with width 32 and min_size 8 keeps "
                         "3072 -> 8192 -> 4096 dimensions, so no direction of the input is lost")
    ap.add_argument("--steps", type=int, default=None, help="step budget (default: the preset's)")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pot-n", default="250,500,1000,2000")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    real, fake, true_w1 = problem(args.n)
    overrides = dict(critic="dcgan", width=args.width, critic_options={"min_size": args.min_size},
                     eval_every=args.eval_every,
                     device=args.device)
    if args.steps:
        overrides["steps"] = args.steps
    t0 = time.perf_counter()
    r = estimate_w1(real, fake, **overrides)
    wall = time.perf_counter() - t0
    conv = converged_time(r.curve)
    critic = dict(n=args.n, width=args.width, min_size=args.min_size, steps=r.steps_run, stopped_early=r.stopped_early,
                  estimate=r.estimate, ci=list(r.ci), certified_lower_bound=r.certified_lower_bound,
                  true_w1=true_w1, ratio=r.certified_lower_bound / true_w1, train_s=r.timings.train_s,
                  total_s=wall, converged_s=conv[0] if conv else None, converged_step=conv[1] if conv else None,
                  step_ms=1000 * r.timings.train_s / max(r.steps_run, 1))
    print(json.dumps(critic, indent=1), flush=True)
    pot = []
    for n in (int(v) for v in args.pot_n.split(",") if v):
        value, seconds = pot_time(real, fake, n)
        unpaired, unpaired_s = pot_time(real, fake, n, offset=n) if 2 * n <= len(fake) else (None, None)
        pot.append(dict(n=n, value=value, seconds=seconds, unpaired_value=unpaired, unpaired_seconds=unpaired_s))
        print(f"POT emd2 n={n}: paired {value:.3f} in {seconds:.2f}s; disjoint halves {unpaired} in "
              f"{unpaired_s}s (true W1 {true_w1:.3f})", flush=True)
    if len(pot) >= 2:
        ns, ts = np.log([p["n"] for p in pot]), np.log([p["seconds"] for p in pot])
        exponent = float(np.polyfit(ns, ts, 1)[0])
        extrapolated = float(np.exp(np.polyval(np.polyfit(ns, ts, 1), np.log(args.n))))
    else:
        exponent = extrapolated = None
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else (platform.processor() or "cpu")
    report = dict(date=stamp, device=args.device, device_name=device, threads=args.threads, torch=torch.__version__,
                  critic=critic, pot=pot, pot_time_exponent=exponent, pot_extrapolated_s_at_n=extrapolated)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"convergence_time_{args.device.replace(':', '')}_{stamp}"
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    (out / f"{name}.md").write_text(markdown(report))
    print(json.dumps({k: v for k, v in report.items() if k != "critic"}, indent=1))


if __name__ == "__main__":
    main()
