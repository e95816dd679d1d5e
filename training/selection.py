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

import numpy as np

from training.loop import Run, Schedule, best_critic, critic_values, train
from training.options import PRESETS, EstimateOptions
from training.report import same_indices, stderr
from training.result import CandidateRecord, Selection
from training.state import TrainState


@dataclass(frozen=True)
class Candidate:
    """A critic spec as build_critic takes it, and how it trains when that differs from the options: its
    own learning rate, and Gaussian noise added to its training batches (std `input_noise` times the
    spread of the real training samples, data.Sides.spread). `name` labels it in results and progress."""

    name: str
    critic: str
    conv: str = "bcop"
    activation: str | None = None  # None: the critic's own default (critics.models)
    width: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None
    input_noise: float = 0.0

    def spec(self) -> dict[str, Any]:
        return asdict(self)

    def training(self) -> dict[str, float]:
        """The training settings this candidate sets itself (empty: the options' own)."""
        return {k: v for k, v in (("lr", self.lr), ("input_noise", self.input_noise)) if v}


def _conv_fits(shape: tuple[int, int, int]) -> bool:
    """Whether the conv critic has at least one stage on (C, H, W) (see critics.models.conv_critic)."""
    _, h, w = shape
    return h % 2 == 0 and w % 2 == 0 and h >= 2 and w >= 2


# Fewer training samples than this on a side, and auto's candidates train for small data (below).
SMALL_DATA = 1000
# Small data: the FC critic's learning rate, and the conv critic's input noise (in units of the data's
# spread). Measured on digits contractions with 630 training samples per side drawn independently
# (bench/results/small_data_*): FC at lr 1e-3 reached 0.958 / 0.927 / 0.684 of W1 where 3e-3 reached
# 0.945 / 0.892 / 0.636 (s = 0.5 / 0.7 / 0.9); conv with noise 0.2 per pixel (0.37 of the spread)
# 0.916 / 0.771 (s = 0.5 / 0.9) where it reached 0.909 / 0.724 without, 0.19 and 0.74 pixels gaining too.
# Both trade a little speed of fitting for less memorising of single training samples, which costs
# most where W1 is small.
SMALL_DATA_LR = 1e-3
SMALL_DATA_NOISE = 0.35


def small_data(train_samples: int | None) -> bool:
    """Fewer than SMALL_DATA training samples on the smaller side (None: a generator side, unlimited)."""
    return train_samples is not None and train_samples < SMALL_DATA


def auto_candidates(input_shape: tuple[int, int, int], train_samples: int | None = None) -> list[Candidate]:
    """The critics critic="auto" trains for inputs of this (C, H, W) shape (vectors are (1, 1, D)),
    with `train_samples` training samples on the smaller side (None: a generator side, unlimited).

    Images: the BCOP `conv` critic (stride-1 BCOP blocks between downsamplings, GroupSort, no expanding
    layer) and a Björck FC critic with GroupSort in groups of 8. On scaling cases (optimal critic a norm)
    they tie at 64-256 dimensions (0.993-0.999 of W1) and the conv critic wins at 32x32x3 (0.999 vs 0.984);
    bench/results/critic_design_2026-12-03_cpu.md. Vectors and images too small for a conv stage: FC only.
    Under SMALL_DATA training samples the FC critic trains at SMALL_DATA_LR and the conv critic on
    noisy inputs (SMALL_DATA_NOISE). The order matters there: the race keeps the first candidate unless
    another leads it by SMALL_DATA_MARGIN_SE."""
    small = small_data(train_samples)
    fc = Candidate("fc-groupsort8-256", critic="fc", activation="groupsort", width=256,
                   options={"group_size": 8}, lr=SMALL_DATA_LR if small else None)
    if not _conv_fits(tuple(input_shape)):
        return [fc]
    return [Candidate("conv-bcop-groupsort", critic="conv", conv="bcop", activation="groupsort",
                      input_noise=SMALL_DATA_NOISE if small else 0.0), fc]


def trial_steps(opts) -> int:
    """Steps every candidate trains before the choice: a quarter of `steps`, in whole validation
    intervals (the winner then continues to `steps`, so its run equals a run of that critic alone)."""
    evals = max(1, round(opts.steps / 4 / opts.eval_every))
    return min(opts.steps, evals * opts.eval_every)


# Of a time budget, at most this part goes to the candidates' trials, the rest (and whatever the trials
# leave) to the winner.
TRIAL_SHARE = 0.5
# A candidate's trial ends as soon as another leads it by this many standard errors of the difference
# of their certified validation values (both on the same validation samples). A noise lead this large
# has probability 3e-5 per look; the lead seen on the bench cases was 4-27 SE after 50-100 steps
# where the choice mattered, under 3 SE where the candidates tied.
MARGIN_SE = 4.0


