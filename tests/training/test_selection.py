"""critic='auto', the honest headline and vectors: the choice reads only the validation split (the
held-out samples are read after every training and validation read), every candidate is recorded,
the lower confidence bound is the one-sided bound computed independently, a negative value comes
with an explanation, and N×D vectors with value_range='none' are accepted and get the FC family."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from training import W1Result, estimate_w1
from training.data import HeldOutSealed, Side, open_sides, split_indices
from training.loop import Run, Schedule, new_state, train
from training.options import EstimateOptions
from training.report import Statistics, small_data_notes
from training.selection import (MARGIN_SE, SMALL_DATA, SMALL_DATA_MARGIN_SE, Candidate, Score, auto_candidates,
                                choose, keep_first_on_small_data, score, selection_record)
from training.sources import open_source
from training.sources.base import ArraySource
from training.space import InputSpace

FAST = dict(steps=80, eval_every=20, batch_size=32, progress_every=20)


class RecordingSource(ArraySource):
    """A real array source that logs the indices of every read, in order."""

    def __init__(self, data: np.ndarray):
        super().__init__(data, what="recorded array", info={"kind": "array"})
        self.reads: list[np.ndarray] = []

    def read(self, indices):
        self.reads.append(np.asarray(indices).copy())
        return super().read(indices)


@pytest.fixture(scope="module")
def scaled_digits():
    """Digits in [0, 1] and the same contracted toward their mean: a non-linear optimal critic."""
    from sklearn.datasets import load_digits

    x = load_digits().images[:600, None].astype(np.float32) / 16.0
    c = x.mean(axis=0, keepdims=True)
    return x, (c + 0.6 * (x - c)).astype(np.float32)


def test_auto_reads_heldout_only_after_the_choice(scaled_digits):
    real, fake = RecordingSource(scaled_digits[0]), RecordingSource(scaled_digits[1])
    r = estimate_w1(real, fake, **FAST)
    opts = EstimateOptions(**FAST).resolved()
    heldout = set(split_indices(len(real), opts, True)[0].tolist())
    for src in (real, fake):
        touches = [bool(heldout & set(idx.tolist())) for idx in src.reads]
        first = touches.index(True)  # the held-out samples are read at all...
        assert all(touches[first:]), "a training/validation read came after a held-out read"
        # ...and only in reads that are entirely held out (never mixed into a training batch)
        assert all(set(idx.tolist()) <= heldout for idx in src.reads[first:])
    # every candidate was trained and recorded; the winner has the highest certified validation value,
    # or (small data: 600 samples here) is the first candidate, kept because the leader's lead was small
    sel = r.selection
    assert sel is not None and [c.name for c in sel.candidates] == [c.name for c in auto_candidates((1, 8, 8))]
    assert len(sel.candidates) == 2 and all(c.validation is not None and c.train_s > 0 for c in sel.candidates)
    best = max(sel.candidates, key=lambda c: c.validation)
    kept = "so the first candidate is kept" in sel.reason
    assert sel.chosen == (sel.candidates[0].name if kept else best.name)
    assert r.critic_spec == next(c.spec for c in sel.candidates if c.name == sel.chosen)
    # when and why: at a validation round within the trial, every loser's trial ended then
    assert 0 < sel.decided_at_step <= sel.trial_steps and sel.decided_at_step % FAST["eval_every"] == 0
    assert sel.reason.startswith(f"{sel.chosen} chosen at step {sel.decided_at_step}")
    for c in sel.candidates:
        if c.name != sel.chosen:
            assert c.trial_ended_at == c.steps == sel.decided_at_step and (c.behind_se < 0) == kept
            assert (c.behind_se >= MARGIN_SE) == ("its lead reached the margin" in sel.reason)
    assert r.options["critic"] == "auto" and r.timings.selection_s > 0 and r.timings.steps_per_s > 0
    back = W1Result.from_json(r.to_json())
    assert back.selection == sel and back.lower_confidence_bound == r.lower_confidence_bound


def test_heldout_is_sealed_until_unsealed(scaled_digits):
    opts = EstimateOptions(**FAST).resolved()
    space = InputSpace().resolve((1, 8, 8), (1, 8, 8))
    side = Side(open_source(scaled_digits[0]), 0, space, opts, torch.device("cpu"), True)
    with pytest.raises(HeldOutSealed):
        next(side.heldout_batches())
    side.unseal()
    assert next(side.heldout_batches()).shape[1:] == (1, 8, 8)


def test_auto_refuses_options_that_would_not_apply(scaled_digits):
    with pytest.raises(ValueError, match="width applies to a named critic"):
        estimate_w1(*scaled_digits, width=16, **FAST)
    with pytest.raises(ValueError, match="conv applies to a named critic"):
        estimate_w1(*scaled_digits, conv="rko", **FAST)
    with pytest.raises(ValueError, match="conv and width apply to a named critic"):
        estimate_w1(*scaled_digits, conv="rko", width=16, **FAST)


def test_resolved_default_options_run_as_they_are(scaled_digits):
    """The service stores resolved options (conv="bcop" filled in) and its worker runs them: auto
    must accept its own resolved form, and choose as it would from the bare defaults."""
    from training.options import EstimateOptions

    stored = EstimateOptions(**FAST).resolved()
    assert stored.critic == "auto" and stored.conv == "bcop"
    r = estimate_w1(*scaled_digits, stored)
    assert r.selection is not None and len(r.selection.candidates) == 2
    assert r.estimate == estimate_w1(*scaled_digits, **FAST).estimate


def test_lower_confidence_bound_is_the_one_sided_bound(scaled_digits):
    r = estimate_w1(*scaled_digits, critic="fc", width=64, **FAST)
    z = norm.ppf(r.confidence)
    assert r.lower_confidence_bound == pytest.approx(max(0.0, (r.estimate - z * r.stderr) / r.lipschitz_bound))
    assert 0 < r.lower_confidence_bound < r.certified_lower_bound
    assert set(r.legend) >= {"lower_confidence_bound", "certified_lower_bound", "estimate", "stderr"}
    labels = [label for label, _ in r.summary_rows()]
    assert labels[0].startswith("W1 >= (95% lower confidence bound)")


def test_a_negative_value_is_explained():
    rng = np.random.default_rng(0)
    fr, ff = rng.normal(0.0, 1.0, 500), rng.normal(0.3, 1.0, 500)  # mean f(real) < mean f(fake)
    stats = Statistics.of(fr, ff, paired=False, lipschitz=1.0, confidence=0.95)
    assert stats.certified < 0 and stats.lower_confidence_bound == 0.0
    notes = " ".join(stats.notes())
    assert "is negative" in notes and "never negative" in notes
    assert ("whole interval lies below 0" in notes) == (stats.certified_ci[1] < 0)


def test_a_small_data_estimate_says_what_to_expect():
    """The note appears under SMALL_DATA training samples on a side, names the count, and never for more
    samples or a generator side (unlimited); an estimate on 600 a side carries it."""
    assert small_data_notes(None, SMALL_DATA) == [] and small_data_notes(SMALL_DATA, SMALL_DATA) == []
    (note,) = small_data_notes(630, SMALL_DATA)
    assert note.startswith("Small data: 630 training samples on a side") and "valid lower bound" in note
    x = np.random.default_rng(0).random((600, 1, 8, 8)).astype(np.float32)
    r = estimate_w1(x, x[::-1] * 0.5, critic="fc", **FAST)
    assert r.samples.real_train < SMALL_DATA
    assert [n for n in r.notes if n.startswith("Small data")] == small_data_notes(r.samples.real_train, SMALL_DATA)


def test_vectors_keep_their_values_and_get_the_fc_family(known_answers):
    """64-d Gaussians (values far outside [-1, 1]) and the same shifted by v: W1 = |v| = 3."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 64)).astype(np.float32)
    v = np.zeros(64, np.float32)
    v[:4] = 1.5
    y = rng.standard_normal((1000, 64)).astype(np.float32) + v
    with pytest.raises(ValueError, match="value_range='none'"):
        open_source(x)
    r = estimate_w1(x, y, space={"value_range": "none"}, steps=200, eval_every=50)
    assert r.space["value_range"] == "none" and r.space["size"] == [1, 64]
    assert r.selection is not None and [c.spec["name"] for c in r.selection.candidates] == ["fc"]
    true_w1 = float(np.linalg.norm(v))
    known_answers.add("64-d Gaussians + v, |v| = 3 (200 steps)", true_w1, r)
    assert r.estimate <= true_w1 + (r.ci[1] - r.estimate)
    assert r.certified_lower_bound >= 0.9 * true_w1, (r.certified_lower_bound, true_w1)


