"""Step 3: which critic. A named critic is the only candidate; critic="auto" trains several certified
critics on the same train split and the one with the highest certified VALIDATION value wins; only it
is evaluated on the held-out split, so the choice cannot bias the reported number (the held-out side
stays sealed until then, see data.Side).

`auto_candidates` is the one place that says which critics compete for an input shape; `candidates`
turns options into the list; `choose` runs the trials and picks; `selection_record` says how (built
once, after the winner's training)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from training.loop import Run, Schedule, best_critic, train
from training.options import PRESETS, EstimateOptions
from training.result import CandidateRecord, Selection
from training.state import TrainState


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


def candidates(given: EstimateOptions, opts: EstimateOptions, input_shape) -> list[Candidate]:
    """The named critic, or auto's candidates (then conv/activation/width/critic_options must be unset:
    they would silently not apply). `given`: the options as the caller set them, `opts` resolved."""
    if opts.critic != "auto":
        return [Candidate(opts.critic, critic=opts.critic, conv=opts.conv, activation=opts.activation,
                          width=opts.width, options=dict(opts.critic_options))]
    # a value equal to the preset's is not a choice: resolved options (as the service stores them) carry
    # the preset's conv, and they must run as they are
    preset = PRESETS[given.preset]
    named = [k for k in ("conv", "activation", "width") if getattr(given, k) not in (None, preset.get(k))]
    named += ["critic_options"] if given.critic_options else []
    if named:
        raise ValueError(f"{', '.join(named)} apply to a named critic; with critic='auto' the candidates are "
                         "fixed (training.selection.auto_candidates): name a critic, e.g. critic='dcgan'")
    return auto_candidates(input_shape)


def choose(states: list[TrainState], sides, opts: EstimateOptions, run: Run, *,
           deadline: float | None) -> TrainState:
    """Train every candidate for its trial (validation only; the held-out sides stay sealed) and return
    the one with the highest certified validation value. A single candidate is returned untrained."""
    if len(states) == 1:
        return states[0]
    if "chosen" in run.extra:  # resumed after the choice: it stands as it was made
        return next(s for s in states if s.name == run.extra["chosen"])
    trial, schedule, t_select = trial_steps(opts), Schedule.of(opts), time.perf_counter()
    run.phase = "selection"
    run.planned = len(states) * trial + opts.steps - trial
    # of the budget left after setup, TRIAL_SHARE goes to the trials (equally), the rest to the winner
    share = TRIAL_SHARE * max(deadline - t_select, 0.0) / len(states) if deadline is not None else None
    for i, state in enumerate(states):
        until_t = t_select + share * (i + 1) if share is not None else None  # unused time passes on
        train(state, sides, schedule, until=trial, pause_at=until_t, validation=True, run=run)
    run.extra["scores"] = scores = [certified_validation(s, sides, opts) for s in states]
    scored = [i for i, (value, _) in enumerate(scores) if value is not None]
    winner = states[max(scored, key=lambda i: scores[i][0]) if scored else 0]
    run.extra["chosen"] = winner.name
    run.phase = "training"
    run.planned = run.position + opts.steps - winner.step
    return winner


def certified_validation(state: TrainState, sides, opts: EstimateOptions) -> tuple[float | None, float | None]:
    """(validation value / L, L) of the critic this candidate would report with: the best one when
    early stopping keeps the best, else the current one."""
    from critics import lipschitz_bound

    keep_best = bool(opts.early_stopping) and state.best_state is not None
    value = state.best_value if keep_best else state.last_validation
    if value is None or value == -float("inf"):
        return None, None
    bound = float(lipschitz_bound(best_critic(state, keep_best), sides.input_shape).bound)
    return value / bound, bound


def selection_record(states: list[TrainState], winner: TrainState, sides, opts: EstimateOptions,
                     run: Run) -> Selection:
    """How auto chose, once the winner has trained: every candidate's certified validation value at the
    choice (the winner's own after its training when it was the only candidate), steps and time."""
    scores = run.extra.get("scores") or [certified_validation(s, sides, opts) for s in states]
    records = [CandidateRecord(name=s.name, spec=s.critic.spec, validation=value, lipschitz_bound=bound,
                               steps=s.step, train_s=s.train_s, stopped_early=s.stopped_early)
               for s, (value, bound) in zip(states, scores)]
    return Selection(chosen=winner.name, candidates=records, trial_steps=trial_steps(opts) if len(states) > 1 else 0)