def candidates(given: EstimateOptions, opts: EstimateOptions, input_shape, train_samples: int | None = None,
               ) -> list[Candidate]:
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
        raise ValueError(f"{' and '.join(named)} {'applies' if len(named) == 1 else 'apply'} to a named critic; "
                         "with critic='auto' the candidates are "
                         "fixed (training.selection.auto_candidates): name a critic, e.g. critic='dcgan'")
    return auto_candidates(input_shape, train_samples)


@dataclass
class Score:
    """A candidate's certified validation values f(x) / L, per sample of each side."""

    real: np.ndarray
    fake: np.ndarray
    bound: float

    @property
    def value(self) -> float:
        return float(self.real.mean() - self.fake.mean())

    def lead(self, other: "Score", paired: bool) -> float:
        """How many standard errors of the difference this score leads `other` by."""
        se = stderr(self.real - other.real, self.fake - other.fake, paired)
        return (self.value - other.value) / se if se > 0 else 0.0  # no spread at all: no evidence either way


def score(state: TrainState, sides, opts: EstimateOptions, current: bool = False) -> Score | None:
    """The certified validation values of the critic this candidate would report with (its best
    validated one when early stopping keeps the best; with `current`, the critic as it is now), or
    None before its first validation."""
    from critics import lipschitz_bound

    if state.best_state is None and state.last_validation is None:
        return None
    critic = state.critic if current else best_critic(state, bool(opts.early_stopping))
    bound = float(lipschitz_bound(critic, sides.input_shape).bound)
    return Score(critic_values(critic, sides.real.validation_batches()) / bound,
                 critic_values(critic, sides.fake.validation_batches()) / bound, bound)


def choose(states: list[TrainState], sides, opts: EstimateOptions, run: Run, *,
           deadline: float | None) -> TrainState:
    """Race the candidates on the validation split (the held-out sides stay sealed) and return the
    winner; a single candidate is returned untrained. In rounds of `eval_every` steps each candidate
    still in the race trains and is scored; one that another leads by MARGIN_SE standard errors is
    out. The race ends when one is left, when the rest reach the trial (a quarter of `steps`) or stop
    early, or when TRIAL_SHARE of the time budget is spent: then the highest certified value wins.
    Candidates are compared on their best validated critics, except on small data
    (race_on_current_critics), where the first candidate also wins unless another leads it by
    SMALL_DATA_MARGIN_SE (keep_first_on_small_data). The race's state lives in run.extra["race"] (checkpointed), so a resumed
    run decides the same."""
    if len(states) == 1:
        return states[0]
    race = run.extra.setdefault("race", {"round": 0, "out": {}, "scores": {}, "decided": None})
    if race["decided"] is None:
        _race(states, sides, opts, run, race, deadline)
    run.phase = "training"
    winner = next(s for s in states if s.name == race["decided"]["chosen"])
    run.planned = run.position + opts.steps - winner.step
    return winner


def race_on_current_critics(train_samples: int | None) -> bool:
    """Whether the race compares the candidates' current critics rather than their best validated ones:
    on small data (under SMALL_DATA training samples a side; 90 validation samples at 900 a side). There
    a candidate that memorises its training samples peaks on validation early and then falls, and the
    best of its validation values can be a noise peak that wins the race: on digits contractions at
    W1 = 0.43 (900 a side, seed 2) the FC critic won with 0.3996 at step 200 against the conv critic's
    0.3975 and reported 0.48 of W1, where the conv critic reports 0.66. Compared on current critics, 9
    seeds gave 0.689 of W1 instead of 0.669, with the same choices and values at W1 = 2.15 and 1.29
    (bench/results/small_data_race_2026-12-07_cpu.md). The winner still reports its best validated
    critic."""
    return small_data(train_samples)


# Small data: the first candidate (auto_candidates puts the conv critic on noisy inputs first) is kept
# unless another leads it by this many standard errors of the difference of their validation values.
# With 90 validation samples a side a memorising FC critic's values are noisy (standard error 0.17-0.29
# of W1 against 0.11-0.17 for the conv critic at W1 = 0.43) and it led on 2 of 9 seeds by 1.1 and 0.1 SE
# while its population value was 0.54-0.58 of W1 against the conv critic's 0.76-0.79; where it is
# truly better (W1 = 1.29, 2.15: population 0.91-0.94 against 0.81-0.87) it led by 2.1-9.3 SE
# (bench/results/small_data_choice_2026-12-07_cpu.md). Two standard errors: the usual significance.
SMALL_DATA_MARGIN_SE = 2.0


def keep_first_on_small_data(states, scores: dict, race: dict, leader, paired: bool) -> float | None:
    """On small data, how far the leader leads the first candidate (in SE) when that is too little to
    pass it over (then the first candidate wins), else None."""
    first = states[0]
    if (race["compared"] != "current" or leader is first or first.name in race["out"]
            or scores.get(first.name) is None or scores.get(leader.name) is None):
        return None
    lead = scores[leader.name].lead(scores[first.name], paired)
    return lead if lead < SMALL_DATA_MARGIN_SE else None