def test_time_budget_ends_training_and_reports_timings(scaled_digits):
    r = estimate_w1(*scaled_digits, critic="fc", width=32, steps=10**6, early_stopping=False,
                    eval_every=50, time_budget_s=1.0)
    assert 0 < r.steps_run < 10**6 and r.timings.steps_per_s > 0
    assert r.options["time_budget_s"] == 1.0


def test_a_time_budget_pauses_the_candidates_and_the_winner_trains_on(scaled_digits):
    """With a budget the candidates share half of what is left after setup: each pauses at its share
    (it does not end), and the winner trains on after the choice with the rest, so it trains about
    three times as long as the loser (the loser's trial only)."""
    r = estimate_w1(*scaled_digits, steps=10**6, early_stopping=False, eval_every=10, time_budget_s=6.0)
    records = {c.name: c for c in r.selection.candidates}
    winner = records.pop(r.selection.chosen)
    (loser,) = records.values()
    assert winner.train_s > 1.8 * loser.train_s, (winner, loser)
    assert r.steps_run == winner.steps


def test_auto_resumes_from_a_checkpoint_exactly(scaled_digits, tmp_path):
    """Cancelled during the second candidate's trial, resumed: the same choice, the same result."""
    from training import Cancelled

    opts = dict(steps=40, eval_every=10, batch_size=32, progress_every=10, checkpoint_every=5)
    full = estimate_w1(*scaled_digits, checkpoint_dir=tmp_path / "full", **opts)
    calls = []

    def stop_in_second_trial():
        calls.append(1)
        return len(calls) == 14  # first trial: 10 steps (polled 10 times), then 3 steps of the second

    with pytest.raises(Cancelled):
        estimate_w1(*scaled_digits, should_stop=stop_in_second_trial, checkpoint_dir=tmp_path / "cut", **opts)
    resumed = estimate_w1(*scaled_digits, checkpoint_dir=tmp_path / "cut", **opts)
    assert resumed.selection.chosen == full.selection.chosen
    assert [c.validation for c in resumed.selection.candidates] == [c.validation for c in full.selection.candidates]
    assert resumed.estimate == full.estimate and resumed.stderr == full.stderr
    for (k, a), (_, b) in zip(full.critic.state_dict().items(), resumed.critic.state_dict().items()):
        assert torch.equal(a, b), k


