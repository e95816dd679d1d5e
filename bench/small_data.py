"""Small data, before and after: the default estimate on digits contractions
(training.known_cases.digits_contraction: n samples per side drawn independently from scikit-learn's
digits and from their contraction toward the mean digit; the true W1 is exact), side by side.

"before" is the estimator of a git revision (default: 2889359, the main this work started from),
exported with `git archive` into a temporary folder; "after" is this checkout, or another revision
exported the same way (--after). Every run is a fresh
subprocess with one torch thread, alternating before/after for each (s, seed), so both see the same
machine load. Per run: certified lower bound / true W1, lower confidence bound / true W1, the chosen
critic's population value (its certified dual value over the whole distribution, all 1,797 digits and
their images: the estimate without its sampling noise), the held-out s.e. / W1, steps and seconds.

    python bench/small_data.py [--before 2889359] [--after REV] [--s 0.5,0.7,0.9] [--seeds 3] [--n 900]
                               [--options '{}'] [--out bench/results]
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def known_cases():
    """This checkout's training/known_cases.py, loaded by path (the before-tree may not have the case)."""
    spec = importlib.util.spec_from_file_location("w1_known_cases_here", HERE / "training" / "known_cases.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def one_run(s: float, seed: int, n: int, options: dict) -> dict:
    """One default estimate with whichever `training` is on sys.path (run in a subprocess)."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    from training import estimate_w1

    torch.set_num_threads(1)
    case = known_cases().digits_contraction(s, n, seed)
    t0 = time.perf_counter()
    r = estimate_w1(case.real, case.fake, seed=seed, **options)
    seconds = time.perf_counter() - t0
    digits = load_digits().images.astype(np.float64)[:, None] / 16.0
    c = digits.mean(axis=0, keepdims=True)
    x = torch.from_numpy((2 * digits - 1).astype(np.float32))
    y = torch.from_numpy((2 * (c + s * (digits - c)) - 1).astype(np.float32))
    critic = r.critic.eval()
    with torch.no_grad():
        population = float(critic(x).double().mean() - critic(y).double().mean()) / r.lipschitz_bound
    sel = r.selection
    return {"s": s, "seed": seed, "n": n, "true_w1": case.true_w1, "ratio": r.certified_lower_bound / case.true_w1,
            "lcb_ratio": r.lower_confidence_bound / case.true_w1, "population_ratio": population / case.true_w1,
            "se_ratio": r.stderr / case.true_w1, "steps": r.steps_run, "seconds": seconds,
            "chosen": sel.chosen if sel else r.critic_spec.get("name"),
            "decided_at": getattr(sel, "decided_at_step", None) if sel else None,
            "heldout": r.samples.real_heldout, "notes": r.notes}


def export(revision: str, into: Path) -> Path:
    """The revision's tree (git archive) under `into`."""
    blob = subprocess.run(["git", "-C", str(HERE), "archive", revision], check=True, capture_output=True).stdout
    tar = into / "tree.tar"
    tar.write_bytes(blob)
    with tarfile.open(tar) as tf:
        tf.extractall(into / "tree", filter="data")
    return into / "tree"


def run_in(tree: Path, s: float, seed: int, n: int, options: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", json.dumps([s, seed, n, options])],
                         env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(rows: list[dict]) -> list[str]:
    lines = ["| s | true W1 | before: certified / W1 | after | before: population / W1 | after | "
             "before: LCB / W1 | after | before: s | after: s |", "|" + "---|" * 10]
    for s in sorted({r["s"] for r in rows}):
        by = {w: [r for r in rows if r["s"] == s and r["which"] == w] for w in ("before", "after")}

        def mean(w, key):
            vals = [r[key] for r in by[w]]
            return sum(vals) / len(vals) if vals else float("nan")

        def each(w, key):
            return " ".join(f"{r[key]:.2f}" for r in by[w])
        truth = by["after"][0]["true_w1"] if by["after"] else by["before"][0]["true_w1"]
        lines.append(f"| {s} | {truth:.3f} | {mean('before', 'ratio'):.3f} ({each('before', 'ratio')}) | "
                     f"{mean('after', 'ratio'):.3f} ({each('after', 'ratio')}) | "
                     f"{mean('before', 'population_ratio'):.3f} | {mean('after', 'population_ratio'):.3f} | "
                     f"{mean('before', 'lcb_ratio'):.3f} | {mean('after', 'lcb_ratio'):.3f} | "
                     f"{mean('before', 'seconds'):.0f} | {mean('after', 'seconds'):.0f} |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--before", default="2889359")
    ap.add_argument("--after", default=None, help="a revision (default: this checkout as it is)")
    ap.add_argument("--s", default="0.5,0.7,0.9")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n", type=int, default=900)
    ap.add_argument("--options", default="{}", help="EstimateOptions overrides for both (JSON)")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(*json.loads(args.one))))
        return
    options = json.loads(args.options)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    log = out / f"small_data_{stamp}_cpu.jsonl"
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as tmp2:
        before = export(args.before, Path(tmp))
        after = export(args.after, Path(tmp2)) if args.after else HERE
        for s in (float(v) for v in args.s.split(",")):
            for seed in range(args.seeds):
                for which, tree in (("before", before), ("after", after)):
                    row = {"which": which, **run_in(tree, s, seed, args.n, options)}
                    rows.append(row)
                    with log.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(f"{which:6s} s={s} seed={seed}: certified/W1 {row['ratio']:.3f}, population "
                          f"{row['population_ratio']:.3f}, LCB {row['lcb_ratio']:.3f}, {row['chosen']}, "
                          f"{row['steps']} steps, {row['seconds']:.0f} s", flush=True)
    load = os.getloadavg()
    above = sum(r["lcb_ratio"] > 1 for r in rows)
    report = [f"# Small data: digits contractions, {args.n} samples per side, before ({args.before}) and after "
              f"({args.after or 'the checkout'})",
              "", f"{stamp}, CPU ({platform.machine()}), 1 torch thread per run, load average at the end "
              f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; seeds 0-{args.seeds - 1} (data and estimator); "
              f"options {json.dumps(options)}.", "",
              "    python bench/small_data.py " + " ".join(a for a in sys.argv[1:]), "",
              "Means over seeds (each seed in brackets). 'population' is the chosen critic's certified dual value "
              "over the whole distribution (no held-out sampling noise).", "", *table(rows), "",
              f"Lower confidence bound above the true W1: {above} of {len(rows)} runs.", ""]
    (out / f"small_data_{stamp}_cpu.md").write_text("\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    main()
