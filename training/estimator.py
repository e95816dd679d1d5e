"""The W1 estimator, in named steps:

1. data       (training.data)      split each side into train / validation / held-out; held-out sealed
2. training   (training.loop, training.state)  train each critic; its state is one object with
              state_dict(), checkpointed so a resumed run equals the uninterrupted one
3. selection  (training.selection) critic="auto": candidates trained for a trial, the best certified
              validation value wins and continues; only then is the held-out split unsealed
4. report     (training.report)    held-out estimate, stderr, intervals, certified bound, lower
              confidence bound, notes
5. plot       (training.plot)      the training curve

`estimate_w1` runs steps 1-4 in that order; the CLI and the job service draw step 5.

The same steps train one critic from a given start (a checkpoint series, issue 13):

    sides = open_sides(real_src, fake_k, opts)            # the real split is the same for every item
    state = new_state(candidate, sides, opts, critic_state=prev.critic.state_dict(),
                      optimizer_state=prev.optimizer.state_dict())
    train(state, sides, schedule, until=schedule.steps, validation=True, run=Run(states=[state]))
    result = finish(state, sides, opts, Clock())          # unseals, evaluates, certifies"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.data import HeldOutSealed, Sides, open_sides, pick_device, wants_validation
from training.loop import Run, Schedule, best_critic, dual_value, new_state, train
from training.options import EstimateOptions
from training.report import Statistics, legend, same_heldout, training_notes
from training.result import CurvePoint, ProgressEvent, SampleCounts, Selection, Timings, W1Result
from training.selection import candidates, choose, selection_record
from training.state import CHECKPOINT_NAME, TrainState, load_checkpoint, save_checkpoint

__all__ = ["estimate_w1", "finish", "pick_device", "HeldOutSealed", "CHECKPOINT_NAME"]


def _versions() -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "unknown"
    return {"w1-service": version("w1-service"), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _layer_dict(layer) -> dict[str, Any]:
    if dataclasses.is_dataclass(layer):
        return dataclasses.asdict(layer)
    if hasattr(layer, "model_dump"):
        return layer.model_dump()
    if hasattr(layer, "_asdict"):
        return dict(layer._asdict())
    return {k: getattr(layer, k) for k in ("name", "kind", "bound", "method") if hasattr(layer, k)}


def _fingerprint(opts: EstimateOptions, sources: dict) -> str:
    """What a checkpoint must match to be resumed: options that change the run, and the sources."""
    relevant = opts.model_dump(mode="json", exclude={"device", "checkpoint_every", "progress_every", "fid",
                                                     "fid_weights", "time_budget_s"})
    blob = json.dumps({"options": relevant, "sources": sources}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclasses.dataclass
class Clock:
    """When the estimate started, and when setup and training ended (perf_counter seconds)."""

    start: float = dataclasses.field(default_factory=time.perf_counter)
    setup_end: float | None = None
    chosen: float | None = None  # when auto's choice was made (several candidates only)
    train_end: float | None = None

    def deadline(self, opts: EstimateOptions) -> float | None:
        return self.start + opts.time_budget_s if opts.time_budget_s else None


def _check(opts: EstimateOptions) -> None:
    if opts.early_stopping and opts.validation == 0:
        raise ValueError("early stopping needs a validation split: set validation > 0 or early_stopping=False")
    if opts.critic == "auto" and opts.validation == 0:
        raise ValueError("critic='auto' chooses on a validation split: set validation > 0 or name a critic")


def _checkpointing(checkpoint_dir, opts: EstimateOptions, sides: Sides, states: list[TrainState], run: Run):
    """Resume `states` (and the selection's state, run.extra) from checkpoint_dir when a checkpoint of
    this run is there; return the function that saves them."""
    if checkpoint_dir is None:
        return None
    ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME
    fingerprint = _fingerprint(opts, sides.sources)
    if ckpt.exists():
        blob = load_checkpoint(ckpt, fingerprint, sides.device)
        for state, saved in zip(states, blob["states"]):
            state.load_state_dict(saved)
        run.extra.update(blob["extra"])
    return lambda: save_checkpoint(ckpt, fingerprint, states, run.extra)


def estimate_w1(real, fake, options: EstimateOptions | dict | None = None, *,
                progress: Callable[[ProgressEvent], None] | None = None,
                should_stop: Callable[[], bool] | None = None,
                checkpoint_dir: str | os.PathLike | None = None, latent=None, dist=None, output_range=None,
                **overrides) -> W1Result:
    """Estimate W1(real, fake) with a trained 1-Lipschitz critic.

    `real`/`fake`: anything open_source accepts (spec string, SourceSpec, array: images or N×D vectors)
    or a SampleSource. `options` and keyword `overrides` give EstimateOptions. `progress(ProgressEvent)`
    is called every `progress_every` steps; `should_stop()` is polled between steps and a true answer
    raises Cancelled (after saving a checkpoint). With `checkpoint_dir`, the run checkpoints every
    `checkpoint_every` steps and resumes from a checkpoint it finds there.
    A side may also be a torch nn.Module or a callable z -> images: `latent` (its latent shape),
    `dist` and `output_range` describe it."""
    clock = Clock()
    given = EstimateOptions.build(options, **overrides)
    opts = given.resolved()
    _check(opts)
    sides = open_sides(real, fake, opts, latent=latent, dist=dist, output_range=output_range)  # 1. data
    states = [new_state(c, sides, opts) for c in candidates(given, opts, sides.input_shape)]  # 2. critics
    run = Run(progress, should_stop, states=states, planned=opts.steps)
    run.checkpoint = _checkpointing(checkpoint_dir, opts, sides, states, run)
    clock.setup_end = time.perf_counter()
    deadline = clock.deadline(opts)
    winner = choose(states, sides, opts, run, deadline=deadline)  # 3. selection (validation only)
    clock.chosen = time.perf_counter() if len(states) > 1 else None
    train(winner, sides, Schedule.of(opts), until=opts.steps, deadline=deadline,  # the winner trains on
          validation=wants_validation(opts), run=run)
    selection = selection_record(states, winner, sides, opts, run) if opts.critic == "auto" else None
    clock.train_end = time.perf_counter()
    return finish(winner, sides, opts, clock, selection=selection, run=run)  # 4. report (held-out)


def finish(state: TrainState, sides: Sides, opts: EstimateOptions, clock: Clock, *,
           selection: Selection | None = None, run: Run | None = None) -> W1Result:
    """Step 4: the critic `state` reports with (its best validated weights when early stopping keeps
    the best) is final: unseal the held-out samples, evaluate, certify, and build the result."""
    from critics import lipschitz_bound, orthogonality_error

    t_eval = time.perf_counter()
    if run is not None:
        run.planned = run.position
        objective = state.curve[-1]["objective"] if state.curve else 0.0
        run.report(state, objective, state.last_validation, phase="evaluation")
    critic = best_critic(state, bool(opts.early_stopping))
    if critic is not state.critic:
        state.critic.load_state_dict(critic.state_dict())
        critic = state.critic
    critic.eval()
    sides.unseal()
    _, fr, ff = dual_value(critic, sides.real, sides.fake, "heldout")
    cert = lipschitz_bound(critic, sides.input_shape)
    stats = Statistics.of(fr, ff, same_heldout(sides.real, sides.fake), float(cert.bound), opts.confidence)
    fid = None
    if opts.fid:
        from training.fid import compute_fid
        fid = compute_fid(sides.real.heldout_batches(raw=True), sides.fake.heldout_batches(raw=True),
                          opts.fid_weights, sides.device)
    end = time.perf_counter()
    setup_end = clock.setup_end if clock.setup_end is not None else clock.start
    train_end = clock.train_end if clock.train_end is not None else t_eval
    selection_s = clock.chosen - clock.setup_end if clock.chosen is not None else 0.0
    result = W1Result(
        estimate=stats.estimate, stderr=stats.stderr, ci=stats.ci, confidence=opts.confidence,
        lipschitz_bound=stats.lipschitz_bound, lipschitz_layers=[_layer_dict(layer) for layer in cert.layers],
        certified_lower_bound=stats.certified, certified_ci=stats.certified_ci,
        lower_confidence_bound=stats.lower_confidence_bound,
        orthogonality_error=float(orthogonality_error(critic)),
        samples=SampleCounts(real_train=sides.real.train_count(state.step), real_heldout=len(fr),
                             fake_train=sides.fake.train_count(state.step), fake_heldout=len(ff),
                             real_validation=sides.real.n_validation, fake_validation=sides.fake.n_validation),
        space=sides.space.describe(), sources=sides.sources, curve=[CurvePoint(**p) for p in state.curve],
        steps_run=state.step, stopped_early=state.stopped_early,
        timings=Timings(train_s=train_end - setup_end, eval_s=end - t_eval, total_s=end - clock.start,
                        selection_s=selection_s, setup_s=setup_end - clock.start,
                        steps_per_s=state.step / state.train_s if state.train_s > 0 else None),
        device=str(sides.device), seed=opts.seed, options=opts.model_dump(mode="json"), versions=_versions(),
        fid=fid, critic_spec=critic.spec, selection=selection, legend=legend(opts.confidence),
        notes=stats.notes() + training_notes(state.step, state.ended_by, opts, selection),
    )
    result._critic = critic
    return result
