"""Step 2: training one critic.

`new_state` builds a critic (optionally from a given critic and optimiser state: a warm start),
`train` trains it on given sides with a given `Schedule` until a step, early stopping, a deadline or a
pause time. The step itself is forward, loss, backward, optimizer.step (the critic's layers re-project
their parameters inside their own forward): nothing in it reads a number back to the host. The
objective is summed on the device and read at progress points; validation (which does read back)
runs every `eval_every` steps. A `Run` carries the callbacks and counts the steps of every critic of
one estimate, so progress has one monotone position."""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from training.options import EstimateOptions
from training.result import Cancelled, ProgressEvent
from training.state import TrainState
from training.threads import ThreadWatch


@dataclass(frozen=True)
class Schedule:
    """How one critic trains: learning rate and its schedule, the step horizon, validation and early
    stopping. `Schedule.of(opts)` is the estimate's own; a warm-started critic (a checkpoint series)
    passes another, e.g. `dataclasses.replace(Schedule.of(opts), lr=3e-4, lr_schedule="constant",
    steps=300, eval_every=50, patience=2)`."""

    steps: int
    lr: float
    lr_schedule: str = "constant"
    lr_decay_every: int = 0
    lr_decay_factor: float = 0.1
    eval_every: int = 100
    early_stopping: bool = True
    patience: int = 4
    min_delta: float = 1e-3
    progress_every: int = 10
    checkpoint_every: int = 500
    min_steps: int = 0  # early stopping ends training only from this step on

    @classmethod
    def of(cls, opts: EstimateOptions, candidate=None) -> "Schedule":
        """The options' schedule, with a candidate's own learning rate when it sets one.

        With the cosine schedule early stopping waits for half of the steps: while the rate is near its
        peak the validation value can dip for several evaluations and then climb well past its early best
        (a 32x32x3 GAN checkpoint, FC critic: 16.98 at step 100, 14.69-15.83 at 200-500, 21.1 at 2,000;
        stopping at 500 reported 17.7 against 21.8). The best critic is kept either way, so waiting costs
        time only."""
        fields = {f.name: getattr(opts, f.name) for f in dataclasses.fields(cls) if f.name != "min_steps"}
        schedule = cls(**fields, min_steps=opts.steps // 2 if opts.lr_schedule == "cosine" else 0)
        lr = getattr(candidate, "lr", None)
        return dataclasses.replace(schedule, lr=lr) if lr else schedule

    def lr_at(self, step: int) -> float:
        """The learning rate for training step `step` (0-based): a pure function, so resuming needs no state."""
        if self.lr_schedule == "step" and self.lr_decay_every:
            return self.lr * self.lr_decay_factor ** (step // self.lr_decay_every)
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * step / self.steps))
        return self.lr


@dataclass
class Run:
    """One estimate's training as its caller sees it: the callbacks, and the position over every critic
    it trains (`states`, after `base` steps of earlier folds), so progress never goes back when training
    moves from one critic to another. `planned` is the overall number of steps now expected up to the
    end of this split (the selection lowers it when it decides early), `later` those of the folds still
    to come; `extra` is saved with every checkpoint (the selection's state)."""

    progress: Callable[[ProgressEvent], None] | None = None
    should_stop: Callable[[], bool] | None = None
    checkpoint: Callable[[], None] | None = None
    states: Sequence[TrainState] = ()
    planned: int = 0
    phase: str = "training"
    extra: dict = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)
    base: int = 0
    later: int = 0
    threads: ThreadWatch = field(default_factory=ThreadWatch)  # one per estimate (its folds share it)
    # asked once should_stop() is true: False stops without writing a checkpoint (a cancelled job never
    # resumes, and a checkpoint of a large critic can take seconds and gigabytes); None: always write one
    checkpoint_on_stop: Callable[[], bool] | None = None

    @property
    def position(self) -> int:
        return self.base + sum(s.step for s in self.states)

    def report(self, state: TrainState | None, objective: float, estimate: float | None, phase: str | None = None,
               ) -> None:
        if self.progress is None:
            return
        position = self.position
        self.progress(ProgressEvent(
            step=position, total=max(self.planned + self.later, position), objective=objective, estimate=estimate,
            elapsed_s=time.perf_counter() - self.t0, phase=phase or self.phase,
            candidate=state.name if state is not None else "", candidate_step=state.step if state is not None else 0))


