"""The steps of estimate_w1 as separate calls, as a checkpoint series uses them: the real side's split
is the same for every fake, a critic starts from a given critic and optimiser state and trains with a
schedule of its own, and only `finish` reads the held-out samples."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from training.data import HeldOutSealed, open_sides
from training.estimator import Clock, finish, estimate_w1
from training.loop import Run, Schedule, new_state, train
from training.options import EstimateOptions
from training.selection import candidates


@pytest.fixture(scope="module")
def digits():
    x = load_digits().images[:500, None].astype(np.float32) / 16.0
    c = x.mean(axis=0, keepdims=True)
    return x, (c + 0.7 * (x - c)).astype(np.float32), (c + 0.8 * (x[::-1] - c)).astype(np.float32)


def test_a_warm_started_critic_trains_on_a_new_fake_with_its_own_schedule(digits):
    real, fake1, fake2 = digits
    given = EstimateOptions(critic="fc", width=32, steps=40, eval_every=20, seed=3)
    opts = given.resolved()
    sides1, sides2 = open_sides(real, fake1, opts), open_sides(real, fake2, opts)
    for part in ("train", "validation", "heldout"):  # the real split is fixed across items
        assert torch.equal(getattr(sides1.real, part), getattr(sides2.real, part))
    (cand,) = candidates(given, opts, sides1.input_shape)

    first = new_state(cand, sides1, opts)
    train(first, sides1, Schedule.of(opts), until=opts.steps, validation=True)
    with pytest.raises(HeldOutSealed):  # training and validation never touched the held-out samples
        next(sides2.real.heldout_batches())

    warm = new_state(cand, sides2, opts, critic_state=first.critic.state_dict(),
                     optimizer_state=first.optimizer.state_dict())
    assert warm.step == 0 and warm.best_state is None
    for a, b in zip(first.critic.parameters(), warm.critic.parameters()):
        assert torch.equal(a, b)
    schedule = dataclasses.replace(Schedule.of(opts), lr=3e-4, lr_schedule="constant", steps=30, eval_every=10)
    events = []
    train(warm, sides2, schedule, until=schedule.steps, validation=True, run=Run(progress=events.append, states=[warm]))
    assert warm.step == 30 and warm.ended_by == "steps"
    assert all(g["lr"] == 3e-4 for g in warm.optimizer.param_groups)
    assert [e.candidate_step for e in events if e.estimate is not None][-1] == 30

    result = finish(warm, sides2, opts, Clock())
    assert result.steps_run == 30 and result.critic_spec["name"] == "fc"
    assert result.samples.real_heldout == len(sides2.real.heldout)
    cold = estimate_w1(real, fake2, given)  # a cold estimate of the same item is another critic
    assert cold.estimate != result.estimate
