"""Small data: the default estimate against variants of auto's race, on digits contractions.

training.known_cases.digits_contraction(s, 900, seed): 900 digits a side drawn independently, one side
contracted toward the mean digit by s (W1 exact; s = 0.9 gives a fifth of s = 0.5's W1). Each run
prints one JSON line: certified / W1, the chosen critic's population value / W1 (its certified dual
value over all 1,797 digits and their contractions: the estimate without held-out noise), the lower
confidence bound / W1, the choice and the time (before_after.one_run: one torch thread). Variants
(patched in this process only):

  default    the code as it is
  best       the race compares best validated critics on small data too (before 2026-12-07's change)
  convonly   auto's FC candidate dropped on small data
  ema        an exponential moving average of the weights (decay 0.99) validated beside each critic

    python bench/small_data_variants.py --variant default --s 0.9 --seeds 0-8
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import training.loop as loop  # noqa: E402
import training.selection as selection  # noqa: E402
from before_after import one_run  # noqa: E402  (bench/, this script's folder)


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
    if "," in text:
        return [int(v) for v in text.split(",")]
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="default")
    ap.add_argument("--s", default="0.9", help="contractions, comma-separated")
    ap.add_argument("--seeds", default="0-2", help="e.g. 0-8 or 0,3,5")
    args = ap.parse_args()
    patch(args.variant)
    for s in (float(v) for v in args.s.split(",")):
        for seed in seeds(args.seeds):
            row = one_run({"kind": "contraction", "s": s, "seed": seed, "n": 900, "options": {}})
            print(json.dumps(dict(variant=args.variant, s=s, seed=seed, ratio=row["ratio"],
                                  population=row["population_ratio"], lcb=row["lcb_ratio"], chosen=row["chosen"],
                                  steps=row["steps"], seconds=round(row["seconds"], 1))), flush=True)


if __name__ == "__main__":
    main()
