"""Quick correctness check of BCOPConv2d on a CUDA device: per-frequency singular values (float64 FFT)
before and after optimiser steps, and the train/eval kernels agreeing. Run: python3 bench/cuda_check.py"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from critics.bcop import BCOPConv2d  # noqa: E402

dev = torch.device("cuda")
worst = 0.0
for k, s, ci, co in [(1, 1, 8, 16), (3, 1, 16, 16), (5, 1, 32, 12), (4, 2, 3, 64), (4, 2, 256, 512)]:
    layer = BCOPConv2d(ci, co, k, s).to(dev)
    opt = torch.optim.RMSprop(layer.parameters(), lr=1e-3)
    x = torch.randn(8, ci, 16, 16, device=dev)
    for step in range(6):
        w = layer.weight
        sv = torch.linalg.svdvals(torch.fft.fft2(w.detach().double(), s=(8, 8)).permute(2, 3, 0, 1))
        worst = max(worst, (sv - 1).abs().max().item())
        layer(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
    layer.eval()
    torch.testing.assert_close(layer.weight, BCOPConv2d.build_weight(layer))
    print(f"k={k} s={s} {ci}->{co}: worst |sigma-1| so far {worst:.2e}, orth error {layer.orthogonality_error():.1e}")
assert worst < 1e-4, worst
print("CUDA BCOP orthogonality OK")
