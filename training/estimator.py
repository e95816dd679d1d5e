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
import itertools
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

from training.data import HeldOutSealed, Sides, folds_for, open_sides, pick_device, wants_validation
from training.loop import Run, Schedule, best_critic, dual_value, new_state, train
from training.options import EstimateOptions
from training.report import Statistics, legend, same_heldout, small_data_notes, stderr, training_notes
from training.result import CurvePoint, FoldRecord, ProgressEvent, SampleCounts, Selection, Timings, W1Result
from training.selection import SMALL_DATA, candidates, choose, selection_record
from training.state import CHECKPOINT_NAME, TrainState, load_checkpoint, save_checkpoint
from training.threads import ThreadWatch, choose_threads, recorded_openmp_waits, restores_threads

__all__ = ["estimate_w1", "finish", "pick_device", "HeldOutSealed", "CHECKPOINT_NAME"]


def _versions(threads: ThreadWatch | None = None) -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "unknown"
    return {"w1-service": version("w1-service"), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "openmp_waits": recorded_openmp_waits(),
            **(threads.record() if threads is not None else {"threads": str(torch.get_num_threads())})}


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
    selection_s: float = 0.0  # time spent choosing among several candidates
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


@restores_threads
def estimate_w1(real, fake, options: EstimateOptions | dict | None = None, *,
                progress: Callable[[ProgressEvent], None] | None = None,
                should_stop: Callable[[], bool] | None = None,
                checkpoint_dir: str | os.PathLike | None = None, latent=None, dist=None, output_range=None,
                checkpoint_on_stop: Callable[[], bool] | None = None, **overrides) -> W1Result:
    """Estimate W1(real, fake) with a trained 1-Lipschitz critic.

    `real`/`fake`: anything open_source accepts (spec string, SourceSpec, array: images or N×D vectors)
    or a SampleSource. `options` and keyword `overrides` give EstimateOptions. `progress(ProgressEvent)`
    is called every `progress_every` steps; `should_stop()` is polled between steps and a true answer
    raises Cancelled (after saving a checkpoint, unless `checkpoint_on_stop()`, asked then, says the run
    will not be resumed). With `checkpoint_dir`, the run checkpoints every `checkpoint_every` steps and
    resumes from a checkpoint it finds there.
    A side may also be a torch nn.Module or a callable z -> images: `latent` (its latent shape),
    `dist` and `output_range` describe it."""
    clock = Clock()
    threads = ThreadWatch()  # from here, so that its first reading covers the set-up
    given = EstimateOptions.build(options, **overrides)
    opts = given.resolved()
    _check(opts)
    sides = open_sides(real, fake, opts, latent=latent, dist=dist, output_range=output_range)  # 1. data
    folds = folds_for(opts, sides)
    if folds > 1:
        return cross_fit(sides, given, opts, folds, clock, progress=progress, should_stop=should_stop,
                         checkpoint_dir=checkpoint_dir, threads=threads, checkpoint_on_stop=checkpoint_on_stop)
    run = Run(progress, should_stop, planned=opts.steps, threads=threads, checkpoint_on_stop=checkpoint_on_stop)
    fitted = fit(sides, given, opts, run, clock, checkpoint_dir, deadline=clock.deadline(opts))  # 2.-3.
    clock.train_end = time.perf_counter()
    return report([fitted], opts, clock, run)  # 4. held-out estimate


@dataclasses.dataclass
class Fitted:
    """A final critic's training state and the split it reports on (cross-fitting: one per fold)."""

    state: TrainState
    sides: Sides
    selection: Selection | None = None


def use_thread_policy(states: list[TrainState], sides: Sides, opts: EstimateOptions, run: Run) -> None:
    """torch's intra-op threads for training these critics, as training.threads chooses them, watched by
    the run (given up to busy neighbours; the caller of estimate_w1 or a series gets its own back:
    restores_threads)."""
    run.threads.start(choose_threads([s.critic for s in states], sides.input_shape, opts.batch_size,
                                     sides.device.type))


