"""The W1 estimator, in named steps:

1. data       (training.data)      split each side into train / validation / held-out; held-out sealed
2. training   (training.loop, training.state)  train each critic; its state is one object with
              state_dict(), checkpointed so a resumed run equals the uninterrupted one
3. selection  (training.selection) critic="auto": candidates trained for a trial, the best certified
              validation value wins and continues; only then is the held-out split unsealed
4. report     (training.report)    held-out estimate, stderr, intervals, certified bound, lower
              confidence bound, notes
5. plot       (training.plot)      the training curve

`estimate_w1` runs steps 1-4 in that order; the CLI and the job service draw step 5."""
from __future__ import annotations

import copy
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

from training.data import HeldOutSealed, Side, open_for_space, pick_device
from training.loop import dual_value, make_optimizer, train
from training.options import PRESETS, EstimateOptions
from training.report import Statistics, legend, same_heldout
from training.result import CandidateRecord, ProgressEvent, SampleCounts, Selection, Timings, W1Result, CurvePoint
from training.selection import TRIAL_SHARE, Candidate, auto_candidates, trial_steps
from training.state import CHECKPOINT_NAME, TrainState, load_checkpoint, save_checkpoint
from training.threads import apply_threads, choose_threads, restores_threads

__all__ = ["estimate_w1", "pick_device", "HeldOutSealed", "CHECKPOINT_NAME"]


def _versions() -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "unknown"
    return {"w1-service": version("w1-service"), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "threads": str(torch.get_num_threads())}


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


def _candidates(given: EstimateOptions, opts: EstimateOptions, input_shape) -> list[Candidate]:
    """The named critic, or auto's candidates (then conv/activation/width/critic_options must be unset:
    they would silently not apply)."""
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


def _certified_choice_value(state: TrainState, opts: EstimateOptions, input_shape) -> tuple[float | None, float | None]:
    """(validation value / L, L) of the critic this candidate would report with: the best one when
    early stopping keeps the best, else the current one."""
    from critics import lipschitz_bound

    keep_best = opts.early_stopping and state.best_state is not None
    value = state.best_value if keep_best else state.last_validation
    if value is None or value == -float("inf"):
        return None, None
    critic = state.critic
    if keep_best:
        critic = copy.deepcopy(critic)
        critic.load_state_dict(state.best_state)
    bound = float(lipschitz_bound(critic, input_shape).bound)
    return value / bound, bound


