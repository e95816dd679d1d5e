"""Checkpoint series (training.series): validity across the whole series (the real split drawn once, each
fake its own, the carried critic never trains on a held-out sample, held-out sides read only once an
item's critic is final), auto's choice kept, the fallback to a cold start, checkpoint and resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training import Cancelled
from training.data import split_indices
from training.known_series import digits01, image_contraction
from training.options import EstimateOptions
from training.series import WarmStart, estimate_series
from training.series_result import steps_from_names
from training.sources import open_source
from training.sources.base import FiniteSource

SMALL = dict(critic="fc", width=32, steps=60, eval_every=20, seed=1, time_budget_s=0)


class Recording(FiniteSource):
    """A finite source that logs every read with the phase the series is in (a real array underneath)."""

    is_generator = False

    def __init__(self, data: np.ndarray, name: str, log: list, phase: list):
        self.inner, self.name, self.log, self.phase = open_source(data), name, log, phase
        self.shape = self.inner.shape

    def __len__(self) -> int:
        return len(self.inner)

    def read(self, indices) -> torch.Tensor:
        self.log.append((self.name, tuple(self.phase), np.asarray(indices).copy()))
        return self.inner.read(indices)

    def describe(self) -> dict:
        return {**self.inner.describe(), "name": self.name}


@pytest.fixture(scope="module")
def contraction():
    return image_contraction(digits01(400), "digits", s_values=(0.5, 0.6, 0.7))


def test_no_critic_of_the_series_trains_or_chooses_on_a_held_out_sample(contraction):
    """Reads are logged per item and phase ('train' until the item's evaluation event, then 'eval'):
    training and validation never touch a held-out index of the real side (the same for every item) nor of
    the item's own fake; an item reads no other item's fake; held-out samples are read only in 'eval'."""
    log, phase = [], ["setup", -1]
    real = Recording(contraction.real, "real", log, phase)
    # a fake of another size gets another split: the carried critic must still train on its train split only
    fakes = [Recording(f[: len(f) - 40 * k], f"fake{k}", log, phase) for k, f in enumerate(contraction.fakes)]

    def progress(event):
        if event.kind == "started" or (event.progress is not None and event.progress.phase != "evaluation"):
            phase[:] = ["train", event.index]
        elif event.progress is not None:
            phase[:] = ["eval", event.index]

    result = estimate_series(real, fakes, options=SMALL, progress=progress)
    assert [it.start for it in result.items] == ["cold", "warm", "warm"]
    opts = EstimateOptions(**SMALL).resolved()
    held = {"real": set(split_indices(len(real), opts, True)[0].tolist())}
    parts = {f"fake{k}": split_indices(len(f), opts, True) for k, f in enumerate(fakes)}
    held.update({name: set(p[0].tolist()) for name, p in parts.items()})
    shape_probe = lambda idx: len(idx) == 1 and idx[0] == 0  # open_sides reads sample 0 for the shape only
    for name, (kind, index), idx in log:
        if shape_probe(idx) or kind == "setup":
            continue
        if kind == "train":
            assert not held[name] & set(idx.tolist()), (name, index)
            assert name == "real" or name == f"fake{index}", (name, index)  # only this item's fake
        else:
            assert set(idx.tolist()) <= held[name], (name, index)
    evaluated = {(name, index) for name, (kind, index), _ in log if kind == "eval"}
    assert evaluated == {(n, k) for k in range(3) for n in ("real", f"fake{k}")}
    for k, item in enumerate(result.items):  # every item is evaluated on all of its held-out samples
        assert item.result.samples.real_heldout == len(held["real"])
        assert item.result.samples.fake_heldout == len(held[f"fake{k}"])


def test_auto_chooses_once_and_the_family_is_kept(contraction):
    options = dict(steps=200, eval_every=50, seed=0, time_budget_s=0)  # critic='auto' by default
    result = estimate_series(contraction.real, contraction.fakes[:2], options=options)
    first, second = result.items
    assert first.result.selection is not None and second.result.selection is None
    assert first.result.critic_spec == second.result.critic_spec
    assert result.critic == first.result.selection.chosen
    assert "first item's validation split" in result.critic_choice and "kept" in result.critic_choice
    assert second.start == "warm" and second.warm_validation is not None


def test_a_warm_start_that_validates_below_a_cold_trial_falls_back(contraction, known_answers):
    """The carried critic learned |x - c| on a contraction; the next fake is the real set shifted, which it
    ranks the wrong way round. Ten warm steps cannot undo that, a 40-step cold trial can: the item falls
    back to a cold start, says so, and reports the cold critic."""
    real = contraction.real * 0.8
    shifted = real + 0.15
    warm = WarmStart(steps=10, eval_every=5, cold_trial_steps=40, lr_factors=(1.0,))  # one rate: no race
    result = estimate_series(real, [contraction.fakes[0] * 0.8, shifted], options=SMALL, warm_start=warm)
    item = result.items[1]
    assert item.start == "fallback" and not item.warm_started
    assert item.cold_trial_validation > item.warm_validation and item.lead_se < 0
    assert item.steps_run == SMALL["steps"]  # the cold critic trained on to the estimate's own steps
    assert item.train_steps == item.steps_run + 10  # and the ten warm steps
    assert "fell back" in item.decision and item.decision in item.result.notes
    assert any("fell back" in note for note in result.notes)
    true_w1 = float(np.linalg.norm(np.full(real.shape[1:], 2 * 0.15)))
    known_answers.add("series: shifted after a contraction (fallback)", true_w1, item)
    assert item.lower_confidence_bound <= true_w1
    assert item.certified_lower_bound >= 0.9 * true_w1


def test_the_first_warm_item_races_the_rates_and_the_series_keeps_the_winner(contraction):
    warm = WarmStart(steps=40, eval_every=10, lr_factors=(1.0, 0.1))
    result = estimate_series(contraction.real, contraction.fakes[:3], options=SMALL, warm_start=warm)
    first, second = result.items[1], result.items[2]
    base = EstimateOptions.build(SMALL).resolved().lr
    assert first.warm_lr in (pytest.approx(base), pytest.approx(base * 0.1))
    assert "chosen for the series" in first.decision and f"lr {base:.2g}" in first.decision
    assert first.train_steps == 2 * 40 + warm.cold_trial_steps  # both rates trained in full, then the trial
    assert second.warm_lr == first.warm_lr and "chosen" not in second.decision
    assert second.train_steps == 40 + warm.cold_trial_steps
    # the winner is the rate whose critic validates higher: each rate alone gives the same critics
    alone = {f: estimate_series(contraction.real, contraction.fakes[:2], options=SMALL,
                                warm_start=WarmStart(steps=40, eval_every=10, lr_factors=(f,))).items[1]
             for f in (1.0, 0.1)}
    winner = max(alone, key=lambda f: alone[f].warm_validation)
    assert first.warm_lr == pytest.approx(base * winner)
    assert first.warm_validation == pytest.approx(alone[winner].warm_validation, rel=1e-5)


def test_a_killed_series_resumes_at_its_current_item_with_the_carried_critic(contraction, tmp_path):
    fakes, seen = contraction.fakes, []
    reference = estimate_series(contraction.real, fakes, options=SMALL)

    def stop_in_item_1(event):
        seen.append((event.kind, event.index))
        if event.kind == "training" and event.index == 1 and event.progress.step >= 30:
            stopping[0] = True

    stopping = [False]
    with pytest.raises(Cancelled):
        estimate_series(contraction.real, fakes, options=SMALL, progress=stop_in_item_1,
                        should_stop=lambda: stopping[0], checkpoint_dir=tmp_path)
    assert (tmp_path / "series.pt").exists() and (tmp_path / "item-1" / "checkpoint.pt").exists()
    seen.clear()
    resumed = estimate_series(contraction.real, fakes, options=SMALL, progress=lambda e: seen.append((e.kind, e.index)),
                              checkpoint_dir=tmp_path)
    assert ("started", 0) not in seen and ("started", 1) in seen  # item 0 came from the checkpoint
    for a, b in zip(reference.items, resumed.items):
        assert (a.start, a.steps_run, a.train_steps) == (b.start, b.steps_run, b.train_steps)
        assert a.estimate == pytest.approx(b.estimate, abs=1e-6) and a.stderr == pytest.approx(b.stderr, abs=1e-6)
    with pytest.raises(ValueError, match="other options"):  # a checkpoint of another series is refused
        estimate_series(contraction.real, fakes, options={**SMALL, "seed": 2}, checkpoint_dir=tmp_path)


def test_bad_arguments_are_clear_errors(contraction):
    real, fakes = contraction.real, contraction.fakes
    with pytest.raises(TypeError, match="list of sources"):
        estimate_series(real, fakes[0])
    with pytest.raises(TypeError, match="options=\\{'steps'"):
        estimate_series(real, fakes, steps=100)
    with pytest.raises(ValueError, match="2 labels for 3 fakes"):
        estimate_series(real, fakes, labels=["a", "b"])
    assert steps_from_names(["run/ckpt_012000.onnx", "g-5.npz", "onnx:dir/gen_300.onnx?latent=8"]) == [12000, 5, 300]
    with pytest.raises(ValueError, match="final.npz: no step number"):
        steps_from_names(["ckpt_1.npz", "final.npz"])