def test_a_candidate_far_behind_is_out_after_one_round_and_the_winner_runs_as_alone(scaled_digits):
    """A critic of width 2 against one of width 64: after one round of eval_every steps the wide one
    leads by far more than MARGIN_SE standard errors, the narrow one's trial ends there, and the
    winner's training is exactly that of the same critic trained alone."""
    opts = EstimateOptions(critic="auto", steps=150, eval_every=50, batch_size=32).resolved()
    sides = open_sides(*scaled_digits, opts)
    cands = [Candidate("narrow", critic="fc", width=2, options={"group_size": 2, "depth": 1}),
             Candidate("wide", critic="fc", width=64)]
    states = [new_state(c, sides, opts) for c in cands]
    events = []
    run = Run(progress=events.append, states=states, planned=opts.steps)
    winner = choose(states, sides, opts, run, deadline=None)
    assert winner.name == "wide" and [s.step for s in states] == [50, 50]
    train(winner, sides, Schedule.of(opts), until=opts.steps, validation=True, run=run)
    sel = selection_record(states, winner, sides, opts, run)
    narrow, wide = sel.candidates
    assert sel.decided_at_step == 50 and sel.margin_se >= MARGIN_SE and "lead reached the margin" in sel.reason
    assert narrow.trial_ended_at == narrow.steps == 50 and narrow.behind_se == sel.margin_se
    assert wide.steps == 150 and wide.validation > narrow.validation + MARGIN_SE * narrow.validation_stderr
    phases = [(e.phase, e.candidate) for e in events]
    assert sorted(set(phases), key=phases.index) == [("selection", "narrow"), ("selection", "wide"),
                                                     ("training", "wide")]
    positions = [e.step for e in events]
    assert positions == sorted(positions) and positions[-1] == 200 and events[-1].total == 200

    alone = new_state(cands[1], sides, opts)
    train(alone, sides, Schedule.of(opts), until=opts.steps, validation=True)
    for (k, a), b in zip(winner.critic.state_dict().items(), alone.critic.state_dict().values()):
        assert torch.equal(a, b), k


