"""Checkpoint series (issue 13): W1 of one real set against many checkpoints of one model, each item's
critic warm-started from the previous item's.

The estimator's steps (training.estimator) run per item:
- the real source is opened once and split by `open_sides` the same way for every item (the split is a
  function of the seed, the sample count and the split options), so no critic of the series ever trains
  on a real held-out or validation sample; each fake gets its own split and the carried critic trains on
  the new fake's training split only; held-out sides are sealed until the item's critic is final;
- the first item is a cold estimate: critic="auto" races its candidates on the first item's validation
  split and the family it chooses is kept for the series (`SeriesResult.critic_choice` says so);
- a later item starts from the previous item's final critic and trains with `WarmStart`'s schedule; a
  short cold trial of the same family trains beside it, and when the cold trial validates higher the
  item falls back to a cold start (the trial's critic continues with the estimate's own schedule).

With `checkpoint_dir` a series checkpoints during every item and after it (`series.pt`: the finished
items and the carried critic), so a killed run resumes at its current item with the carried critic."""
from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from training.data import open_for_space, open_sides, wants_validation
from training.estimator import Clock, _check, finish, fit, use_thread_policy
from training.loop import Run, Schedule, new_state, train, validate
from training.options import EstimateOptions
from training.report import same_indices
from training.selection import Candidate, score
from training.result import SeriesPosition
from training.series_result import SeriesEvent, SeriesItem, SeriesResult, default_label
from training.space import SpaceMismatch
from training.state import TrainState, load_checkpoint, save_checkpoint
from training.threads import ThreadWatch, restores_threads

SERIES_CHECKPOINT = "series.pt"
# A carried critic validating below this part of the warm critic's value means the generator moved far
# (bench/series_design.py on digits GAN checkpoints during the design: 0.57-0.76 on checkpoints where
# the warm schedule matched a cold estimate within 1 s.e., 0.29-0.35 where it stayed about 3 s.e.
# below): the item's notes say so.
FAR = 0.5
SERIES_VERSION = 2


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """How a warm-started item trains: the carried critic, the estimate's own optimiser and learning rate
    (`lr` None) decayed to 0 by a cosine over `steps`, validation every `eval_every` steps (the best
    critic is kept); with `early_stopping`, stopping after `patience` evaluations without improvement.
    Measured (bench/results/series_design_2026-12-07_cpu.md) on 8 digits GAN checkpoints 250 steps apart:
    375 steps at 3e-3 with a cosine decay plus the 25-step cold trial (400 steps, 0.19 of a cold
    estimate's 2,100) stay within 1 s.e. of a cold estimate of every item; the issue's 3e-4 constant for
    300 steps stayed 3-5 s.e. below it; in earlier design runs carrying Adam's moment estimates
    (`carry_optimizer`) did slightly worse than a fresh optimiser. Early stopping is off: on 8
    checkpoints of a 32x32x3 GAN (bench/series_speed.py) patience 2 ended 3 of 7 items after 100 steps,
    in the dip that the high starting rate causes, 4.7-7.8 s.e. below a cold estimate. The item's cost
    is bounded by `steps` either way.

    The rate is raced, once: no single rate suits every case (8 GAN checkpoints, full 375 steps, seed 0:
    on digits 8x8 the estimate's 3e-3 stayed within -0.9..+0.6 s.e. of cold estimates and a third of it
    1.2-2.5 s.e. below them; on 32x32x3 photo patches 3e-3 stayed 1.0-1.4 s.e. below, a third of it
    +0.2..+0.6 s.e. above). So the first warm item trains one warm critic per factor of `lr_factors`
    (times the estimate's rate; a given `lr` is used alone), each for the full warm schedule, and the
    higher certified validation value wins; its rate is kept for the rest of the series. That item costs
    one warm schedule more (775 steps with the trial instead of 400).

    What carries over is the previous item's final critic, nothing else: the validation reference is
    measured anew (`validate_carried`: the carried critic is validated on the new item before it trains,
    so it is kept unless training on the new fake improves on it; without that, the high rate wandered
    off and lost up to 7 % of W1 by the end of a 10-item series), because values of different fakes are
    not comparable. `cold_trial_steps` is the short cold trial the warm critic must validate above, or
    the item falls back to a cold start (0: no trial, the warm critic is always kept)."""

    lr: float | None = None
    lr_schedule: str = "cosine"
    steps: int = 375
    eval_every: int = 50
    early_stopping: bool = False
    patience: int = 2
    carry_optimizer: bool = False
    validate_carried: bool = True
    cold_trial_steps: int = 25
    lr_factors: tuple[float, ...] = (1.0, 1 / 3)

    def schedule(self, opts: EstimateOptions, candidate=None, max_steps: int | None = None,
                 lr: float | None = None) -> Schedule:
        """The warm critic's schedule: never more steps than a cold estimate (`opts.steps`) or `max_steps`;
        at `lr`, else `self.lr`, else the candidate's own rate (Schedule.of)."""
        steps = max(1, min(self.steps, opts.steps, max_steps or opts.steps))
        base = Schedule.of(opts, candidate)
        return dataclasses.replace(base, lr=lr or self.lr or base.lr, lr_schedule=self.lr_schedule,
                                   steps=steps, eval_every=min(self.eval_every, steps), patience=self.patience,
                                   early_stopping=self.early_stopping, min_steps=0)

    def rates(self, opts: EstimateOptions, candidate=None) -> list[float]:
        """The warm rates the first warm item races: `lr` alone when it is set, else `lr_factors` times the
        candidate's own rate (one rate: nothing to race)."""
        if self.lr:
            return [self.lr]
        base = Schedule.of(opts, candidate).lr
        return [base * f for f in self.lr_factors] or [base]