def _race(states, sides, opts: EstimateOptions, run: Run, race: dict, deadline: float | None) -> None:
    race.setdefault("compared", "current" if race_on_current_critics(sides.train_samples) else "best")
    trial, t_select = trial_steps(opts), time.perf_counter()
    trial_end = t_select + TRIAL_SHARE * max(deadline - t_select, 0.0) if deadline is not None else None
    paired = same_indices(sides.real, sides.fake, "validation")
    run.phase = "selection"
    while True:
        alive = [s for s in states if s.name not in race["out"]]
        run.planned = run.position + sum(max(trial - s.step, 0) for s in alive) + opts.steps - trial
        until = min((race["round"] + 1) * opts.eval_every, trial)
        for state in alive:
            train(state, sides, Schedule.of(opts, state.candidate), until=until, pause_at=trial_end,
                  validation=True, run=run)
        race["round"] += 1
        scores = {s.name: score(s, sides, opts, current=race["compared"] == "current") for s in alive}
        race["scores"].update({name: _summary(sc, paired) for name, sc in scores.items()})
        ranked = sorted((s for s in alive if scores[s.name] is not None), key=lambda s: -scores[s.name].value)
        if not ranked:
            ranked = alive
        leader = ranked[0]
        for other in ranked[1:] if scores[leader.name] is not None else []:
            behind = scores[leader.name].lead(scores[other.name], paired)
            race["scores"][other.name]["behind_se"] = behind
            if behind >= MARGIN_SE:
                race["out"][other.name] = {"step": other.step, "behind_se": behind}
        left = [s for s in ranked if s.name not in race["out"]]
        if len(left) == 1:
            why = "its lead reached the margin"
        elif all(s.done or s.step >= trial for s in left):
            why = "the trials ended" if any(s.step >= trial for s in left) else "every candidate stopped early"
        elif trial_end is not None and time.perf_counter() >= trial_end:
            why = "the trials' share of the time budget was spent"
        else:
            continue
        runner = ranked[1] if len(ranked) > 1 else None
        passed_over = keep_first_on_small_data(states, scores, race, leader, paired)
        kept = None
        if passed_over is not None:
            kept = {"leader": leader.name, "lead_se": passed_over}
            race["scores"][leader.name]["behind_se"] = -passed_over  # behind the winner by a negative margin
            leader, runner = states[0], leader
        lead = (scores[leader.name].lead(scores[runner.name], paired)
                if runner is not None and scores[leader.name] is not None and scores[runner.name] is not None else None)
        race["decided"] = {"chosen": leader.name, "step": leader.step, "why": why, "margin_se": lead,
                           "kept_first": kept}
        return


def _summary(sc: Score | None, paired: bool) -> dict:
    if sc is None:
        return {"validation": None, "bound": None, "stderr": None}
    return {"validation": sc.value, "bound": sc.bound, "stderr": stderr(sc.real, sc.fake, paired)}


def selection_record(states: list[TrainState], winner: TrainState, sides, opts: EstimateOptions,
                     run: Run) -> Selection:
    """How auto chose, once the winner has trained: every candidate's certified validation value at the
    choice (the winner's own after its training when it was the only candidate), when and why."""
    race = run.extra.get("race") or {"out": {}, "decided": None,
                                     "scores": {winner.name: _summary(score(winner, sides, opts), False)}}
    decided = race["decided"] or {"step": 0, "why": "it was the only candidate", "margin_se": None}
    records = []
    for s in states:
        sc, out = race["scores"].get(s.name, {}), race["out"].get(s.name)
        records.append(CandidateRecord(
            name=s.name, spec=s.critic.spec, validation=sc.get("validation"), lipschitz_bound=sc.get("bound"),
            validation_stderr=sc.get("stderr"), behind_se=sc.get("behind_se") if s is not winner else None,
            trial_ended_at=out["step"] if out else (decided["step"] if s is not winner else None),
            training=dict(s.candidate.training(), **({"input_noise_std": s.input_noise} if s.input_noise else {}))
            if s.candidate is not None else {},
            steps=s.step, train_s=s.train_s, stopped_early=s.stopped_early))
    margin, kept = decided["margin_se"], decided.get("kept_first")
    reason = (f"{winner.name} chosen at step {decided['step']}: {decided['why']}"
              + (f"; small data: {kept['leader']} led it by only {kept['lead_se']:.1f} validation standard errors "
                 f"(< {SMALL_DATA_MARGIN_SE:g}), so the first candidate is kept" if kept
                 else f" (lead {margin:.1f} validation standard errors; the margin is {MARGIN_SE:g})" if margin is not None
                 else "")
              + ("; small data: candidates compared on their current critics, not their best validated ones"
                 if race.get("compared") == "current" else ""))
    return Selection(chosen=winner.name, candidates=records, trial_steps=trial_steps(opts) if len(states) > 1 else 0,
                     decided_at_step=decided["step"], margin_se=margin, margin_threshold_se=MARGIN_SE, reason=reason)
