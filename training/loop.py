"""Step 2b: the training loop of one critic.

The step itself is forward, loss, backward, optimizer.step (the critic's layers re-project their
parameters inside their own forward): nothing in it reads a number back to the host. The objective
is summed on the device and read at progress points; validation (which does read back) runs every
`eval_every` steps."""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from training.options import EstimateOptions
from training.result import Cancelled, ProgressEvent
from training.state import TrainState


def lr_at(opts: EstimateOptions, step: int) -> float:
    """The learning rate for training step `step` (0-based): a pure function, so resuming needs no state."""
    if opts.lr_schedule == "step" and opts.lr_decay_every:
        return opts.lr * opts.lr_decay_factor ** (step // opts.lr_decay_every)
    if opts.lr_schedule == "cosine":
        return opts.lr * 0.5 * (1 + math.cos(math.pi * step / opts.steps))
    return opts.lr


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


def train_step(state: TrainState, lr: float) -> None:
    """One step: maximise mean f(real) - mean f(fake) on one batch per side. No host sync."""
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    xr, xf = state.real.next(), state.fake.next()
    out = state.critic(torch.cat([xr, xf]))  # one forward: a BCOP kernel is built once per step
    objective = out[:len(xr)].mean() - out[len(xr):].mean()
    state.optimizer.zero_grad(set_to_none=True)
    (-objective).backward()
    state.optimizer.step()
    state.obj_sum += objective.detach().to(state.obj_sum.dtype)
    state.obj_count += 1
    state.step += 1


def validate(state: TrainState, real, fake, opts: EstimateOptions) -> float:
    """Validation estimate; keeps the best critic and counts evaluations without improvement."""
    value, _, _ = dual_value(state.critic, real, fake, "validation")
    state.last_validation = value
    if value > state.best_value + opts.min_delta * abs(state.best_value) or state.best_state is None:
        state.best_value, state.best_step, state.bad_evals = value, state.step, 0
        state.best_state = copy.deepcopy(state.critic.state_dict())
    else:
        state.bad_evals += 1
        if opts.early_stopping and state.bad_evals >= opts.patience:
            state.stopped_early = True
    return value


def train(state: TrainState, real, fake, opts: EstimateOptions, *, until: int, deadline: float | None = None,
          pause_at: float | None = None, validation: bool, progress: Callable[[ProgressEvent], None] | None = None,
          should_stop: Callable[[], bool] | None = None,
          checkpoint: Callable[[], None] | None = None) -> None:
    """Train `state` up to step `until` (<= opts.steps), early stopping, or time.perf_counter() >= deadline.

    The last two end the critic's training for good (`state.done`); reaching `until` < opts.steps or the
    time `pause_at` only pauses it (a candidate waiting for the selection, after its share of the budget).
    should_stop() is polled before every step and a true answer checkpoints and raises Cancelled."""
    t0 = time.perf_counter() - state.train_s  # so train_s keeps counting across pauses and resumes
    state.critic.train()

    def save():
        state.train_s = time.perf_counter() - t0
        if checkpoint is not None:
            checkpoint()

    while not state.done and state.step < until:
        if should_stop is not None and should_stop():
            save()
            raise Cancelled(state.step)
        train_step(state, lr_at(opts, state.step))
        now = time.perf_counter()
        out_of_time = deadline is not None and now >= deadline
        paused = pause_at is not None and now >= pause_at
        validated = validation and (state.step % opts.eval_every == 0 or state.step in (opts.steps, until)
                                    or out_of_time or paused)
        if validated:
            validate(state, real, fake, opts)
        if (state.step % opts.progress_every == 0 or validated or state.step == opts.steps or state.stopped_early
                or out_of_time or paused):
            mean_obj = float(state.obj_sum) / max(state.obj_count, 1)  # the one read-back, at progress points
            elapsed = time.perf_counter() - t0
            state.curve.append({"step": state.step, "objective": mean_obj,
                                "validation": state.last_validation if validated else None, "time_s": elapsed})
            state.obj_sum.zero_()
            state.obj_count = 0
            if progress is not None:
                progress(ProgressEvent(step=state.step, total=opts.steps, objective=mean_obj,
                                       estimate=state.last_validation, elapsed_s=elapsed, phase=state.name))
        state.done = state.stopped_early or state.step >= opts.steps or out_of_time
        if checkpoint is not None and (state.step % opts.checkpoint_every == 0 or state.done):
            save()
        if paused:
            break
    state.train_s = time.perf_counter() - t0