def test_auto_resumes_after_the_choice_exactly(scaled_digits, tmp_path):
    """Cancelled while the winner trains on after the choice, resumed: the choice stands as it was
    made (the race is part of the checkpoint) and the result equals the uninterrupted run's."""
    from training import Cancelled

    opts = dict(steps=60, eval_every=10, batch_size=32, progress_every=10, checkpoint_every=5)
    full = estimate_w1(*scaled_digits, checkpoint_dir=tmp_path / "full", **opts)
    trial_positions = sum(c.trial_ended_at or 0 for c in full.selection.candidates) + full.selection.decided_at_step
    calls = []
    with pytest.raises(Cancelled) as info:
        estimate_w1(*scaled_digits, should_stop=lambda: calls.append(1) or len(calls) > trial_positions + 7,
                    checkpoint_dir=tmp_path / "cut", **opts)
    assert info.value.step == trial_positions + 7
    resumed = estimate_w1(*scaled_digits, checkpoint_dir=tmp_path / "cut", **opts)
    assert resumed.selection == full.selection.model_copy(update={"candidates": resumed.selection.candidates})
    assert [c.validation for c in resumed.selection.candidates] == [c.validation for c in full.selection.candidates]
    assert resumed.estimate == full.estimate and resumed.steps_run == full.steps_run


def test_the_result_says_when_the_budget_bound_it_and_when_the_critic_barely_trained(scaled_digits):
    bound = estimate_w1(*scaled_digits, critic="fc", width=32, steps=10**6, eval_every=50, time_budget_s=1.0)
    notes = " ".join(bound.notes)
    assert f"The time budget (1 s; --time, time_budget_s) ended training at step {bound.steps_run} of 1000000" in notes
    assert ("barely trained" in notes) == (bound.steps_run < 200)
    short = estimate_w1(*scaled_digits, critic="fc", width=32, steps=30, eval_every=10)
    assert any("trained only 30 steps" in n for n in short.notes)
    assert not any("time budget" in n for n in short.notes)
    done = estimate_w1(*scaled_digits, critic="fc", width=32, steps=250, eval_every=50)
    assert not any("trained only" in n or "time budget" in n for n in done.notes)
    assert EstimateOptions().resolved().time_budget_s == 600  # the default estimate is bounded
    assert EstimateOptions(preset="paper").resolved().time_budget_s == 0  # the paper's protocol is not


def test_on_small_data_the_race_compares_current_critics(scaled_digits):
    """Under SMALL_DATA training samples the race scores each candidate's critic as it is (a memorising
    candidate's best validation value is a noise peak, training.selection.race_on_current_critics);
    with more data its best validated critic. The recorded scores are those of the critics compared."""
    for n, compared in ((600, "current"), (1800, "best")):
        real, fake = (np.concatenate([x] * 3)[:n] for x in scaled_digits)
        opts = EstimateOptions(critic="auto", steps=200, eval_every=50, batch_size=32).resolved()
        sides = open_sides(real, fake, opts)
        assert (sides.train_samples < SMALL_DATA) == (compared == "current")
        states = [new_state(Candidate(f"fc{w}", critic="fc", width=w), sides, opts) for w in (16, 32)]
        run = Run(states=states, planned=opts.steps)
        winner = choose(states, sides, opts, run, deadline=None)
        race = run.extra["race"]
        assert race["compared"] == compared
        for s in states:
            value = score(s, sides, opts, current=compared == "current").value
            assert race["scores"][s.name]["validation"] == pytest.approx(value, abs=1e-9)
        sel = selection_record(states, winner, sides, opts, run)
        assert sel.reason.endswith("not their best validated ones") == (compared == "current")