def make_optimizer(opts: EstimateOptions, params) -> torch.optim.Optimizer:
    """The critic's optimiser. Adam is torch's fused kernel on the CPU and CUDA: 3-5x faster than the
    per-tensor loop on the CPU (bench/results/profile_step_*), equal up to float32 rounding."""
    params = list(params)
    if opts.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=opts.lr)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    optimizer = torch.optim.Adam(params, lr=opts.lr, betas=(0.5, 0.999), fused=fused or None)
    if fused:
        optimizer.register_step_post_hook(_bump_versions)
    return optimizer


def _bump_versions(optimizer: torch.optim.Optimizer, *_) -> None:
    """The fused kernel writes the parameters without bumping their version counters, which is how the
    critics' layers see that a parameter changed (re-projection, the eval-mode kernel cache)."""
    from torch.autograd.graph import increment_version

    for group in optimizer.param_groups:
        for p in group["params"]:
            increment_version(p)


def new_state(candidate, sides, opts: EstimateOptions, *, critic_state: dict | None = None,
              optimizer_state: dict | None = None) -> TrainState:
    """A critic of `candidate` (training.selection.Candidate) ready to train on `sides`, initialised
    from `opts.seed` as it would be alone, or from `critic_state` (and `optimizer_state`) when given:
    a warm start. Its batch streams are fresh, its step and validation bookkeeping start at 0. Its
    schedule is `Schedule.of(opts, candidate)`."""
    from critics import build_critic

    from training.data import stream_seed
    from training.threads import torch_threads

    with torch_threads(1):  # the same initial weights and noise scale whatever threads the caller runs on
        torch.manual_seed(opts.seed)  # every candidate starts as it would alone
        critic = build_critic(candidate.critic, sides.input_shape, conv=candidate.conv,
                              activation=candidate.activation, width=candidate.width, **candidate.options)
        noise = candidate.input_noise * sides.spread() if candidate.input_noise else 0.0
    critic = critic.to(sides.device)
    if critic_state is not None:
        critic.load_state_dict(critic_state)
    optimizer = make_optimizer(opts, critic.parameters())
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    state = TrainState(candidate.name, critic, optimizer, sides.real.stream(), sides.fake.stream(),
                       input_noise=noise, noise_seed=stream_seed(opts.seed, 0, "noise"))
    state.candidate = candidate
    return state


@torch.no_grad()
def critic_values(critic: torch.nn.Module, batches) -> np.ndarray:
    """f(x) over all batches, in eval mode, as float64 (so means and variances do not lose digits)."""
    was_training = critic.training
    critic.eval()
    try:
        out = [critic(x).double().cpu() for x in batches]
    finally:
        critic.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0)


def dual_value(critic, real, fake, which: str) -> tuple[float, np.ndarray, np.ndarray]:
    """mean f(real) - mean f(fake) on the 'validation' or 'heldout' samples, with the values."""
    fr = critic_values(critic, getattr(real, f"{which}_batches")())
    ff = critic_values(critic, getattr(fake, f"{which}_batches")())
    return float(fr.mean() - ff.mean()), fr, ff


def best_critic(state: TrainState, keep_best: bool) -> torch.nn.Module:
    """The critic a state reports with: a copy holding its best validated weights when early stopping
    keeps the best, else the critic itself."""
    if not keep_best or state.best_state is None:
        return state.critic
    critic = copy.deepcopy(state.critic)
    critic.load_state_dict(state.best_state)
    return critic


