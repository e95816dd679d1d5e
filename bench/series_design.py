"""Designing the warm start of a checkpoint series (issue 13): which schedule and what carries over.

Every variant continues from the SAME first item (one cold estimate with the default options, auto's
choice included) and runs the rest of the series warm; the baseline is a cold default estimate of every
item (`estimate_w1`, what a user runs today). Per item: certified lower bound (and / true W1 where known),
its s.e., steps and training seconds. Cases (training.known_series): `digits-gan` (8 checkpoints of a
small GAN on digits, 8x8), `digits` (digits contracted toward their mean, s = 0.5 ... 0.95: W1 known),
`photos900` (16x16 grey photo patches, 900 per side, the same contraction: the issue's small-data case).

    python bench/series_design.py [--cases digits-gan,digits,photos900] [--seeds 1] [--variants ...]
        [--no-cold] [--out bench/results]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import training  # noqa: F401, I001 - before torch: OpenMP's waits as the product sets them (training.threads)
import torch

from training import estimate_w1
from training.known_series import digits01, digits_contraction, gan_series, photos_contraction
from training.series import SeriesRunner, WarmStart

VARIANTS = {
    # the measured schedule: 3e-4 constant, <= 300 steps, validation every 50, patience 2
    "issue": WarmStart(lr=3e-4, lr_schedule="constant", steps=300, cold_trial_steps=0, early_stopping=True),
    "issue+adam": WarmStart(lr=3e-4, lr_schedule="constant", steps=300, carry_optimizer=True, cold_trial_steps=0,
                            early_stopping=True),
    "issue+adam-noval0": WarmStart(lr=3e-4, lr_schedule="constant", steps=300, carry_optimizer=True,
                                   validate_carried=False, cold_trial_steps=0),
    "lr1e-3": WarmStart(lr=1e-3, lr_schedule="constant", steps=400, carry_optimizer=True, cold_trial_steps=0),
    "lr3e-3": WarmStart(lr=3e-3, lr_schedule="constant", steps=400, carry_optimizer=True, cold_trial_steps=0),
    "lr1e-3-cos": WarmStart(lr=1e-3, steps=400, carry_optimizer=True, cold_trial_steps=0),
    "lr3e-3-cos": WarmStart(lr=3e-3, steps=400, carry_optimizer=True, cold_trial_steps=0),
    "lr3e-3-cos-fresh": WarmStart(lr=3e-3, steps=400, cold_trial_steps=0),  # the default's 3e-3 rate alone, no trial
    "lr1e-3-cos-fresh": WarmStart(lr=1e-3, steps=400, cold_trial_steps=0),  # the default's 1e-3 rate alone, no trial
    "lr3e-3-cos300": WarmStart(lr=3e-3, steps=300, carry_optimizer=True, cold_trial_steps=0),
    "lr3e-3-cos300-fresh": WarmStart(lr=3e-3, steps=300, cold_trial_steps=0),
    "lr3e-3-cos-noval0": WarmStart(lr=3e-3, steps=400, validate_carried=False, cold_trial_steps=0),
    # the cold schedule unchanged (2,000 steps, eval every 100, patience 4), from the carried critic
    "cold-schedule": WarmStart(lr=3e-3, steps=2000, eval_every=100, patience=4, carry_optimizer=True,
                               cold_trial_steps=0),
    "w350-t50": WarmStart(steps=350, cold_trial_steps=50),
    "w375-t25": WarmStart(steps=375, cold_trial_steps=25),
    "w400-t50": WarmStart(steps=400, cold_trial_steps=50),
    "default": WarmStart(),  # what ships: two rates raced once (3e-3, 1e-3), 375 steps, a 25-step cold trial
    "default-trial100": WarmStart(cold_trial_steps=100),
}
CASES = {
    "digits-gan": lambda: gan_series(digits01(), "digits"),  # Adam 2e-4, checkpoints 2000..3750
    "digits-gan-fast": lambda: gan_series(digits01(), "digits-fast", checkpoints=tuple(range(250, 2001, 250)), lr=2e-3),
    "digits": lambda: digits_contraction(),
    "photos900": lambda: photos_contraction(16, 900, grey=True),
}


def record(item_or_result, true_w1, **extra) -> dict:
    r = getattr(item_or_result, "result", item_or_result)
    steps_total = getattr(item_or_result, "train_steps", None)
    if steps_total is None:
        sel = r.selection
        steps_total = sum(c.steps for c in sel.candidates) if sel else r.steps_run
    return {"certified": r.certified_lower_bound, "se": r.stderr / r.lipschitz_bound,
            "lcb": r.lower_confidence_bound, "ratio": r.certified_lower_bound / true_w1 if true_w1 else None,
            "steps_run": r.steps_run, "train_steps": steps_total, "train_s": r.timings.train_s,
            "total_s": r.timings.total_s, **extra}


def run_case(name: str, seed: int, variants: list[str], rows: list, out: Path, cold: bool = True) -> None:
    case = CASES[name]()
    opts = {**case.options, "seed": seed}
    truth = case.true_w1 or [None] * len(case.fakes)

    def emit(row):
        rows.append(row)
        out.write_text(json.dumps(rows, indent=1))
        print(json.dumps(row), flush=True)

    first = SeriesRunner(case.real, opts, warm=None)
    item0 = first.run_item(case.fakes[0], case.labels[0], case.steps[0])
    emit({"case": case.name, "seed": seed, "variant": "first", "item": 0, **record(item0, truth[0])})
    for variant in variants:
        runner = SeriesRunner(case.real, opts, warm=VARIANTS[variant])
        runner.items, runner.carry, runner.selection = [item0], dataclasses.replace(first.carry), first.selection
        for k in range(1, len(case.fakes)):
            item = runner.run_item(case.fakes[k], case.labels[k], case.steps[k])
            emit({"case": case.name, "seed": seed, "variant": variant, "item": k, "start": item.start,
                  **record(item, truth[k])})
    for k in range(1, len(case.fakes) if cold else 1):
        r = estimate_w1(case.real, case.fakes[k], opts)
        emit({"case": case.name, "seed": seed, "variant": "cold", "item": k, **record(r, truth[k])})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--no-cold", action="store_true", help="Skip the cold estimates of every item.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    stamp = datetime.date.today().isoformat()
    tag = f"{args.cases}_{args.variants}".replace(",", "-") if args.no_cold else args.cases.replace(",", "-")
    out = Path(args.out) / f"series_design_{tag}_s{args.first_seed}_{stamp}_cpu.json"
    rows: list = [{"meta": {"date": stamp, "machine": platform.machine(), "torch": torch.__version__,
                            "threads": args.threads, "started": time.time()}}]
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name in args.cases.split(","):
            run_case(name, seed, args.variants.split(","), rows, out, cold=not args.no_cold)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