def fit(sides: Sides, given: EstimateOptions, opts: EstimateOptions, run: Run, clock: Clock, checkpoint_dir,
        *, deadline: float | None) -> Fitted:
    """Steps 2 and 3 on one split: the candidates' critics, auto's choice on the validation split, and
    the winner's training to `steps`, early stopping or the deadline (held-out samples unread)."""
    states = [new_state(c, sides, opts) for c in candidates(given, opts, sides.input_shape, sides.train_samples)]
    use_thread_policy(states, sides, opts, run)
    run.states = states
    run.checkpoint = _checkpointing(checkpoint_dir, opts, sides, states, run)
    if clock.setup_end is None:
        clock.setup_end = time.perf_counter()
    start = time.perf_counter()
    winner = choose(states, sides, opts, run, deadline=deadline)  # validation only
    if len(states) > 1:
        clock.selection_s += time.perf_counter() - start
    train(winner, sides, Schedule.of(opts, winner.candidate), until=opts.steps, deadline=deadline,  # trains on
          validation=wants_validation(opts), run=run)
    return Fitted(winner, sides, selection_record(states, winner, sides, opts, run) if opts.critic == "auto" else None)


def cross_fit(sides: Sides, given: EstimateOptions, opts: EstimateOptions, folds: int, clock: Clock, *,
              progress=None, should_stop=None, checkpoint_dir=None, threads: ThreadWatch | None = None,
              checkpoint_on_stop=None) -> W1Result:
    """Cross-fitting: for each fold k of `folds`, a critic (chosen and trained as in a plain estimate, on
    the other folds only, fold k sealed) is fitted; once every critic is final, each is evaluated on its
    own fold and the values are pooled (Statistics.pooled). The time budget is shared equally by the
    folds still to run; each fold checkpoints in its own folder."""
    fitted: list[Fitted] = []
    deadline = clock.deadline(opts)
    run = Run(progress, should_stop, threads=threads or ThreadWatch(), checkpoint_on_stop=checkpoint_on_stop)
    for k in range(folds):
        fold_sides = open_sides(sides.real.source, sides.fake.source, opts, fold=(k, folds))
        run = Run(progress, should_stop, base=run.position, planned=run.position + opts.steps,
                  later=(folds - k - 1) * opts.steps, t0=run.t0, threads=run.threads,
                  checkpoint_on_stop=checkpoint_on_stop)
        now = time.perf_counter()
        fold_deadline = now + (deadline - now) / (folds - k) if deadline is not None else None
        fold_dir = Path(checkpoint_dir) / f"fold-{k}-of-{folds}" if checkpoint_dir is not None else None
        fitted.append(fit(fold_sides, given, opts, run, clock, fold_dir, deadline=fold_deadline))
    clock.train_end = time.perf_counter()
    return report(fitted, opts, clock, run)


def finish(state: TrainState, sides: Sides, opts: EstimateOptions, clock: Clock, *,
           selection: Selection | None = None, run: Run | None = None) -> W1Result:
    """Step 4 for one critic: its training is over (its best validated weights are the final ones);
    unseal the held-out samples, evaluate, certify, and build the result."""
    return report([Fitted(state, sides, selection)], opts, clock, run)


def _final_critic(fitted: Fitted, opts: EstimateOptions):
    """The critic a fitted state reports with (its best validated weights when early stopping keeps the
    best), loaded into the state's own module, in eval mode; then its held-out split is unsealed."""
    state = fitted.state
    critic = best_critic(state, bool(opts.early_stopping))
    if critic is not state.critic:
        state.critic.load_state_dict(critic.state_dict())
    if not all(bool(p.isfinite().all()) for p in state.critic.parameters()):
        raise ValueError(f"training diverged: the {state.name} critic's parameters are not finite after "
                         f"{state.step} steps; lower the learning rate (option lr)")
    state.critic.eval()
    fitted.sides.unseal()
    return state.critic


