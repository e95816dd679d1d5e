"""Small data: the default estimate against variants of auto's race, on digits contractions.

training.known_cases.digits_contraction(s, 900, seed): 900 digits a side drawn independently, one side
contracted toward the mean digit by s (W1 exact; s = 0.9 gives a fifth of s = 0.5's W1). Each run
prints one JSON line: certified / W1, the chosen critic's population value / W1 (its certified dual
value over all 1,797 digits and their contractions: the estimate without held-out noise), the lower
confidence bound / W1, the choice and the time. Variants (patched in this process only):

  default    the code as it is
  best       the race compares best validated critics on small data too (before 2026-12-07's change)
  convonly   auto's FC candidate dropped on small data
  ema        an exponential moving average of the weights (decay 0.99) validated beside each critic

    python bench/small_data_variants.py --variant default --s 0.9 --seeds 0-8 [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import training.loop as loop  # noqa: E402
import training.selection as selection  # noqa: E402
from training import estimate_w1  # noqa: E402
from training.known_cases import digits_contraction  # noqa: E402


def patch(variant: str) -> None:
    if variant == "best":
        selection.race_on_current_critics = lambda train_samples: False
    elif variant == "convonly":
        auto = selection.auto_candidates

        def conv_only(shape, train_samples=None):
            found = auto(shape, train_samples)
            small = train_samples is not None and train_samples < selection.SMALL_DATA
            return [c for c in found if c.critic == "conv"] if small and len(found) > 1 else found
        selection.auto_candidates = conv_only
    elif variant == "ema":
        step, validate = loop.train_step, loop.validate

        def train_step(state, lr):
            step(state, lr)
            with torch.no_grad():
                params = dict(state.critic.named_parameters())
                if not hasattr(state, "ema"):
                    state.ema = {k: p.detach().clone() for k, p in params.items()}
                for k, p in params.items():
                    state.ema[k].lerp_(p.detach(), 0.01)

        def validate_both(state, sides, schedule):
            value = validate(state, sides, schedule)
            ema = copy.deepcopy(state.critic)
            with torch.no_grad():
                for k, p in ema.named_parameters():
                    p.copy_(state.ema[k])
            v, _, _ = loop.dual_value(ema, sides.real, sides.fake, "validation")
            if v > state.best_value:
                state.best_value, state.best_step, state.best_state = v, state.step, copy.deepcopy(ema.state_dict())
            return value
        loop.train_step, loop.validate = train_step, validate_both
    elif variant != "default":
        raise SystemExit(f"unknown variant {variant!r}")


def seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1)) if "," not in text else [int(v) for v in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="default")
    ap.add_argument("--s", default="0.9", help="contractions, comma-separated")
    ap.add_argument("--seeds", default="0-2", help="e.g. 0-8 or 0,3,5")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    patch(args.variant)
    from sklearn.datasets import load_digits

    digits = load_digits().images.astype(np.float64)[:, None] / 16.0
    centre = digits.mean(axis=0, keepdims=True)
    for s in (float(v) for v in args.s.split(",")):
        x = torch.from_numpy((2 * digits - 1).astype(np.float32))  # the default [-1, 1] input space
        y = torch.from_numpy((2 * (centre + s * (digits - centre)) - 1).astype(np.float32))
        for seed in seeds(args.seeds):
            case = digits_contraction(s, 900, seed)
            t0 = time.perf_counter()
            r = estimate_w1(case.real, case.fake, seed=seed)
            with torch.no_grad():
                population = float(r.critic(x).double().mean() - r.critic(y).double().mean()) / r.lipschitz_bound
            print(json.dumps(dict(variant=args.variant, s=s, seed=seed, ratio=r.certified_lower_bound / case.true_w1,
                                  population=population / case.true_w1, lcb=r.lower_confidence_bound / case.true_w1,
                                  chosen=r.selection.chosen, steps=r.steps_run,
                                  seconds=round(time.perf_counter() - t0, 1))), flush=True)


if __name__ == "__main__":
    main()
