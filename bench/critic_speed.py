"""Critic training/eval speed: the paper's Wasserstein critic with different convolutions, side by side.

Network (self-contained here, not critics.build_critic): 64x64x3 input, four stages of
(pixel unshuffle by 2, circular-padded 2x2 conv) to 64, 128, 256, 512 channels, MaxMin after each,
flatten (8192), unit-norm linear to 1. A train step is --batch (64) real + as many fake images in one forward,
loss mean f(fake) - mean f(real), backward, RMSprop step. Eval is a no-grad forward of the same
images in eval mode. Everything is reported as a ratio to plain nn.Conv2d measured in the same run.

    python3 bench/critic_speed.py --device cpu            # writes bench/results/critic_speed-cpu-<date>.{json,md}
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from critics.bcop import BCOPConv2d  # noqa: E402
from critics.conv import LipschitzConv2d  # noqa: E402
from critics.orthogonal import bjorck  # noqa: E402

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
        eye = torch.eye(c, device=self.h.device)
        kernel = h[:, :, None, None]
        for j in range(k - 1):
            rp = bjorck(self.p[2 * j], self.iters)[:, : c // 2]
            rq = bjorck(self.p[2 * j + 1], self.iters)[:, : c // 2]
            p, q = rp @ rp.T, rq @ rq.T
            block = [[p @ q, p @ (eye - q)], [(eye - p) @ q, (eye - p) @ (eye - q)]]
            kk = kernel.shape[-1]
            new = [[torch.zeros(c, c, device=self.h.device) for _ in range(kk + 1)] for _ in range(kk + 1)]
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

OURS, PAPER = "ours: BCOPConv2d", "paper-bcop (c x c Björck x20, loop composition)"
ABLATION = {  # extra variants; the ablation table runs from OURS through these to PAPER
    "ours with 3 differentiable Björck steps instead of 1": lambda a, b: ours(a, b, bjorck_iters=3),
    "ours without retraction: Björck x20 from scratch (small factors, loop-free composition)":
        lambda a, b: NoRetractBCOP(a, b, 4, 2, bjorck_iters=20),
}


# ---------------------------------------------------------------- timing
class Runner:
    """One model with its optimiser and data; `train_step`/`eval_step` return (wall s, CPU s)."""

    def __init__(self, name, make_stage, device, lr, batch=64):
        self.name = name
        torch.manual_seed(0)
        self.model = critic(make_stage).to(device)
        self.opt = torch.optim.RMSprop(self.model.parameters(), lr=lr)
        self.device = device
        g = torch.Generator().manual_seed(0)
        self.batch = batch
        self.real = (torch.rand(batch, 3, 64, 64, generator=g) * 2 - 1).to(device)
        self.fake = (torch.rand(batch, 3, 64, 64, generator=g) * 2 - 1).to(device)
        self.train, self.eval = [], []

    def _timed(self, fn):
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync(self.device)
        return time.perf_counter() - t0, time.process_time() - c0

    def train_step(self):
        def step():
            self.model.train()
            out = self.model(torch.cat([self.real, self.fake]))
            loss = out[self.batch:].mean() - out[:self.batch].mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return self._timed(step)

    def eval_step(self):
        def step():
            self.model.eval()
            with torch.no_grad():
                self.model(torch.cat([self.real, self.fake]))
        return self._timed(step)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def max_orth_error(model):
    errs = [m.orthogonality_error() for m in model.modules() if hasattr(m, "orthogonality_error")]
    return max(errs) if errs else None


def run_all(variants, device, args):
    """Round-robin over all variants, one step each per round, so that load changes on a shared
    machine hit every variant alike; medians over rounds."""
    runners, rows = [], {}
    for name, make in variants.items():
        try:
            runners.append(Runner(name, make, device, args.lr, args.batch))
        except Exception as exc:  # a missing optional package is reported, not fatal
            rows[name] = {"name": name, "available": False, "error": f"{type(exc).__name__}: {exc}"}
            print(f"  {name}: unavailable ({exc})", flush=True)
    for phase, steps in (("train", args.steps), ("eval", args.eval_steps)):
        for i in range(args.warmup + steps):
            for r in runners:
                t = r.train_step() if phase == "train" else r.eval_step()
                if i >= args.warmup:
                    getattr(r, phase).append(t)
            print(f"  {phase} round {i + 1}/{args.warmup + steps}", flush=True)
    for r in runners:
        med = lambda xs, j: statistics.median(x[j] for x in xs)  # noqa: E731
        rows[r.name] = {"name": r.name, "available": True, "train_s": med(r.train, 0), "train_cpu_s": med(r.train, 1),
                        "eval_s": med(r.eval, 0), "eval_cpu_s": med(r.eval, 1),
                        "orth_error": max_orth_error(r.model)}
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    ap.add_argument("--steps", type=int, default=8, help="timed train steps per variant")
    ap.add_argument("--eval-steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=64, help="images per side in a train step")
    ap.add_argument("--only", nargs="*", help="substrings of variant names to run (plain always runs)")
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    keep = lambda n: n == "plain nn.Conv2d" or not args.only or any(o in n for o in args.only)  # noqa: E731
    main_variants = {n: f for n, (f, _) in VARIANTS.items() if keep(n)}
    ablation = {} if args.no_ablation else {n: f for n, f in ABLATION.items() if keep(n)}
    rows = run_all(main_variants | ablation, device, args)
    base = rows["plain nn.Conv2d"]
    for r in rows.values():
        if r["available"]:
            for k in ("train", "eval"):
                r[f"{k}_ratio"] = r[f"{k}_s"] / base[f"{k}_s"]
                r[f"{k}_cpu_ratio"] = r[f"{k}_cpu_s"] / base[f"{k}_cpu_s"]
    results = [rows[n] | {"orthogonal": VARIANTS[n][1]} for n in main_variants]
    abl = [rows[n] for n in (OURS, *ablation, PAPER) if n in rows] if ablation else []

    now = dt.datetime.now(dt.timezone.utc)
    meta = {"date": now.isoformat(timespec="seconds"), "device": args.device,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg()[0], "torch": torch.__version__,
            "python": platform.python_version(), "steps": args.steps, "eval_steps": args.eval_steps,
            "warmup": args.warmup, "lr": args.lr,
            "batch": f"{args.batch} real + {args.batch} fake, 3x64x64", "versions": package_versions()}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (f"critic_speed-{args.device}-{now:%Y-%m-%d}" + (f"-b{args.batch}" if args.batch != 64 else ""))
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results, "ablation": abl}, indent=2))
    stem.with_suffix(".md").write_text(markdown(meta, results, abl))
    print(markdown(meta, results, abl))
    print(f"wrote {stem}.json and .md")
    return {"meta": meta, "results": results, "ablation": abl}


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    cpu = meta["device"] == "cpu"
    lines = [f"# Critic speed, {meta['device']} ({meta['device_name']}), {meta['date']}", "",
             f"torch {meta['torch']}, "
             + (f"{meta['threads']} threads (of {meta['cpu_count']} cores, load average {meta['load_average']:.1f} "
                "at the end), " if cpu else "")
             + f"{meta['batch']}, RMSprop lr {meta['lr']}. Variants measured "
             f"round-robin; medians of {meta['steps']} train / {meta['eval_steps']} eval steps after {meta['warmup']} "
             "warm-up. Eval: no-grad forward of the same 2 x batch images in eval mode.", ""]
    head = ("| implementation | train step | vs plain | eval | vs plain | orthogonal | max orth. error |"
            + (" train vs plain (CPU time) |" if cpu else ""))
    sep = "|---|---|---|---|---|---|---|" + ("---|" if cpu else "")
    lines += [head, sep] + [fmt(r, r.get("orthogonal", ""), cpu) for r in rows]
    if ablation:
        lines += ["", "## Ablation: what each optimisation of BCOPConv2d buys", "", head, sep]
        lines += [fmt(r, "yes", cpu) for r in ablation]
    return "\n".join(lines) + "\n"


def fmt(r, orth, cpu):
    if not r["available"]:
        return f"| {r['name']} | unavailable: {r['error']} | | | | {orth} | |" + (" |" if cpu else "")
    err = "" if r.get("orth_error") is None else f"{r['orth_error']:.1e}"
    line = (f"| {r['name']} | {r['train_s'] * 1e3:.0f} ms | {r['train_ratio']:.2f}x | {r['eval_s'] * 1e3:.0f} ms | "
            f"{r['eval_ratio']:.2f}x | {orth} | {err} |")
    return line + (f" {r['train_cpu_ratio']:.2f}x |" if cpu else "")


if __name__ == "__main__":
    main()
