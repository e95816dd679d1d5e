"""Checks that need a CUDA device (skipped without one; bench/cuda_service_check.py runs them on the
GPU machine): BCOP orthogonal on the GPU (float64 spectra of the applied kernel), critic training
steps that never synchronise with the host (torch.cuda.set_sync_debug_mode raises on any implicit
sync), and a small estimate end to end on CUDA."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from critics import build_critic
from critics.bcop import BCOPConv2d

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def frequency_singular_values(kernel: torch.Tensor, n: int = 8) -> torch.Tensor:
    k = torch.fft.fft2(kernel.detach().double().cpu(), s=(n, n))
    return torch.linalg.svdvals(k.permute(2, 3, 0, 1))


@pytest.mark.parametrize("k,s,ci,co", [(1, 1, 8, 16), (3, 1, 16, 16), (5, 1, 32, 12), (4, 2, 3, 64),
                                       (4, 2, 256, 512)])
def test_bcop_orthogonal_on_gpu(k, s, ci, co):
    torch.manual_seed(0)
    layer = BCOPConv2d(ci, co, k, s).cuda()
    opt = torch.optim.Adam(layer.parameters(), lr=3e-3)
    x = torch.randn(8, ci, 16, 16, device="cuda")
    for _ in range(6):
        sv = frequency_singular_values(layer.weight)
        assert (sv - 1).abs().max().item() < 1e-4
        layer(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
    layer.eval()
    assert (frequency_singular_values(layer.weight) - 1).abs().max().item() < 1e-4


@pytest.mark.parametrize("name,conv,shape,width", [("dcgan", "bcop", (3, 32, 32), 32), ("dcgan", "rko", (3, 32, 32), 32),
                                                   ("dcgan", "ossn", (3, 32, 32), 32), ("fc", "bcop", (3, 32, 32), None)])
def test_training_steps_never_synchronise(name, conv, shape, width):
    torch.manual_seed(0)
    critic = build_critic(name, shape, conv=conv, width=width).cuda()
    opt = torch.optim.Adam(critic.parameters(), lr=3e-3, betas=(0.5, 0.999))
    x = torch.rand(128, *shape, device="cuda") * 2 - 1

    def step():
        out = critic(x)
        loss = out[64:].mean() - out[:64].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_small_estimate_on_cuda():
    from sklearn.datasets import load_digits

    from training import estimate_w1

    digits = load_digits().images.astype(np.float32)[:, None] / 16.0 * 0.5
    u = np.random.default_rng(0).random((1, 1, 8, 8)).astype(np.float32)
    u *= 4.0 / (2 * np.linalg.norm(u))
    true_w1 = float(np.linalg.norm(2 * u.astype(np.float64)))
    r = estimate_w1(digits, digits + u, critic="dcgan", width=16, steps=400, seed=1, device="cuda")
    assert r.device.startswith("cuda")
    assert r.certified_ci[0] <= true_w1 and r.certified_lower_bound >= 0.95 * true_w1
