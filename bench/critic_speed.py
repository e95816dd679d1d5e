"""Critic training/eval speed: the paper's Wasserstein critic with different convolutions, side by side.

Network (self-contained here, not critics.build_critic): 64x64x3 input, four stages of
(pixel unshuffle by 2, circular-padded 2x2 conv) to 64, 128, 256, 512 channels, MaxMin after each,
flatten (8192), unit-norm linear to 1. A train step is 64 real + 64 fake images in one forward,
loss mean f(fake) - mean f(real), backward, RMSprop step. Eval is a no-grad forward of 128 images
in eval mode. Everything is reported as a ratio to plain nn.Conv2d measured in the same run.

    python3 bench/critic_speed.py --device cpu            # writes bench/results/critic_speed-cpu-<date>.{json,md}
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from critics.bcop import BCOPConv2d  # noqa: E402
from critics.conv import LipschitzConv2d  # noqa: E402
from critics.orthogonal import bjorck, bjorck_step  # noqa: E402

WIDTHS = (64, 128, 256, 512)


# ---------------------------------------------------------------- the network
class MaxMin(nn.Module):
    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=1)


class UnitLinear(nn.Module):
    """Linear map to 1 output with a unit-norm weight (the Björck case of a single row)."""

    def __init__(self, n):
        super().__init__()
        self.v = nn.Parameter(torch.randn(n) / n ** 0.5)

    def forward(self, x):
        return x.flatten(1) @ (self.v / self.v.norm())


class Unshuffled(nn.Module):
    """Pixel unshuffle by 2, circular pad (0, 1, 0, 1), then a 2x2 stride-1 conv without padding."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(F.pad(F.pixel_unshuffle(x, 2), (0, 1, 0, 1), mode="circular"))


def critic(make_stage) -> nn.Module:
    layers, c = [], 3
    for w in WIDTHS:
        layers += [make_stage(c, w), MaxMin()]
        c = w
    return nn.Sequential(*layers, UnitLinear(c * 4 * 4))


# ---------------------------------------------------------------- the convolutions
def plain(c_in, c_out):
    return Unshuffled(nn.Conv2d(4 * c_in, c_out, 2))


def ours(c_in, c_out, **kw):
    return BCOPConv2d(c_in, c_out, kernel_size=4, stride=2, **kw)


class NoRetractBCOP(BCOPConv2d):
    """Ablation: our factorisation (c_out x c_in' M, c x c/2 R's, loop-free composition) but the
    classical Björck: Frobenius scaling and `bjorck_iters` differentiable iterations from scratch."""

    def _factors(self, mutate):
        return bjorck(self.ortho, self.bjorck_iters), bjorck(self.proj, self.bjorck_iters)


