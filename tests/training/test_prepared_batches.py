"""Training and validation samples of a finite side are read and mapped into the input space once
(training.data.PREPARED_BYTES): the batches are the very ones the per-step path reads, in the same
order, across epochs, with a resize in the space, and after a checkpoint resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import training.data as data
from training.data import Side
from training.options import EstimateOptions
from training.sources import open_source
from training.space import InputSpace


def side_and_space(resize: bool) -> Side:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(150, 10, 10, 3), dtype=np.uint8)  # N x H x W x C, as decoded files
    src = open_source(images)
    space = InputSpace(size=8, resize="bilinear", channels=1) if resize else InputSpace()
    opts = EstimateOptions(batch_size=32, seed=3).resolved()
    return Side(src, 1, space.resolve(src.shape, src.shape), opts, torch.device("cpu"), want_validation=True)


@pytest.mark.parametrize("resize", [False, True])
def test_prepared_batches_are_the_batches_read_per_step(resize, monkeypatch):
    side = side_and_space(resize)
    stream = side.stream()
    cached = [stream.next() for _ in range(9)]  # over two epochs of the 105 training samples
    cached_validation = list(side.validation_batches())
    assert side._prepared  # the prepared path ran
    state = stream.state_dict()
    after = [stream.next() for _ in range(3)]

    monkeypatch.setattr(data, "PREPARED_BYTES", 0)  # nothing fits: every batch read and mapped per step
    fresh = side_and_space(resize)
    stream = fresh.stream()
    per_step = [stream.next() for _ in range(9)]
    assert not fresh._prepared
    for a, b in zip(cached, per_step):
        assert torch.equal(a, b)
    for a, b in zip(cached_validation, fresh.validation_batches()):
        assert torch.equal(a, b)
    stream.load_state_dict(state)
    for a in after:
        assert torch.equal(a, stream.next())
