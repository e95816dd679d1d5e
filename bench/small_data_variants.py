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
  fcnoise    auto's FC candidate trains on noisy inputs too on small data (SMALL_DATA_NOISE)
  fc64       auto's FC candidate is 64 wide on small data (instead of 256)
  normpool   auto's FC candidate ends in an L2-norm pooling of half its features (1-Lipschitz: the
             norm of the first 128 features and the other 128 as they are, then the unit-vector
             output), a head that can fold the optimal critic |x - c| of a contraction in one step

With --curves each row also lists every candidate's certified validation and population values (/ W1)
at each of its validations: whether longer training, another stopping point or another choice could
have reached the population values that a better critic would.

    python bench/small_data_variants.py --variant default --s 0.9 --seeds 0-8
    python bench/small_data_variants.py --variant normpool --options '{"critic": "fc-normpool", "lr": 0.001}'
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import training.loop as loop  # noqa: E402
import training.selection as selection  # noqa: E402
from before_after import contraction_population, one_run  # noqa: E402  (bench/, this script's folder)


def patch(variant: str) -> None:
    if variant == "best":
        selection.race_on_current_critics = lambda train_samples: False
    elif variant == "convonly":
        auto = selection.auto_candidates

        def conv_only(shape, train_samples=None):
            found = auto(shape, train_samples)
            small = selection.small_data(train_samples)
            return [c for c in found if c.critic == "conv"] if small and len(found) > 1 else found
        selection.auto_candidates = conv_only
    elif variant in ("fcnoise", "fc64", "normpool"):
        auto = selection.auto_candidates
        change = {"fcnoise": dict(input_noise=selection.SMALL_DATA_NOISE),
                  "fc64": dict(width=64, name="fc-groupsort8-64"),
                  "normpool": dict(critic="fc-normpool", name="fc-groupsort8-256-normpool")}[variant]
        if variant == "normpool":
            register_normpool_critic()

        def small_fc_changed(shape, train_samples=None):
            found = auto(shape, train_samples)
            small = selection.small_data(train_samples)
            return [dataclasses.replace(c, **change) if small and c.critic == "fc" else c for c in found]
        selection.auto_candidates = small_fc_changed
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


class NormPool(torch.nn.Module):
    """(N, F) -> (N, F - k + 1): the L2 norm of the first k features, then the others. 1-Lipschitz."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h[:, :self.k].norm(dim=1, keepdim=True), h[:, self.k:]], dim=1)


def register_normpool_critic() -> None:
    import critics.lipschitz as lipschitz
    import critics.models as models
    from critics.layers import OrthoLinear

    lipschitz._NORM_ONE = lipschitz._NORM_ONE + (NormPool,)  # certified as 1-Lipschitz, like GroupSort

    @models.register_critic("fc-normpool", activation="groupsort")
    def fc_normpool(input_shape, conv, activation, width, *, depth: int = 3, group_size: int = 8):
        layers = models.fc(input_shape, conv, activation, width, depth=depth, group_size=group_size)
        features = layers[-2].in_features
        return layers[:-2] + [NormPool(features // 2), OrthoLinear(features - features // 2 + 1, 1),
                              torch.nn.Flatten(0)]


def record_curves(s: float) -> list:
    """Patch loop.validate to log (candidate, step, certified validation, population value) at every
    validation, the population over all 1,797 digits and their contractions by s (as one_run's)."""
    from critics import lipschitz_bound

    x, y = contraction_population(s)
    log, validate = [], loop.validate

    def validate_logged(state, sides, schedule):
        value = validate(state, sides, schedule)
        was = state.critic.training
        state.critic.eval()
        with torch.no_grad():
            bound = float(lipschitz_bound(state.critic, sides.input_shape).bound)
            population = float(state.critic(x).double().mean() - state.critic(y).double().mean())
        state.critic.train(was)
        log.append((state.name, state.step, value / bound, population / bound))
        return value
    loop.validate = validate_logged
    return log


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
    ap.add_argument("--options", default="{}", help="estimate options (JSON), e.g. a named critic")
    ap.add_argument("--curves", action="store_true", help="also list validation and population values per evaluation")
    args = ap.parse_args()
    patch(args.variant)
    for s in (float(v) for v in args.s.split(",")):
        log = record_curves(s) if args.curves else None
        for seed in seeds(args.seeds):
            row = one_run({"kind": "contraction", "s": s, "seed": seed, "n": 900, "options": json.loads(args.options)})
            out = dict(variant=args.variant, s=s, seed=seed, ratio=row["ratio"], population=row["population_ratio"],
                       lcb=row["lcb_ratio"], chosen=row["chosen"], steps=row["steps"], seconds=round(row["seconds"], 1))
            if log is not None:
                out["curves"] = {name: [[step, round(v / row["true_w1"], 3), round(p / row["true_w1"], 3)]
                                        for n, step, v, p in log if n == name] for name in dict.fromkeys(n for n, *_ in log)}
                log.clear()
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
