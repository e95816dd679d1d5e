"""Step 3: critic="auto". Several certified critics are trained on the same train split; the one with
the highest certified VALIDATION value wins and only it is evaluated on the held-out split, so the
choice cannot bias the reported number (the held-out side stays sealed until then, see data.Side).

`auto_candidates` is the one place that says which critics compete for an input shape."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Candidate:
    """A critic spec as build_critic takes it; `name` labels it in results and progress."""

    name: str
    critic: str
    conv: str = "bcop"
    activation: str | None = None  # None: the critic's own default (critics.models)
    width: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        return asdict(self)


def _conv_fits(shape: tuple[int, int, int]) -> bool:
    """Whether the conv critic has at least one stage on (C, H, W) (see critics.models.conv_critic)."""
    _, h, w = shape
    return h % 2 == 0 and w % 2 == 0 and h >= 2 and w >= 2


def auto_candidates(input_shape: tuple[int, int, int]) -> list[Candidate]:
    """The critics critic="auto" trains for inputs of this (C, H, W) shape (vectors are (1, 1, D)).

    Images: the BCOP `conv` critic (stride-1 BCOP blocks between downsamplings, GroupSort, no expanding
    layer) and a Björck FC critic with GroupSort in groups of 8. On scaling cases (optimal critic a norm)
    they tie at 64-256 dimensions (0.993-0.999 of W1) and the conv critic wins at 32x32x3 (0.999 vs 0.984);
    bench/results/critic_design_2026-12-03_cpu.md. Vectors and images too small for a conv stage: FC only."""
    fc = Candidate("fc-groupsort8-256", critic="fc", activation="groupsort", width=256,
                   options={"group_size": 8})
    if not _conv_fits(tuple(input_shape)):
        return [fc]
    return [Candidate("conv-bcop-groupsort", critic="conv", conv="bcop", activation="groupsort"), fc]


def trial_steps(opts) -> int:
    """Steps every candidate trains before the choice: a quarter of `steps`, in whole validation
    intervals (the winner then continues to `steps`, so its run equals a run of that critic alone)."""
    evals = max(1, round(opts.steps / 4 / opts.eval_every))
    return min(opts.steps, evals * opts.eval_every)


# Of a time budget, this part goes to the candidates' trials (shared equally), the rest to the winner.
TRIAL_SHARE = 0.5
