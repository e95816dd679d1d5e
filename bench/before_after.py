"""The default estimate before and after, side by side, on two kinds of case:

- contraction (small data): training.known_cases.digits_contraction, n samples per side drawn
  independently from scikit-learn's digits and from their contraction toward the mean digit by s;
  the true W1 is exact. Also reported: the chosen critic's population value (its certified dual value
  over the whole distribution, all 1,797 digits and their images: the estimate without its sampling
  noise);
- gan: samples of a small GAN trained on the digits (training.known_cases.train_small_gan, seed 0)
  after 30, 300 and 3000 steps, against the 1,797 digits; no closed form: the certified values are
  compared with each other, and the time is what changes.

"before" is the estimator of a git revision (default: 2889359, the main this work started from),
"after" this checkout or another revision (--after), each exported with `git archive` into a
temporary folder. Every run is a fresh subprocess with one torch thread, alternating before/after
for each case and seed, so both see the same machine load.

    python bench/before_after.py [--cases contraction|gan] [--before 2889359] [--after REV]
                                 [--s 0.5,0.7,0.9] [--seeds 3] [--n 900] [--options '{}'] [--out bench/results]
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
GAN_STEPS = (30, 300, 3000)


def known_cases():
    """This checkout's training/known_cases.py, loaded by path (the before-tree may not have the case)."""
    spec = importlib.util.spec_from_file_location("w1_known_cases_here", HERE / "training" / "known_cases.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def contraction_population(s: float):
    """(all 1,797 digits, their contractions toward the mean digit by s) in the default [-1, 1] space:
    this checkout's training.known_cases.digits_contraction_population (the before-tree may lack it)."""
    return known_cases().digits_contraction_population(s)


def one_run(case: dict) -> dict:
    """One default estimate with whichever `training` is on sys.path (run in a subprocess)."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    from training import estimate_w1

    torch.set_num_threads(1)
    digits = load_digits().images.astype(np.float64)[:, None] / 16.0
    if case["kind"] == "contraction":
        known = known_cases().digits_contraction(case["s"], case["n"], case["seed"])
        real, fake, truth = known.real, known.fake, known.true_w1
    else:
        real, fake, truth = digits.astype(np.float32), np.load(case["fake"]), None
    t0 = time.perf_counter()
    r = estimate_w1(real, fake, seed=case["seed"], **case["options"])
    row = {**case, "certified": r.certified_lower_bound, "lcb": r.lower_confidence_bound, "stderr": r.stderr,
           "steps": r.steps_run, "seconds": time.perf_counter() - t0, "selection_s": r.timings.selection_s,
           "chosen": r.selection.chosen if r.selection else r.critic_spec.get("name"),
           "decided_at": getattr(r.selection, "decided_at_step", None), "notes": r.notes}
    if truth is not None:
        x, y = contraction_population(case["s"])
        with torch.no_grad():
            population = float(r.critic(x).double().mean() - r.critic(y).double().mean()) / r.lipschitz_bound
        row.update(true_w1=truth, ratio=r.certified_lower_bound / truth, lcb_ratio=r.lower_confidence_bound / truth,
                   population_ratio=population / truth)
    return row


def export(revision: str, into: Path) -> Path:
    """The revision's tree (git archive) under `into`."""
    blob = subprocess.run(["git", "-C", str(HERE), "archive", revision], check=True, capture_output=True).stdout
    (into / "tree").mkdir()
    tar = into / "tree.tar"
    tar.write_bytes(blob)
    with tarfile.open(tar) as tf:
        tf.extractall(into / "tree", filter="data")
    return into / "tree"


def run_in(tree: Path, case: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(case)],
                         env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _mean(rows, key):
    vals = [r[key] for r in rows]
    return sum(vals) / len(vals) if vals else float("nan")


def _each(rows, key):
    return " ".join(f"{r[key]:.2f}" for r in rows)


def contraction_table(rows: list[dict]) -> list[str]:
    lines = ["| s | true W1 | before: certified / W1 | after | before: population / W1 | after | "
             "before: LCB / W1 | after | before: s | after: s |", "|" + "---|" * 10]
    for s in sorted({r["s"] for r in rows}):
        b, a = ([r for r in rows if r["s"] == s and r["which"] == w] for w in ("before", "after"))
        lines.append(f"| {s} | {(a or b)[0]['true_w1']:.3f} | {_mean(b, 'ratio'):.3f} ({_each(b, 'ratio')}) | "
                     f"{_mean(a, 'ratio'):.3f} ({_each(a, 'ratio')}) | {_mean(b, 'population_ratio'):.3f} | "
                     f"{_mean(a, 'population_ratio'):.3f} | {_mean(b, 'lcb_ratio'):.3f} | "
                     f"{_mean(a, 'lcb_ratio'):.3f} | "
                     f"{_mean(b, 'seconds'):.0f} | {_mean(a, 'seconds'):.0f} |")
    return lines


def gan_table(rows: list[dict]) -> list[str]:
    lines = ["| GAN checkpoint | before: certified | after | before: s (selection s) | after: s (selection s) | "
             "after: chosen at step | chosen (before / after) |", "|" + "---|" * 7]
    for step in sorted({r["step"] for r in rows}):
        b, a = ([r for r in rows if r["step"] == step and r["which"] == w] for w in ("before", "after"))
        lines.append(f"| digits GAN@{step} | {_mean(b, 'certified'):.4f} ({_each(b, 'certified')}) | "
                     f"{_mean(a, 'certified'):.4f} ({_each(a, 'certified')}) | {_mean(b, 'seconds'):.1f} "
                     f"({_mean(b, 'selection_s'):.1f}) | {_mean(a, 'seconds'):.1f} ({_mean(a, 'selection_s'):.1f}) | "
                     f"{' '.join(str(r['decided_at']) for r in a)} | "
                     f"{'/'.join(sorted({r['chosen'] for r in b}))} / {'/'.join(sorted({r['chosen'] for r in a}))} |")
    return lines


def cases(args, tmp: Path):
    options = json.loads(args.options)
    if args.cases == "contraction":
        for s in (float(v) for v in args.s.split(",")):
            for seed in range(args.seeds):
                yield {"kind": "contraction", "s": s, "seed": seed, "n": args.n, "options": options}
        return
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits().images.astype(np.float32)[:, None] / 16.0
    for step, fake in known_cases().train_small_gan(digits, GAN_STEPS, samples=len(digits)).items():
        np.save(tmp / f"gan{step}.npy", fake)
        for seed in range(args.seeds):
            yield {"kind": "gan", "step": step, "seed": seed, "fake": str(tmp / f"gan{step}.npy"), "options": options}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--cases", choices=["contraction", "gan"], default="contraction")
    ap.add_argument("--before", default="2889359")
    ap.add_argument("--after", default=None, help="a revision (default: this checkout as it is)")
    ap.add_argument("--s", default="0.5,0.7,0.9")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n", type=int, default=900)
    ap.add_argument("--options", default="{}", help="EstimateOptions overrides for both (JSON)")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(json.loads(args.one))))
        return
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"before_after_{args.cases}_{stamp}_cpu"
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2, \
            tempfile.TemporaryDirectory() as t3:
        before = export(args.before, Path(t1))
        after = export(args.after, Path(t2)) if args.after else HERE
        for case in cases(args, Path(t3)):
            for which, tree in (("before", before), ("after", after)):
                row = {"which": which, **run_in(tree, case)}
                rows.append(row)
                with (out / f"{name}.jsonl").open("a") as f:
                    f.write(json.dumps(row) + "\n")
                where = json.dumps({k: row[k] for k in ("s", "step", "seed") if k in row})
                ratio = (f" ({row['ratio']:.3f} of W1, population {row['population_ratio']:.3f})"
                         if "ratio" in row else "")
                print(f"{which:6s} {where}: certified {row['certified']:.4f}{ratio}, {row['chosen']}, "
                      f"{row['steps']} steps, {row['seconds']:.1f} s", flush=True)
    load = os.getloadavg()
    lines = [f"# Default estimate before ({args.before}) and after ({args.after or 'the checkout'}): {args.cases}", "",
             f"{stamp}, CPU ({platform.machine()}), 1 torch thread per run, load average at the end "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; seeds 0-{args.seeds - 1}; "
             f"options {args.options}.", "", "    python bench/before_after.py " + " ".join(sys.argv[1:]), "",
             "Means over seeds (each seed in brackets).", ""]
    if args.cases == "contraction":
        above = sum(r["lcb_ratio"] > 1 for r in rows)
        lines += [f"Digits contractions, {args.n} samples per side. 'population': the chosen critic's certified "
                  "dual value over the whole distribution (no held-out sampling noise).", "",
                  *contraction_table(rows), "",
                  f"Lower confidence bound above the true W1: {above} of {len(rows)} runs."]
    else:
        lines += gan_table(rows)
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