def train_step(state: TrainState, lr: float) -> None:
    """One step: maximise mean f(real) - mean f(fake) on one batch per side. No host sync."""
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    xr, xf = state.real.next(), state.fake.next()
    if state.input_noise:  # a candidate that trains on noisy inputs (selection.SMALL_DATA_NOISE)
        xr, xf = (x + state.input_noise * torch.randn(x.shape, generator=state.noise_gen, device=x.device,
                                                      dtype=x.dtype) for x in (xr, xf))
    out = state.critic(torch.cat([xr, xf]))  # one forward: a BCOP kernel is built once per step
    objective = out[:len(xr)].mean() - out[len(xr):].mean()
    state.optimizer.zero_grad(set_to_none=True)
    (-objective).backward()
    state.optimizer.step()
    state.obj_sum += objective.detach().to(state.obj_sum.dtype)
    state.obj_count += 1
    state.step += 1


def validate(state: TrainState, sides, schedule: Schedule) -> float:
    """Validation estimate; keeps the best critic and counts evaluations without improvement."""
    value, _, _ = dual_value(state.critic, sides.real, sides.fake, "validation")
    state.last_validation = value
    if value > state.best_value + schedule.min_delta * abs(state.best_value) or state.best_state is None:
        state.best_value, state.best_step, state.bad_evals = value, state.step, 0
        state.best_state = copy.deepcopy(state.critic.state_dict())
    else:
        state.bad_evals += 1
        if schedule.early_stopping and state.bad_evals >= schedule.patience and state.step >= schedule.min_steps:
            state.stopped_early = True
    return value


def train(state: TrainState, sides, schedule: Schedule, *, until: int, deadline: float | None = None,
          pause_at: float | None = None, validation: bool, run: Run | None = None) -> None:
    """Train `state` on `sides` up to step `until` (<= schedule.steps), early stopping, or
    time.perf_counter() >= deadline.

    The last two end the critic's training for good (`state.done`, `state.ended_by`); reaching
    `until` < schedule.steps or the time `pause_at` only pauses it (a candidate waiting for the
    selection). run.should_stop() is polled before every step and a true answer checkpoints (unless
    run.checkpoint_on_stop() says the run will not resume) and raises Cancelled (at the run's overall
    position, which the last progress event also shows)."""
    run = run if run is not None else Run(states=[state])
    t0 = time.perf_counter() - state.train_s  # so train_s keeps counting across pauses and resumes
    state.critic.train()

    def save():
        state.train_s = time.perf_counter() - t0
        if run.checkpoint is not None:
            run.checkpoint()

    while not state.done and state.step < until:
        if run.should_stop is not None and run.should_stop():
            if run.checkpoint_on_stop is None or run.checkpoint_on_stop():
                save()
            run.report(state, _read_objective(state, record=False), state.last_validation)
            raise Cancelled(run.position)
        train_step(state, schedule.lr_at(state.step))
        run.threads.poll()
        now = time.perf_counter()
        out_of_time = deadline is not None and now >= deadline
        paused = pause_at is not None and now >= pause_at
        validated = validation and (state.step % schedule.eval_every == 0 or state.step in (schedule.steps, until)
                                    or out_of_time or paused)
        if validated:
            validate(state, sides, schedule)
        if (state.step % schedule.progress_every == 0 or validated or state.step == schedule.steps
                or state.stopped_early or out_of_time or paused):
            objective = _read_objective(state)
            state.curve.append({"step": state.step, "objective": objective,
                                "validation": state.last_validation if validated else None,
                                "time_s": time.perf_counter() - t0})
            run.report(state, objective, state.last_validation)
        _mark_done(state, schedule, out_of_time)
        if run.checkpoint is not None and (state.step % schedule.checkpoint_every == 0 or state.done):
            save()
        if paused:
            break
    state.train_s = time.perf_counter() - t0


def _read_objective(state: TrainState, record: bool = True) -> float:
    """The training objective averaged since the last read (the one read-back, at progress points)."""
    mean = float(state.obj_sum) / max(state.obj_count, 1)
    if record:
        state.obj_sum.zero_()
        state.obj_count = 0
    return mean


def _mark_done(state: TrainState, schedule: Schedule, out_of_time: bool) -> None:
    if state.stopped_early:
        state.ended_by = "early stopping"
    elif state.step >= schedule.steps:
        state.ended_by = "steps"
    elif out_of_time:
        state.ended_by = "time budget"
    state.done = state.ended_by is not None
