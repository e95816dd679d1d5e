"""A generator in the caller's process (a torch nn.Module or a callable) as a source: how a metric is
called from inside a training loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training import SourceError, estimate_w1, open_source

FAST = dict(critic="fc", width=16, steps=20, batch_size=32, eval_every=10, device="cpu", eval_samples=200,
            validation_samples=64)


def tiny_generator() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Dropout(0.5), torch.nn.Tanh(),
                               torch.nn.Unflatten(1, (1, 8, 8)))


def test_module_runs_in_eval_mode_without_grad_and_keeps_its_mode():
    g = tiny_generator().train()
    src = open_source(g, latent=4)
    assert src.is_generator and src.shape == (1, 8, 8)
    x = src.sample(10, torch.Generator().manual_seed(1))
    assert g.training  # restored
    z = torch.randn((10, 4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = (g.eval()(z) + 1) / 2  # eval mode: dropout off; tanh range (-1, 1) -> [0, 1]
    torch.testing.assert_close(x, expected)
    assert not x.requires_grad and src.describe()["kind"] == "module"


def test_callable_returning_numpy_and_declared_range():
    def gen(z):
        return (z[:, :1, None, None].numpy() > 0).astype(np.float32).repeat(4, axis=2).repeat(4, axis=3)

    src = open_source(gen, latent=(3,), dist="uniform", output_range=(0, 1))
    x = src.sample(6, torch.Generator().manual_seed(0))
    assert x.shape == (6, 1, 4, 4) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert src.describe()["kind"] == "callable" and src.describe()["dist"] == "uniform"


def test_module_needs_a_latent_shape_and_latent_needs_a_generator():
    with pytest.raises(SourceError, match="latent shape"):
        open_source(tiny_generator())
    with pytest.raises(SourceError, match="module or callable"):
        open_source(np.zeros((4, 8, 8), np.uint8), latent=4)


def test_estimate_w1_against_a_module_inside_a_training_loop():
    """The README's loop: evaluate the generator every few steps; the generator's mode survives."""
    real = np.random.default_rng(0).integers(0, 128, size=(300, 1, 8, 8), dtype=np.uint8)
    g = tiny_generator().train()
    results = []
    for _ in range(2):
        results.append(estimate_w1(real, g, latent=4, **FAST))
        assert g.training
    assert all(r.sources["fake"]["kind"] == "module" for r in results)
    assert all(r.samples.fake_heldout == 200 for r in results)
    assert results[0].estimate == pytest.approx(results[1].estimate)  # same seed, same generator