def report(fitted: list[Fitted], opts: EstimateOptions, clock: Clock, run: Run | None = None) -> W1Result:
    """Step 4: every critic is final; each is evaluated on its own held-out samples and certified, and
    the values give the estimate (pooled over folds when there are several)."""
    from critics import lipschitz_bound

    t_eval = time.perf_counter()
    if run is not None:
        last = fitted[-1].state
        run.planned, run.later = run.position, 0
        run.report(last, last.curve[-1]["objective"] if last.curve else 0.0, last.last_validation, phase="evaluation")
    evaluated = []
    for f in fitted:
        critic = _final_critic(f, opts)
        _, fr, ff = dual_value(critic, f.sides.real, f.sides.fake, "heldout")
        evaluated.append((critic, fr, ff, same_heldout(f.sides.real, f.sides.fake), lipschitz_bound(
            critic, f.sides.input_shape)))
    if len(evaluated) == 1:
        _, fr, ff, paired, cert = evaluated[0]
        stats = Statistics.of(fr, ff, paired, float(cert.bound), opts.confidence)
    else:
        stats = Statistics.pooled([(fr, ff, p, float(c.bound)) for _, fr, ff, p, c in evaluated], opts.confidence)
    fid = None
    if opts.fid:
        from training.fid import compute_fid
        fid = compute_fid(itertools.chain.from_iterable(f.sides.real.heldout_batches(raw=True) for f in fitted),
                          itertools.chain.from_iterable(f.sides.fake.heldout_batches(raw=True) for f in fitted),
                          opts.fid_weights, fitted[0].sides.device)
    return _result(fitted, evaluated, stats, fid, opts, clock, t_eval, run)


def _result(fitted, evaluated, stats: Statistics, fid, opts: EstimateOptions, clock: Clock, t_eval: float,
            run: Run | None) -> W1Result:
    from critics import orthogonality_error

    first, (critic, *_), state = fitted[0], evaluated[0], fitted[0].state
    sides = first.sides
    end = time.perf_counter()
    setup_end = clock.setup_end if clock.setup_end is not None else clock.start
    train_end = clock.train_end if clock.train_end is not None else t_eval
    steps = sum(f.state.step for f in fitted)
    train_s = sum(f.state.train_s for f in fitted)
    folds = None if len(fitted) == 1 else [FoldRecord(
        fold=k, real_heldout=len(fr), fake_heldout=len(ff), estimate=float(fr.mean() - ff.mean()),
        stderr=stderr(fr, ff, paired), lipschitz_bound=float(cert.bound),
        certified=float(fr.mean() - ff.mean()) / float(cert.bound), steps=f.state.step, critic=f.state.name)
        for k, (f, (_, fr, ff, paired, cert)) in enumerate(zip(fitted, evaluated))]
    notes = stats.notes() + [note for f in fitted
                             for note in training_notes(f.state.step, f.state.ended_by, opts, f.selection)]
    notes += small_data_notes(sides.train_samples, SMALL_DATA)
    if (opts.folds or 1) > 1 and (sides.real.is_generator or sides.fake.is_generator):
        notes.append(f"folds = {opts.folds} was asked for, but a generator side draws fresh held-out samples, so "
                     "there is no cross-fitting: one critic, evaluated on those samples.")
    result = W1Result(
        estimate=stats.estimate, stderr=stats.stderr, ci=stats.ci, confidence=opts.confidence,
        lipschitz_bound=stats.lipschitz_bound,
        lipschitz_layers=[_layer_dict(layer) for layer in evaluated[0][4].layers],
        certified_lower_bound=stats.certified, certified_ci=stats.certified_ci,
        lower_confidence_bound=stats.lower_confidence_bound,
        orthogonality_error=max(float(orthogonality_error(c)) for c, *_ in evaluated),
        samples=SampleCounts(real_train=sides.real.train_count(state.step),
                             real_heldout=sum(len(fr) for _, fr, *_ in evaluated),
                             fake_train=sides.fake.train_count(state.step),
                             fake_heldout=sum(len(ff) for _, _, ff, *_ in evaluated),
                             real_validation=sides.real.n_validation, fake_validation=sides.fake.n_validation),
        space=sides.space.describe(), sources=sides.sources, curve=[CurvePoint(**p) for p in state.curve],
        steps_run=steps, stopped_early=all(f.state.stopped_early for f in fitted),
        timings=Timings(train_s=train_end - setup_end, eval_s=end - t_eval, total_s=end - clock.start,
                        selection_s=clock.selection_s, setup_s=setup_end - clock.start,
                        steps_per_s=steps / train_s if train_s > 0 else None),
        device=str(sides.device), seed=opts.seed, options=opts.model_dump(mode="json"),
        versions=_versions(run.threads if run is not None else None),
        fid=fid, critic_spec=critic.spec, selection=first.selection, folds=folds, legend=legend(opts.confidence),
        notes=list(dict.fromkeys(notes)),
    )
    result._critics = [c for c, *_ in evaluated]
    return result
