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
    activation: str = "maxmin"
    width: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        return asdict(self)


def _dcgan_fits(shape: tuple[int, int, int], min_size: int = 4) -> bool:
    """Whether the dcgan critic has at least one stage on (C, H, W) (see critics.models.dcgan)."""
    _, h, w = shape
    return h % 2 == 0 and w % 2 == 0 and h // 2 >= min_size and w // 2 >= min_size


def auto_candidates(input_shape: tuple[int, int, int]) -> list[Candidate]:
    """The critics critic="auto" trains for inputs of this (C, H, W) shape (vectors are (1, 1, D)).

    Images: the BCOP DCGAN critic (the paper's, strongest on large images) and a Björck FC critic with
    GroupSort (strongest on small ones: it folds norms like |x - c| that one conv stage cannot).
    Vectors and images too small for a conv stage: the FC family only. GroupSort groups of 8: on
    N(0, I_64) scaled by 0.7 (i7-critics' bench, 2026-12-03) groups of 4 reached 0.983 of W1, 8 0.996."""
    fc = Candidate("fc-groupsort8-256", critic="fc", activation="groupsort", width=256,
                   options={"group_size": 8})
    if not _dcgan_fits(tuple(input_shape)):
        return [fc]
    return [Candidate("dcgan-bcop", critic="dcgan", conv="bcop", activation="maxmin"), fc]


def trial_steps(opts) -> int:
    """Steps every candidate trains before the choice: a quarter of `steps`, in whole validation
    intervals (the winner then continues to `steps`, so its run equals a run of that critic alone)."""
    evals = max(1, round(opts.steps / 4 / opts.eval_every))
    return min(opts.steps, evals * opts.eval_every)


# Of a time budget, this part goes to the candidates' trials (shared equally), the rest to the winner.
TRIAL_SHARE = 0.5
