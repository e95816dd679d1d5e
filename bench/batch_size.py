"""Does a larger batch make the estimate faster at equal tightness? The re-parameterisation of a
certified critic costs the same at any batch size, so a larger batch amortises it (bench/profile_step.py
--batch); the question is whether the estimate then needs fewer steps for the same answer.

Known-answer cases where a linear critic loses (training.known_cases): Gaussians in 64 dimensions scaled
by 0.7 (vectors: the FC critic), and digits (8x8) contracted toward their mean by 0.5 (the FC critic and
the BCOP conv critic), each critic named, default options but the batch size, 1 thread, several seeds.
Reported: certified lower bound / true W1, steps run (early stopping), training CPU time.

    PYTHONPATH=. python bench/batch_size.py --batches 64,128,256 --seeds 0,1
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import estimate_w1  # noqa: E402
from training.known_cases import gaussian_scaling, image_scaling  # noqa: E402


def cases():
    from sklearn.datasets import load_digits

    digits = load_digits().images.astype(np.float32)[:, None] / 16.0
    return {"gauss64": (gaussian_scaling(64, s=0.7, n=4000), ["fc"]),
            "digits-scaled": (image_scaling(digits, 0.5, "digits s=0.5"), ["fc", "conv"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="64,128,256")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / f"batch_size_{dt.date.today()}_cpu.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    batches = [int(b) for b in args.batches.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    load0 = os.getloadavg()[0]
    for name, (case, critics) in cases().items():
        for critic in critics:
            for seed in seeds:
                for batch in batches:  # batch sizes interleaved, so they see the same machine
                    t0 = time.process_time()
                    r = estimate_w1(case.real, case.fake, critic=critic, batch_size=batch, seed=seed, **case.options)
                    cpu = time.process_time() - t0
                    rows.append(dict(case=name, critic=critic, seed=seed, batch=batch,
                                     ratio=r.certified_lower_bound / case.true_w1,
                                     lcb_ok=r.lower_confidence_bound <= case.true_w1, steps=r.steps_run,
                                     train_s=r.timings.train_s, cpu_s=cpu))
                    print(json.dumps(rows[-1]), flush=True)
    lines = ["| case | critic | batch | certified / true (per seed) | mean | steps (per seed) | CPU s (per seed) | "
             "mean CPU s | LCB <= truth |", "|---|---|---|---|---|---|---|---|---|"]
    for name, (case, critics) in cases().items():
        for critic in critics:
            for batch in batches:
                rs = [r for r in rows if r["case"] == name and r["critic"] == critic and r["batch"] == batch]
                ratios = ", ".join(f"{r['ratio']:.4f}" for r in rs)
                steps = ", ".join(str(r["steps"]) for r in rs)
                cpu = ", ".join(f"{r['cpu_s']:.1f}" for r in rs)
                lines.append(f"| {name} | {critic} | {batch} | {ratios} | {statistics.mean(r['ratio'] for r in rs):.4f} | "
                             f"{steps} | {cpu} | {statistics.mean(r['cpu_s'] for r in rs):.1f} | "
                             f"{all(r['lcb_ok'] for r in rs)} |")
    text = "\n".join([f"# Batch size against time and tightness ({dt.date.today()}, CPU, 1 thread)", "",
                      __doc__.split("\n\n")[1].strip(), "",
                      f"Command: `PYTHONPATH=. python bench/batch_size.py --batches {args.batches} --seeds {args.seeds}`. "
                      f"Load average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end (shared machine: "
                      "CPU time is the robust column).", "", *lines, "", "Raw:", "", "```",
                      *(json.dumps(r) for r in rows), "```"])
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