@restores_threads
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
    from critics import build_critic, lipschitz_bound, orthogonality_error

    t_start = time.perf_counter()
    given = EstimateOptions.build(options, **overrides)
    opts = given.resolved()
    deadline = t_start + opts.time_budget_s if opts.time_budget_s else None
    auto = opts.critic == "auto"
    if opts.early_stopping and opts.validation == 0:
        raise ValueError("early stopping needs a validation split: set validation > 0 or early_stopping=False")
    if auto and opts.validation == 0:
        raise ValueError("critic='auto' chooses on a validation split: set validation > 0 or name a critic")
    want_validation = auto or bool(opts.early_stopping) or opts.validation > 0

    # 1. data
    generator = dict(latent=latent, dist=dist, output_range=output_range)
    real_src, fake_src = (open_for_space(side, opts.space, **(generator if callable(side) else {}))
                          for side in (real, fake))
    space = opts.space.resolve(real_src.shape, fake_src.shape)
    device = pick_device(opts.device)
    real_side = Side(real_src, 0, space, opts, device, want_validation)
    fake_side = Side(fake_src, 1, space, opts, device, want_validation)
    input_shape = tuple(real_side.example().shape[1:])
    if tuple(fake_side.example().shape[1:]) != input_shape:
        raise ValueError(f"real and fake map to different shapes in the input space: {input_shape} vs "
                         f"{tuple(fake_side.example().shape[1:])}")
    sources = {"real": real_src.describe(), "fake": fake_src.describe()}

    # 2. one training state per critic (all built before a checkpoint is loaded into them)
    states = []
    for cand in _candidates(given, opts, input_shape):
        torch.manual_seed(opts.seed)  # every candidate starts as it would alone
        critic = build_critic(cand.critic, input_shape, conv=cand.conv, activation=cand.activation,
                              width=cand.width, **cand.options).to(device)
        states.append(TrainState(cand.name, critic, make_optimizer(opts, critic.parameters()),
                                 real_side.stream(), fake_side.stream()))
    apply_threads(choose_threads([s.critic for s in states], input_shape, opts.batch_size, device.type))
    fingerprint = _fingerprint(opts, sources)
    ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.exists():
        blob = load_checkpoint(ckpt, fingerprint, device)
        for state, saved in zip(states, blob["states"]):
            state.load_state_dict(saved)

    def checkpoint():
        if ckpt is not None:
            save_checkpoint(ckpt, fingerprint, states, {})

    run = dict(progress=progress, should_stop=should_stop, checkpoint=checkpoint)

    # 3. selection (validation only; the held-out sides are still sealed)
    t_select = time.perf_counter()
    selection = None
    if len(states) > 1:
        trial = trial_steps(opts)
        # of the budget left after setup, TRIAL_SHARE goes to the trials (equally), the rest to the winner
        share = TRIAL_SHARE * max(deadline - t_select, 0.0) / len(states) if deadline is not None else None
        for i, state in enumerate(states):
            until_t = t_select + share * (i + 1) if share is not None else None  # unused time passes on
            train(state, real_side, fake_side, opts, until=trial, pause_at=until_t, validation=True, **run)
        records = []
        for state in states:
            value, bound = _certified_choice_value(state, opts, input_shape)
            records.append(CandidateRecord(name=state.name, spec=state.critic.spec, validation=value,
                                           lipschitz_bound=bound, steps=state.step, train_s=state.train_s,
                                           stopped_early=state.stopped_early))
        scored = [i for i, r in enumerate(records) if r.validation is not None]
        winner = states[max(scored, key=lambda i: records[i].validation) if scored else 0]
        selection = Selection(chosen=winner.name, candidates=records, trial_steps=trial)
    else:
        winner = states[0]
    selection_s = time.perf_counter() - t_select if selection is not None else 0.0

    # the winner continues to `steps` (with the rest of the time budget)
    train(winner, real_side, fake_side, opts, until=opts.steps, deadline=deadline, validation=want_validation, **run)
    if selection is not None:
        for record, state in zip(selection.candidates, states):
            record.steps, record.train_s = state.step, state.train_s
    elif auto:  # one candidate for this input shape: recorded all the same
        value, bound = _certified_choice_value(winner, opts, input_shape)
        selection = Selection(chosen=winner.name, trial_steps=0, candidates=[CandidateRecord(
            name=winner.name, spec=winner.critic.spec, validation=value, lipschitz_bound=bound, steps=winner.step,
            train_s=winner.train_s, stopped_early=winner.stopped_early)])
    train_s = time.perf_counter() - t_select

    # 4. report, on the held-out samples, now unsealed
    t_eval = time.perf_counter()
    critic = winner.critic
    if opts.early_stopping and winner.best_state is not None:
        critic.load_state_dict(winner.best_state)
    critic.eval()
    real_side.unseal()
    fake_side.unseal()
    _, fr, ff = dual_value(critic, real_side, fake_side, "heldout")
    cert = lipschitz_bound(critic, input_shape)
    stats = Statistics.of(fr, ff, same_heldout(real_side, fake_side), float(cert.bound), opts.confidence)
    fid = None
    if opts.fid:
        from training.fid import compute_fid
        fid = compute_fid(real_side.heldout_batches(raw=True), fake_side.heldout_batches(raw=True),
                          opts.fid_weights, device)
    eval_s = time.perf_counter() - t_eval

    result = W1Result(
        estimate=stats.estimate, stderr=stats.stderr, ci=stats.ci, confidence=opts.confidence,
        lipschitz_bound=stats.lipschitz_bound, lipschitz_layers=[_layer_dict(layer) for layer in cert.layers],
        certified_lower_bound=stats.certified, certified_ci=stats.certified_ci,
        lower_confidence_bound=stats.lower_confidence_bound,
        orthogonality_error=float(orthogonality_error(critic)),
        samples=SampleCounts(real_train=real_side.train_count(winner.step), real_heldout=len(fr),
                             fake_train=fake_side.train_count(winner.step), fake_heldout=len(ff),
                             real_validation=real_side.n_validation, fake_validation=fake_side.n_validation),
        space=space.describe(), sources=sources, curve=[CurvePoint(**p) for p in winner.curve],
        steps_run=winner.step, stopped_early=winner.stopped_early,
        timings=Timings(train_s=train_s, eval_s=eval_s, total_s=time.perf_counter() - t_start,
                        selection_s=selection_s, setup_s=t_select - t_start,
                        steps_per_s=winner.step / winner.train_s if winner.train_s > 0 else None),
        device=str(device), seed=opts.seed, options=opts.model_dump(mode="json"), versions=_versions(), fid=fid,
        critic_spec=critic.spec, selection=selection, notes=stats.notes(), legend=legend(opts.confidence),
    )
    result._critic = critic
    return result
