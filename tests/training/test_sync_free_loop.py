"""estimate_w1's training loop reads nothing back from the device per step: a run of 8 steps makes
exactly as many host reads as a run of 4 (the fused Adam included); all other reads are in setup,
reports and evaluation. The re-projection's device rule is forced with `sync_free()` (the CPU decides
it on the host)."""
from __future__ import annotations

import numpy as np
import pytest

from critics.orthogonal import sync_free
from training import estimate_w1


def reads_in_run(counter, steps: int, critic: str) -> list[str]:
    rng = np.random.default_rng(0)
    real = rng.random((96, 1, 8, 8), dtype=np.float32)
    fake = (0.5 * rng.random((96, 1, 8, 8), dtype=np.float32)) ** 2
    opts = dict(critic=critic, width=8 if critic == "dcgan" else 32, steps=steps, batch_size=16, seed=0,
                early_stopping=False, validation=0, progress_every=10_000, device="cpu")
    with counter() as reads, sync_free():
        estimate_w1(real, fake, **opts)
    return reads.seen


@pytest.mark.parametrize("critic", ["dcgan", "fc"])
def test_training_steps_add_no_host_reads(critic, host_reads):
    short, long = reads_in_run(host_reads, 4, critic), reads_in_run(host_reads, 8, critic)
    # the default Adam is fused (training.loop.make_optimizer): its step counters are tensors it never reads
    assert len(long) == len(short), (len(short), len(long))