@dataclasses.dataclass
class Carry:
    """What passes from one item to the next: the family and its final critic and optimiser state."""

    candidate: Candidate
    critic: dict
    optimizer: dict


class SeriesRunner:
    """Runs the items of a series in order against one real source, carrying the critic (estimate_series
    and W1Monitor drive it). `items`, `carry` and `selection` are the series so far."""

    def __init__(self, real, options: EstimateOptions | dict | None = None, *, warm: WarmStart | None = WarmStart(),
                 progress: Callable[[SeriesEvent], None] | None = None, should_stop: Callable[[], bool] | None = None,
                 checkpoint_dir=None, latent=None, dist=None, output_range=None, size: int = 0, **overrides):
        self.given = EstimateOptions.build(options, **overrides)
        self.opts = self.given.resolved()
        _check(self.opts)
        if self.opts.folds and self.opts.folds > 1:
            raise ValueError("a series runs without cross-fitting (its carried critic has trained on every fold): "
                             "set folds=1")
        self.real = open_for_space(real, self.opts.space)
        self.warm, self.progress, self.should_stop, self.size = warm, progress, should_stop, size
        self.checkpoint_on_stop: Callable[[], bool] | None = None  # as estimate_w1's (None: always)
        self.generator = dict(latent=latent, dist=dist, output_range=output_range)
        self.dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.items: list[SeriesItem] = []
        self.carry: Carry | None = None
        self.warm_lr: float | None = None  # chosen at the first warm item, kept for the series
        self.selection = None
        self.t0 = time.perf_counter()
        if self.dir is not None and (self.dir / SERIES_CHECKPOINT).exists():
            self._resume()

    # ---- one item ----
    @restores_threads
    def run_item(self, fake, label: str, step: int | None = None, *, index: int | None = None,
                 max_steps: int | None = None, time_budget_s: float | None = None) -> SeriesItem:
        """Estimate W1(real, fake) as the next item (`index`: its position in the series when items were
        skipped; default: after the last). `max_steps` / `time_budget_s` bound a warm item's training
        (W1Monitor's cost per update); the first item is a full cold estimate."""
        index = len(self.items) if index is None else index
        self._emit(SeriesEvent(kind="started", index=index, label=label, items=self.size))
        clock = Clock()
        threads = ThreadWatch()  # from here, so that its first reading covers the item's set-up
        opts = self.opts
        budget = time_budget_s if time_budget_s is not None else opts.time_budget_s
        deadline = clock.start + budget if budget else None
        try:
            sides = open_sides(self.real, fake, opts, **(self.generator if callable(fake) else {}))
        except SpaceMismatch as exc:  # which checkpoint does not fit the real side's space
            raise SpaceMismatch(f"item {label!r}: {exc}") from None
        run = Run(self._forward(index, label), self.should_stop, planned=opts.steps, threads=threads,
                  checkpoint_on_stop=self.checkpoint_on_stop)
        item_dir = self.dir / f"item-{index}" if self.dir is not None else None
        clock.setup_end = time.perf_counter()
        if self.carry is None:
            state, trained, info = self._first(sides, run, clock, deadline, item_dir)
        elif self.warm is None:
            state, trained, info = self._cold(sides, run, deadline, item_dir)
        else:
            state, trained, info = self._warm(sides, run, deadline, item_dir, max_steps)
        clock.train_end = time.perf_counter()
        result = finish(state, sides, opts, clock, selection=self.selection if not self.items else None, run=run)
        if self.items:
            result.notes = _item_notes(result.notes, state, opts, info)
        result.series = SeriesPosition(index=index, label=label, step=step, train_steps=trained, **info)
        self.carry = Carry(self.carry.candidate if self.carry else self._chosen, state.critic.state_dict(),
                           state.optimizer.state_dict())
        item = SeriesItem.of(result)
        self.items.append(item)
        self._save(item_dir)
        self._emit(SeriesEvent(kind="finished", index=index, label=label, items=self.size, item=item))
        return item

    def _first(self, sides, run: Run, clock: Clock, deadline, item_dir):
        """A cold estimate as estimate_w1 runs it (estimator.fit); critic='auto' chooses the family here, once."""
        fitted = fit(sides, self.given, self.opts, run, clock, item_dir, deadline=deadline)
        self.selection, self._chosen = fitted.selection, fitted.state.candidate
        return fitted.state, run.position, {"start": "cold", "decision": "first item: a cold estimate"}

    def _cold(self, sides, run: Run, deadline, item_dir):
        """warm_start=False: a cold estimate of the series' family (no new choice)."""
        opts = self.opts
        state = new_state(self.carry.candidate, sides, opts)
        use_thread_policy([state], sides, opts, run)
        run.states = [state]
        self._checkpointing(item_dir, sides, run)
        train(state, sides, Schedule.of(opts, state.candidate), until=opts.steps, deadline=deadline,
              validation=wants_validation(opts), run=run)
        return state, run.position, {"start": "cold", "decision": "warm start off: a cold estimate"}

    def _warm(self, sides, run: Run, deadline, item_dir, max_steps: int | None):
        """The carried critic trains with the warm schedule (at the first warm item, one per candidate rate,
        raced), a cold trial of the family beside it; the higher certified validation value decides
        (held-out sides stay sealed throughout)."""
        opts, ws, carry = self.opts, self.warm, self.carry
        rates = [self.warm_lr] if self.warm_lr is not None else ws.rates(opts, carry.candidate)
        warms = [new_state(carry.candidate, sides, opts, critic_state=carry.critic,
                           optimizer_state=carry.optimizer if ws.carry_optimizer else None) for _ in rates]
        cold = new_state(carry.candidate, sides, opts)
        for state, lr in zip(warms, rates):
            state.name = "warm" if len(rates) == 1 else f"warm lr={lr:.2g}"
        cold.name = "cold"
        use_thread_policy([*warms, cold], sides, opts, run)
        run.states = [*warms, cold]
        schedules = [ws.schedule(opts, carry.candidate, max_steps, lr) for lr in rates]
        run.planned = len(rates) * schedules[0].steps + ws.cold_trial_steps
        self._checkpointing(item_dir, sides, run)
        cold_schedule = Schedule.of(opts, carry.candidate)
        trial = min(ws.cold_trial_steps, opts.steps, max_steps if max_steps is not None else opts.steps)
        if ws.validate_carried:
            for state, schedule in zip(warms, schedules):
                if state.step == 0 and state.best_state is None:
                    validate(state, sides, schedule)  # the carried critic as it is: kept unless training improves it
            run.extra["carried"] = score(warms[0], sides, opts).value
        warm, lr, race = self._race(warms, rates, schedules, sides, deadline, run)
        self.warm_lr = lr
        info = {"warm_lr": lr, "carried_validation": run.extra.get("carried")}
        if trial == 0:  # no cold trial: the warm critic is kept
            return warm, run.position, {**info, "start": "warm", "decision": race + "warm start (no cold trial)"}
        train(cold, sides, cold_schedule, until=trial, deadline=deadline, validation=True, run=run)
        w, c = score(warm, sides, opts), score(cold, sides, opts)
        lead = w.lead(c, same_indices(sides.real, sides.fake, "validation"))
        info |= {"warm_validation": w.value, "cold_trial_validation": c.value, "lead_se": lead}
        if c.value <= w.value:
            return warm, run.position, {**info, "start": "warm", "decision": race + (
                f"warm start kept: validation {w.value:.4g} vs the {cold.step}-step cold trial's {c.value:.4g} "
                f"(lead {lead:+.1f} s.e.)")}
        until = opts.steps if max_steps is None else min(opts.steps, max(max_steps, cold.step))
        run.planned = run.position + until - cold.step
        train(cold, sides, cold_schedule, until=until, deadline=deadline, validation=wants_validation(opts),
              run=run)
        return cold, run.position, {**info, "start": "fallback", "decision": race + (
            f"fell back to a cold start: the warm critic validated {w.value:.4g}, below the {trial}-step cold "
            f"trial's {c.value:.4g} ({lead:+.1f} s.e.)")}

    def _race(self, warms: list[TrainState], rates: list[float], schedules: list[Schedule], sides, deadline,
              run: Run) -> tuple[TrainState, float, str]:
        """Train the warm critics one after the other, each its full schedule (none stops early: the high
        rate's early dip made a race with elimination pick the low rate on digits, where the high one
        ends 1 s.e. higher); the higher certified validation value wins. Returns the winner, its rate and
        a sentence for the decision (empty: nothing raced)."""
        for state, schedule in zip(warms, schedules):
            train(state, sides, schedule, until=schedule.steps, deadline=deadline, validation=True, run=run)
        if len(warms) == 1:
            return warms[0], rates[0], ""
        scores = [score(state, sides, self.opts) for state in warms]
        best = max(range(len(warms)), key=lambda i: scores[i].value)
        values = ", ".join(f"lr {lr:.2g}: {sc.value:.4g}" for lr, sc in zip(rates, scores))
        return warms[best], rates[best], f"warm rate {rates[best]:.2g} chosen for the series ({values}); "

    # ---- progress and checkpoints ----
    def _forward(self, index: int, label: str):
        if self.progress is None:
            return None
        return lambda event: self._emit(SeriesEvent(kind="training", index=index, label=label, items=self.size,
                                                    progress=event))

    def _emit(self, event: SeriesEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    def _fingerprint(self, sides=None) -> str:
        from training.estimator import _fingerprint
        warm = dataclasses.asdict(self.warm) if self.warm is not None else None
        return _fingerprint(self.opts, {"real": self.real.describe(), "warm": warm,
                                        **({"fake": sides.sources["fake"]} if sides is not None else {})})

    def _checkpointing(self, item_dir: Path | None, sides, run: Run) -> None:
        """Resume this item's critics from its checkpoint when there is one; save them as they train."""
        if item_dir is None:
            return
        path, fingerprint = item_dir / "checkpoint.pt", self._fingerprint(sides)
        if path.exists():
            blob = load_checkpoint(path, fingerprint, sides.device)
            for state, saved in zip(run.states, blob["states"]):
                state.load_state_dict(saved)
            run.extra.update(blob["extra"])
        run.checkpoint = lambda: save_checkpoint(path, fingerprint, list(run.states), run.extra)

    def _save(self, item_dir: Path | None) -> None:
        """After an item: the finished items and the carried critic, atomically; the item's own
        checkpoint is no longer needed."""
        if self.dir is None:
            return
        blob = {"version": SERIES_VERSION, "fingerprint": self._fingerprint(),
                "items": [item.model_dump_json() for item in self.items],
                "selection": self.selection.model_dump_json() if self.selection is not None else None,
                "warm_lr": self.warm_lr,
                "carry": {"candidate": self.carry.candidate.spec(), "critic": self.carry.critic,
                          "optimizer": self.carry.optimizer}}
        path = self.dir / SERIES_CHECKPOINT
        tmp = path.with_name(f"{path.name}.{time.monotonic_ns()}.tmp")
        torch.save(blob, tmp)
        tmp.replace(path)
        if item_dir is not None:
            shutil.rmtree(item_dir, ignore_errors=True)

    def _resume(self) -> None:
        from training.result import Selection

        path = self.dir / SERIES_CHECKPOINT
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise ValueError(f"cannot read series checkpoint {path}: {exc}") from None
        if blob.get("version") != SERIES_VERSION or blob.get("fingerprint") != self._fingerprint():
            raise ValueError(f"series checkpoint {path} belongs to a series with other options or real samples; "
                             "use another checkpoint directory or delete it")
        self.items = [SeriesItem.model_validate_json(text) for text in blob["items"]]
        self.selection = Selection.model_validate_json(blob["selection"]) if blob["selection"] else None
        self.warm_lr = blob.get("warm_lr")
        carry = blob["carry"]
        self.carry = Carry(Candidate(**carry["candidate"]), carry["critic"], carry["optimizer"])

    def result(self) -> SeriesResult:
        warm = dataclasses.asdict(self.warm) if self.warm is not None else None
        return SeriesResult.of([item.result for item in self.items], warm, total_s=time.perf_counter() - self.t0)


def _item_notes(notes: list[str], state: TrainState, opts: EstimateOptions, info: dict) -> list[str]:
    """A warm item (or a later cold one) trains fewer steps on purpose: the estimate's 'barely trained'
    note does not apply to a critic that started warm; what started it is said instead."""
    from training.report import training_notes

    if info["start"] == "warm":
        wrong = set(training_notes(state.step, state.ended_by, opts))
        notes = [n for n in notes if n not in wrong]
        if state.ended_by == "time budget":
            notes.append(f"The time budget ended the warm critic's training at step {state.step}.")
        carried, warm = info.get("carried_validation"), info.get("warm_validation")
        if carried is not None and warm and warm > 0 and carried < FAR * warm:
            notes.append(f"The generator moved far from the previous checkpoint: the carried critic validated at "
                         f"{carried / warm:.0%} of this item's value, so the short warm schedule may stay below a "
                         "cold estimate (measured: about 3 s.e. where it validated at 30-35 %); closer checkpoints, "
                         "a longer warm schedule (WarmStart(steps=...)) or a cold estimate give a tighter bound.")
    return notes + [info["decision"]]


def estimate_series(real, fakes: Sequence, labels: Sequence[str] | None = None, steps: Sequence[int] | None = None,
                    options: EstimateOptions | dict | None = None, warm_start: bool | WarmStart = True,
                    progress: Callable[[SeriesEvent], None] | None = None, *,
                    should_stop: Callable[[], bool] | None = None, checkpoint_dir=None, latent=None, dist=None,
                    output_range=None, **overrides) -> SeriesResult:
    """W1(real, fake) for every fake of a series (checkpoints of one model, in training order).

    `fakes`: a list of anything estimate_w1 accepts (arrays, folders, archives, ONNX generators,
    nn.Modules, callables); `labels` name them (default: file names); `steps` are the checkpoints'
    training steps (the x axis of the curve; see steps_from_names). The critic's own training steps
    are an option: options={"steps": 2000}. `warm_start`: True (WarmStart()), a WarmStart, or False
    (every item cold, the family kept). `progress(SeriesEvent)` reports item starts, training progress
    and finished items. With `checkpoint_dir` the series checkpoints and resumes."""
    if isinstance(fakes, (str, Path)) or hasattr(fakes, "shape") or not isinstance(fakes, Sequence):
        raise TypeError("fakes must be a list of sources (one per checkpoint), e.g. [arr1, arr2] or paths")
    if isinstance(steps, int):
        raise TypeError("steps= are the checkpoints' training steps, one per fake; the critic's training steps "
                        "go in the options: options={'steps': N}")
    labels = list(labels) if labels is not None else [default_label(f, i) for i, f in enumerate(fakes)]
    for name, given in (("labels", labels), ("steps", steps)):
        if given is not None and len(given) != len(fakes):
            raise ValueError(f"{len(given)} {name} for {len(fakes)} fakes")
    warm = WarmStart() if warm_start is True else (warm_start or None)
    runner = SeriesRunner(real, options, warm=warm, progress=progress, should_stop=should_stop,
                          checkpoint_dir=checkpoint_dir, latent=latent, dist=dist, output_range=output_range,
                          size=len(fakes), **overrides)
    for index in range(len(runner.items), len(fakes)):  # resumed: the finished items are there already
        runner.run_item(fakes[index], labels[index], None if steps is None else int(steps[index]))
    return runner.result()
