"""The estimator's optimiser (training.loop.make_optimizer): Adam is torch's fused kernel, which writes
the parameters without bumping their version counters. The critics' layers rely on those counters
(re-projection after an optimiser step, the eval-mode kernel cache), so the optimiser bumps them."""
from __future__ import annotations

import torch

from critics import build_critic
from training.loop import make_optimizer
from training.options import EstimateOptions


def test_fused_adam_steps_are_seen_by_the_layers():
    torch.manual_seed(0)
    critic = build_critic("conv", (1, 8, 8))
    opt = make_optimizer(EstimateOptions(lr=5e-2).resolved(), critic.parameters())
    assert opt.defaults["fused"]
    bcop = critic[0]
    x = torch.rand(16, 1, 8, 8)
    critic.eval()
    before = bcop.weight
    critic.train()
    versions = [p._version for p in critic.parameters()]
    for _ in range(3):
        out = critic(x)
        loss = out[8:].mean() - out[:8].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert all(p._version > v for p, v in zip(critic.parameters(), versions))
    critic.eval()
    assert not torch.equal(bcop.weight, before)  # the eval cache was refreshed
    # and the training builds re-projected the drifted parameters: every applied matrix orthonormal
    critic.train()
    assert max(m.orthogonality_error() for m in critic.modules() if hasattr(m, "orthogonality_error")) < 1e-4
