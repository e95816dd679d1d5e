"""The estimator as a job runs it: options and presets, progress, cancellation, checkpoint + resume
(identical to an uninterrupted run), generator sides, result JSON, and the FID fallback."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sklearn.datasets import load_digits

from training import Cancelled, EstimateOptions, ProgressEvent, W1Result, estimate_w1
from training.sources import GeneratorSource

TINY = dict(critic="dcgan", width=8, steps=30, eval_every=10, checkpoint_every=10, progress_every=5)


@pytest.fixture(scope="module")
def digits_pair():
    """Digits in [0, 0.5] and a shifted copy; small enough for fast runs."""
    d = load_digits().images.astype(np.float32)[:400, None] / 32.0
    return d, d + 0.05


# ---- options -------------------------------------------------------------------------------------

def test_presets_fill_defaults_and_explicit_fields_win():
    paper = EstimateOptions(preset="paper").resolved()
    assert (paper.optimizer, paper.lr, paper.lr_schedule, paper.lr_decay_every) == ("rmsprop", 1e-4, "step", 6000)
    assert (paper.steps, paper.batch_size, paper.eval_samples) == (25600, 64, 6400)
    assert EstimateOptions(preset="paper", activation="relu").resolved().lr == 1e-3  # the paper's ReLU rate
    custom = EstimateOptions(preset="paper", lr=5e-4, steps=10).resolved()
    assert (custom.lr, custom.steps, custom.optimizer) == (5e-4, 10, "rmsprop")
    resolved = EstimateOptions().resolved()
    assert all(v is not None for k, v in resolved.model_dump().items()
               if k not in ("activation", "width", "fid_weights", "time_budget_s"))  # None: the critic's own


def test_options_are_validated_and_json_roundtrip():
    with pytest.raises(ValidationError):
        EstimateOptions(unknown_field=1)
    with pytest.raises(ValidationError):
        EstimateOptions(holdout=1.5)
    with pytest.raises(ValidationError):
        EstimateOptions(holdout=0)
    with pytest.raises(ValidationError):
        EstimateOptions(optimizer="sgd")
    # true where a number belongs (pydantic alone reads it as 1), and non-finite numbers (JSON's Infinity
    # would be stored as null: the preset's value) are refused; booleans stay booleans
    with pytest.raises(ValidationError, match="steps must be a number, not true"):
        EstimateOptions.model_validate_json('{"steps": true}')
    with pytest.raises(ValidationError, match="finite number"):
        EstimateOptions.model_validate_json('{"time_budget_s": Infinity}')
    assert EstimateOptions.model_validate_json('{"early_stopping": false, "steps": 2000.0}').steps == 2000
    opts = EstimateOptions(lr=3e-4, holdout=100, space={"value_range": (0, 1), "size": 8})
    back = EstimateOptions.model_validate_json(opts.model_dump_json())
    assert back == opts and back.holdout == 100 and isinstance(back.holdout, int)


def test_too_few_samples_is_a_clear_error():
    x = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="3 samples"):
        estimate_w1(x, x, **TINY)


# ---- running -------------------------------------------------------------------------------------

def test_progress_events_and_result_json(digits_pair):
    events: list[ProgressEvent] = []
    r = estimate_w1(*digits_pair, progress=events.append, **TINY)
    training = [e for e in events if e.phase == "training"]
    assert [e.step for e in training] == [5, 10, 15, 20, 25, 30]
    assert all(e.total == 30 and e.candidate == "dcgan" and e.candidate_step == e.step for e in training)
    assert training[-1].estimate is not None
    assert [(e.phase, e.step, e.total) for e in events[len(training):]] == [("evaluation", 30, 30)]
    assert r.steps_run == 30 and len(r.curve) == 6
    assert r.samples.real_train == 400 - 80 - 40 and r.samples.real_heldout == 80
    assert r.options["steps"] == 30 and r.options["optimizer"] == "adam"  # resolved options recorded
    assert set(r.versions) >= {"w1-service", "torch", "python", "numpy"}
    assert r.sources["real"]["count"] == 400 and r.device == "cpu"
    back = W1Result.from_json(r.to_json())
    assert back.estimate == r.estimate and back.ci == r.ci and back.curve == r.curve
    assert back.critic is None and r.critic is not None
    json.loads(r.to_json())


def test_same_seed_same_result_other_seed_differs(digits_pair):
    a = estimate_w1(*digits_pair, **{**TINY, "steps": 10})
    b = estimate_w1(*digits_pair, **{**TINY, "steps": 10})
    c = estimate_w1(*digits_pair, **{**TINY, "steps": 10}, seed=1)
    assert a.estimate == b.estimate
    assert c.estimate != a.estimate


def test_cancellation_is_prompt(digits_pair):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 3

    t0 = time.perf_counter()
    with pytest.raises(Cancelled) as info:
        estimate_w1(*digits_pair, should_stop=should_stop, **{**TINY, "steps": 10_000})
    assert info.value.step == 3
    assert time.perf_counter() - t0 < 20


def test_a_stop_that_will_not_resume_writes_no_checkpoint(digits_pair, tmp_path):
    """checkpoint_on_stop() is asked once should_stop() is true: False (a cancelled job) stops without
    writing one; True (a job requeued to resume) writes it. No periodic checkpoint runs here."""
    asked = []
    for resumes in (False, True):
        calls = []
        with pytest.raises(Cancelled):
            estimate_w1(*digits_pair, should_stop=lambda: calls.append(1) or len(calls) > 5,
                        checkpoint_on_stop=lambda r=resumes: asked.append(r) or r,
                        checkpoint_dir=tmp_path / str(resumes), **{**TINY, "steps": 10_000, "checkpoint_every": 10_000})
        assert (tmp_path / str(resumes) / "checkpoint.pt").exists() is resumes
    assert asked == [False, True]  # once per stop, not per step


def test_checkpoint_resume_equals_uninterrupted_run(digits_pair, tmp_path):
    """Cancel mid-run (a checkpoint is written on cancel), resume from it: the result and the critic
    must be exactly those of a run that was never interrupted."""
    full = estimate_w1(*digits_pair, checkpoint_dir=tmp_path / "full", **TINY)

    calls = []

    def stop_at_17():
        calls.append(1)
        return len(calls) == 18  # polled before step 18: 17 steps done

    with pytest.raises(Cancelled):
        estimate_w1(*digits_pair, should_stop=stop_at_17, checkpoint_dir=tmp_path / "resumed", **TINY)
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    resumed = estimate_w1(*digits_pair, checkpoint_dir=tmp_path / "resumed", **TINY)

    assert resumed.estimate == pytest.approx(full.estimate, abs=1e-6)
    assert resumed.stderr == pytest.approx(full.stderr, abs=1e-6)
    for (k, a), (_, b) in zip(full.critic.state_dict().items(), resumed.critic.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), k
    assert [p.step for p in resumed.curve] == [p.step for p in full.curve]
    for a, b in zip(resumed.curve, full.curve):
        assert a.objective == pytest.approx(b.objective, abs=1e-6)
        assert a.validation == pytest.approx(b.validation, abs=1e-6)

    # a finished run's checkpoint is reused as is; one made with other options is refused
    again = estimate_w1(*digits_pair, checkpoint_dir=tmp_path / "full", **TINY)
    assert again.estimate == full.estimate
    with pytest.raises(ValueError, match="other options"):
        estimate_w1(*digits_pair, checkpoint_dir=tmp_path / "full", **{**TINY, "lr": 0.1})


def test_generator_sides_draw_fresh_heldout_samples(known_answers):
    """Two generators: real = images U[0, 0.5]^64, fake = the same plus u: W1 = |2u| in [-1, 1]."""
    u = torch.full((1, 1, 8, 8), 0.05)

    def make(shift):
        return GeneratorSource(lambda z: 0.5 * z.view(-1, 1, 8, 8) + shift, what="test generator",
                               info={"kind": "test"}, latent=(64,), dist="uniform", output_range=(0.0, 1.0))

    r = estimate_w1(make(0.0), make(u), critic="dcgan", width=8, steps=300, lr=3e-3,
                    early_stopping=False, eval_samples=2000, validation_samples=500)
    true_w1 = float((2 * u).norm())
    known_answers.add("generators, shift |2u| = 0.8 (300 steps)", true_w1, r)
    assert r.samples.real_heldout == r.samples.fake_heldout == 2000
    assert r.samples.real_train == 64 * r.steps_run
    assert r.estimate <= true_w1 + (r.ci[1] - r.estimate)
    assert r.certified_lower_bound >= 0.9 * true_w1


def test_fid_without_weights_is_a_note_not_a_failure(digits_pair, tmp_path):
    r = estimate_w1(*digits_pair, fid=True, fid_weights=str(tmp_path / "missing.pth"), **{**TINY, "steps": 5})
    assert r.fid is not None and r.fid.value is None
    assert "FID not computed" in r.fid.note


def test_equal_size_sides_share_heldout_indices_and_keep_an_honest_error(digits_pair):
    """Equal-size sides are split by the same permutation, so a set against itself is evaluated on the
    same images (estimate exactly 0); the error bar still covers unpaired sampling (it is not 0)."""
    real, _ = digits_pair
    r = estimate_w1(real, real.copy(), **{**TINY, "steps": 3})
    assert r.estimate == 0.0
    assert r.stderr > 0 and r.ci[0] < 0 < r.ci[1]