class PaperBCOP(LipschitzConv2d):
    """Faithful re-implementation of the paper's algorithm (LConvNet): c x c Björck x20 on full
    matrices for H and for every projector (keeping c/2 columns), explicit 2x2 blocks composed by a
    loop over taps, then the first c_out rows / c_in' columns."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, iters=20):
        super().__init__(in_channels, out_channels, kernel_size, stride, bias=True)
        c = self.c = max(self.effective_in_channels, out_channels)
        k = self.effective_kernel_size
        self.iters = iters
        self.h = nn.Parameter(torch.linalg.qr(torch.randn(c, c))[0])
        self.p = nn.Parameter(torch.linalg.qr(torch.randn(2 * (k - 1), c, c))[0])

    def build_weight(self):
        c, k = self.c, self.effective_kernel_size
        h = bjorck(self.h, self.iters)
        eye = torch.eye(c)
        kernel = h[:, :, None, None]
        for j in range(k - 1):
            rp = bjorck(self.p[2 * j], self.iters)[:, : c // 2]
            rq = bjorck(self.p[2 * j + 1], self.iters)[:, : c // 2]
            p, q = rp @ rp.T, rq @ rq.T
            block = [[p @ q, p @ (eye - q)], [(eye - p) @ q, (eye - p) @ (eye - q)]]
            kk = kernel.shape[-1]
            new = [[torch.zeros(c, c) for _ in range(kk + 1)] for _ in range(kk + 1)]
            for a in range(kk):
                for b in range(kk):
                    for u in range(2):
                        for v in range(2):
                            new[a + u][b + v] = new[a + u][b + v] + kernel[:, :, a, b] @ block[u][v]
            kernel = torch.stack([torch.stack(row, -1) for row in new], -2)
        return kernel[: self.out_channels, : self.effective_in_channels].contiguous()


def orthogonium_conv(c_in, c_out):
    from orthogonium.layers.conv.AOC.fast_block_ortho_conv import FastBlockConv2d
    return Unshuffled(FastBlockConv2d(4 * c_in, c_out, 2, padding=0, padding_mode="zeros"))


def torchlip_conv(c_in, c_out):
    from deel.torchlip import SpectralConv2d
    return Unshuffled(SpectralConv2d(4 * c_in, c_out, 2))


VARIANTS = {
    "plain nn.Conv2d": (plain, "no"),
    "ours: BCOPConv2d": (ours, "yes"),
    "paper-bcop (c x c Björck x20, loop composition)": (lambda a, b: PaperBCOP(a, b, 4, 2), "yes"),
    "orthogonium 0.0.4 FastBlockConv2d": (orthogonium_conv, "yes"),
    "deel-torchlip 1.0.5 SpectralConv2d": (torchlip_conv, "no (bound only)"),
}

ABLATION = {
    "ours (retraction + 1 differentiable step)": lambda a, b: ours(a, b),
    "ours, 3 differentiable steps": lambda a, b: ours(a, b, bjorck_iters=3),
    "no retraction: c x c/2 factors, Björck x20 from scratch": lambda a, b: NoRetractBCOP(a, b, 4, 2, bjorck_iters=20),
    "paper-bcop: c x c Björck x20, loop composition": lambda a, b: PaperBCOP(a, b, 4, 2),
}


# ---------------------------------------------------------------- timing
def time_train(model, device, steps, warmup, lr):
    opt = torch.optim.RMSprop(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 3, 64, 64, generator=g).to(device) * 2 - 1
    fake = torch.rand(64, 3, 64, 64, generator=g).to(device) * 2 - 1
    model.train()
    times = []
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        out = model(torch.cat([real, fake]))
        loss = out[64:].mean() - out[:64].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def time_eval(model, device, steps, warmup):
    x = torch.rand(128, 3, 64, 64, generator=torch.Generator().manual_seed(1)).to(device)
    model.eval()
    times = []
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        model(x)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    model.train()
    return statistics.median(times)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def max_orth_error(model):
    errs = [m.orthogonality_error() for m in model.modules() if hasattr(m, "orthogonality_error")]
    return max(errs) if errs else None


def measure(name, make_stage, device, args):
    try:
        torch.manual_seed(0)
        model = critic(make_stage).to(device)
    except Exception as exc:  # a missing optional package is reported, not fatal
        return {"name": name, "available": False, "error": f"{type(exc).__name__}: {exc}"}
    train = time_train(model, device, args.steps, args.warmup, args.lr)
    ev = time_eval(model, device, args.steps, args.warmup)
    row = {"name": name, "available": True, "train_s": train, "eval_s": ev, "orth_error": max_orth_error(model)}
    print(f"  {name}: train {train * 1e3:.1f} ms, eval {ev * 1e3:.1f} ms", flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    rows = [measure(n, f, device, args) | {"orthogonal": o} for n, (f, o) in VARIANTS.items()]
    ablation = [] if args.no_ablation else [measure(n, f, device, args) for n, f in ABLATION.items()]
    base = rows[0]
    for r in rows + ablation:
        if r["available"]:
            r["train_ratio"] = r["train_s"] / base["train_s"]
            r["eval_ratio"] = r["eval_s"] / base["eval_s"]

    now = dt.datetime.now(dt.timezone.utc)
    meta = {"date": now.isoformat(timespec="seconds"), "device": args.device,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
            "threads": args.threads if device.type == "cpu" else None, "torch": torch.__version__,
            "python": platform.python_version(), "steps": args.steps, "warmup": args.warmup, "lr": args.lr,
            "batch": "64 real + 64 fake, 3x64x64", "versions": package_versions()}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"critic_speed-{args.device}-{now:%Y-%m-%d}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows, "ablation": ablation}, indent=2))
    stem.with_suffix(".md").write_text(markdown(meta, rows, ablation))
    print(markdown(meta, rows, ablation))
    print(f"wrote {stem}.json and .md")


def package_versions():
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for p in ("orthogonium", "deel-torchlip"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def markdown(meta, rows, ablation):
    lines = [f"# Critic speed, {meta['device']} ({meta['device_name']}), {meta['date']}", "",
             f"torch {meta['torch']}, threads {meta['threads']}, {meta['batch']}, RMSprop lr {meta['lr']}, "
             f"median of {meta['steps']} steps after {meta['warmup']} warm-up.", "",
             "| implementation | train step | vs plain | eval (128 imgs) | vs plain | orthogonal | max orth. error |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(fmt(r, r.get("orthogonal", "")))
    if ablation:
        lines += ["", "## Ablation: what each optimisation of BCOPConv2d buys", "",
                  "| variant | train step | vs plain | eval (128 imgs) | vs plain | orthogonal | max orth. error |",
                  "|---|---|---|---|---|---|---|"]
        lines += [fmt(r, "yes") for r in ablation]
    return "\n".join(lines) + "\n"


def fmt(r, orth):
    if not r["available"]:
        return f"| {r['name']} | unavailable: {r['error']} | | | | {orth} | |"
    err = "" if r.get("orth_error") is None else f"{r['orth_error']:.1e}"
    return (f"| {r['name']} | {r['train_s'] * 1e3:.0f} ms | {r['train_ratio']:.2f}x | {r['eval_s'] * 1e3:.0f} ms | "
            f"{r['eval_ratio']:.2f}x | {orth} | {err} |")


if __name__ == "__main__":
    main()