def test_on_small_data_the_first_candidate_is_kept_unless_another_leads_it_by_the_margin():
    """keep_first_on_small_data: a leader ahead of the first candidate by less than SMALL_DATA_MARGIN_SE
    standard errors of the paired difference does not pass it over on small data; by more it does, and
    with enough data (race on best critics) or a first candidate already out the rule never applies."""
    rng = np.random.default_rng(0)
    real, fake = rng.normal(1.0, 1.0, 90), rng.normal(0.0, 1.0, 90)
    first = Score(real, fake, 1.0)
    noise_r, noise_f = rng.normal(0, 0.5, 90), rng.normal(0, 0.5, 90)
    leads = {}
    for shift in (0.0, 0.05, 0.1, 0.2, 0.4):  # moves the leader's value up by `shift`, spread unchanged
        leader = Score(real + noise_r + shift, fake + noise_f, 1.0)
        leads[shift] = leader.lead(first, True)
        states = [type("S", (), {"name": n})() for n in ("first", "leader")]
        scores = {"first": first, "leader": leader}
        for compared, out in (("current", {}), ("best", {}), ("current", {"first": {}})):
            kept = keep_first_on_small_data(states, scores, {"compared": compared, "out": out}, states[1], True)
            applies = compared == "current" and not out and leads[shift] < SMALL_DATA_MARGIN_SE
            assert (kept is not None) == applies
            if applies:
                assert kept == pytest.approx(leads[shift])
        assert keep_first_on_small_data(states, scores, {"compared": "current", "out": {}}, states[0], True) is None
    assert min(leads.values()) < SMALL_DATA_MARGIN_SE < max(leads.values())  # both branches ran


def test_a_small_data_race_follows_the_first_candidate_rule():
    """On real small-data races (600 digits against 600 others contracted by 0.9, unpaired) the winner is
    the first candidate unless it was passed over by a lead of at least SMALL_DATA_MARGIN_SE (recomputed
    here from the critics as they are), and the result says when the rule overrode the leader. Two
    orders of the same two candidates: the leader first, and the leader second (kept out by the rule)."""
    from sklearn.datasets import load_digits

    x = load_digits().images[:600, None].astype(np.float32) / 16.0
    c = x.mean(axis=0, keepdims=True)
    real, fake = x, (c + 0.9 * (x[::-1] - c)).astype(np.float32)
    overridden = []
    for lrs in ((1e-3, 3e-3), (3e-3, 1e-3)):
        opts = EstimateOptions(critic="auto", steps=200, eval_every=50, batch_size=32).resolved()
        sides = open_sides(real, fake, opts)
        assert sides.train_samples < SMALL_DATA
        states = [new_state(Candidate(f"lr{lr:g}", critic="fc", width=32, lr=lr), sides, opts) for lr in lrs]
        run = Run(states=states, planned=opts.steps)
        winner = choose(states, sides, opts, run, deadline=None)
        scores = {s.name: score(s, sides, opts, current=True) for s in states}
        leader = max(states, key=lambda s: scores[s.name].value)
        lead_over_first = scores[leader.name].lead(scores[states[0].name], True) if leader is not states[0] else 0.0
        passed_over = lead_over_first >= SMALL_DATA_MARGIN_SE or states[0].name in run.extra["race"]["out"]
        assert winner is (leader if passed_over else states[0])
        reason = selection_record(states, winner, sides, opts, run).reason
        assert ("so the first candidate is kept" in reason) == (winner is not leader)
        overridden.append(winner is not leader)
    assert overridden == [False, True]  # this data exercises both branches (leads of 1.5 SE here)
