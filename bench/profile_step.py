"""Where a training step's time goes: the default critics against their plain twins, in one process.

For each input size, the critics `training.selection.auto_candidates` builds (the BCOP `conv` critic
and the Björck GroupSort-8 FC critic, width 256) and each one's plain twin (the same layers with
plain convolutions / nn.Linear, no re-parameterisation) train round-robin on the same batches, one
step each per round. A step is timed in the phases of training.loop.train_step:

  data       both sides' BatchStream.next() (index order, read, conversion into the input space)
  forward    critic(cat(real, fake)) in training mode (builds the kernels: re-parameterisation inside)
  backward   (-objective).backward()
  optimiser  Adam.step() (and zero_grad)

and, separately after each step on the state the next step will see (then restored), the
re-parameterisation alone: the drift check + re-projection of kept-orthonormal parameters
(critics.orthogonal.kept_orthonormal), the differentiable Björck step + BCOP kernel build, and the
backward through them. Medians over the timed rounds, after warm-up. Then the per-estimate costs
outside the steps: one validation pass over the default validation split, and progress reports.

    PYTHONPATH=. python bench/profile_step.py                     # 1 thread, all sizes, printed
    PYTHONPATH=. python bench/profile_step.py --before-root /tmp/w1-before --out bench/results/profile_step_<date>_cpu.md
    PYTHONPATH=. python bench/profile_step.py --threads 1,2 --no-phases   # step time per thread count
    PYTHONPATH=. python bench/profile_step.py --batch 256         # another batch size
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CODE = Path(os.environ.get("W1_BENCH_ROOT") or ROOT)  # the checkout whose critics and training are measured
sys.path.insert(0, str(CODE))

from critics import build_critic  # noqa: E402
from critics.conv import CachedWeight, LipschitzConv2d  # noqa: E402
from critics.layers import OrthoLinear  # noqa: E402
from critics.models import UnconstrainedConv2d  # noqa: E402
from training.data import Side  # noqa: E402
from training.loop import dual_value, make_optimizer  # noqa: E402
from training.options import EstimateOptions  # noqa: E402
from training.selection import auto_candidates  # noqa: E402
from training.sources import open_source  # noqa: E402
from training.space import InputSpace  # noqa: E402

SHAPES = {"1x8x8": (1, 8, 8), "1x16x16": (1, 16, 16), "3x32x32": (3, 32, 32)}
PHASES = ("data", "forward", "backward", "optimiser")


def plain_twin(critic: nn.Sequential) -> nn.Sequential:
    """The same architecture with free weights: each Lipschitz conv becomes an UnconstrainedConv2d
    (same unshuffle, padding and kernel shape), each OrthoLinear an nn.Linear."""
    layers = []
    for m in critic:
        if isinstance(m, LipschitzConv2d):
            m = UnconstrainedConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                                    bias=m.bias is not None, padding_mode=m.padding_mode)
        elif isinstance(m, OrthoLinear):
            m = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        else:
            m = copy.deepcopy(m)
        layers.append(m)
    return nn.Sequential(*layers)


def default_pairs(shape) -> dict[str, tuple[nn.Module, nn.Module]]:
    """{candidate name: (critic, plain twin)} for auto's candidates at this shape, seeded as an estimate."""
    pairs = {}
    for cand in auto_candidates(shape):
        torch.manual_seed(0)
        critic = build_critic(cand.critic, shape, conv=cand.conv, activation=cand.activation,
                              width=cand.width, **cand.options)
        pairs[cand.name] = (critic, plain_twin(critic))
    return pairs


def make_sides(shape, n: int = 4000, opts: EstimateOptions | None = None):
    """Real and fake Sides over in-memory uint8 images (as decoded image files arrive), split as an estimate."""
    opts = opts or EstimateOptions().resolved()
    rng = np.random.default_rng(0)
    sides = []
    for code in (0, 1):
        data = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
        src = open_source(data)
        space = InputSpace().resolve(src.shape, src.shape)
        sides.append(Side(src, code, space, opts, torch.device("cpu"), want_validation=True))
    return sides


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]  # process CPU time: on a shared machine it hardly sees the co-tenants' load


class Variant:
    """One critic in training with its own optimiser and batch streams, timed phase by phase."""

    def __init__(self, name: str, critic: nn.Module, sides, opts: EstimateOptions, threads: int):
        self.name, self.critic, self.threads = name, critic.train(), threads
        self.opt = make_optimizer(opts, critic.parameters())
        self.streams = [s.stream() for s in sides]
        self.times: dict[str, list[float]] = {p: [] for p in PHASES + ("step",)}
        self.reparam: dict[str, list[float]] = {"retract": [], "build": [], "build_backward": []}

    def step(self, record: bool) -> None:
        torch.set_num_threads(self.threads)
        t0 = clock()
        xr, xf = self.streams[0].next(), self.streams[1].next()
        t1 = clock()
        out = self.critic(torch.cat([xr, xf]))
        objective = out[:len(xr)].mean() - out[len(xr):].mean()
        t2 = clock()
        self.opt.zero_grad(set_to_none=True)
        (-objective).backward()
        t3 = clock()
        self.opt.step()
        t4 = clock()
        if record:
            for phase, dt_ in zip(PHASES + ("step",), (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                self.times[phase].append(dt_)

    def time_reparam(self) -> None:
        """Re-parameterisation alone, on the state the next step will see, then that state restored."""
        torch.set_num_threads(self.threads)
        modules = [m for m in self.critic.modules() if isinstance(m, CachedWeight)
                   and not (isinstance(m, OrthoLinear) and m.out_features == 1)]
        if not modules:
            return
        saved = [p.detach().clone() for m in modules for p in m.parameters()]
        t0 = clock()
        weights = [m.build_weight() for m in modules]        # drift check + re-projection + build
        t1 = clock()
        weights = [m.build_weight() for m in modules]        # build only (nothing changed since)
        t2 = clock()
        torch.autograd.backward(weights, [torch.ones_like(w) for w in weights])
        t3 = clock()
        self.reparam["retract"].append((t1 - t0) - (t2 - t1))
        self.reparam["build"].append(t2 - t1)
        self.reparam["build_backward"].append(t3 - t2)
        with torch.no_grad():
            for p, s in zip((p for m in modules for p in m.parameters()), saved):
                p.copy_(s)  # bumps p._version: the next forward re-checks the drift as it would have
                p.grad = None

    def median_ms(self, what: str) -> float:
        values = self.times.get(what) or self.reparam.get(what)
        return statistics.median(values) * 1e3 if values else float("nan")


def run_round_robin(variants: list[Variant], steps: int, warmup: int, reparam: bool) -> None:
    for i in range(warmup + steps):
        for v in variants:
            v.step(record=i >= warmup)
            if reparam and i >= warmup:
                v.time_reparam()


def validation_ms(critic: nn.Module, sides, repeats: int = 3) -> float:
    """One validation pass (both sides' validation split, eval mode, as training.loop.validate reads it)."""
    critic.train()
    times = []
    for _ in range(repeats):
        critic.train()
        critic(next(sides[0].validation_batches())[:2])  # a training build: the eval cache is stale, as in a run
        t0 = clock()
        dual_value(critic, sides[0], sides[1], "validation")
        times.append(clock() - t0)
    critic.train()
    return statistics.median(times) * 1e3


def progress_ms(repeats: int = 2000) -> float:
    """One progress point of training.loop.train: the objective read-back, the curve point, the event."""
    from training.result import ProgressEvent
    acc = torch.zeros((), dtype=torch.float64)
    curve, events = [], []
    t0 = time.perf_counter()
    for step in range(repeats):
        acc += 0.5
        mean_obj = float(acc) / 10
        curve.append({"step": step, "objective": mean_obj, "validation": None, "time_s": 0.0})
        acc.zero_()
        events.append(ProgressEvent(step=step, total=2000, objective=mean_obj, estimate=None, elapsed_s=0.0,
                                    phase="fc"))
    return (time.perf_counter() - t0) / repeats * 1e3


@contextmanager
def neighbour(active: bool):
    """A CPU-bound process beside the measurement (one pure-Python spin), as a busy co-tenant."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if active else None
    try:
        if proc is not None:
            time.sleep(0.5)
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def environment() -> str:
    load = os.getloadavg()
    return (f"torch {torch.__version__}, Python {platform.python_version()}, {platform.processor() or platform.machine()}, "
            f"cores owned {len(os.sched_getaffinity(0))}, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
            f"(1 / 5 / 15 min, at the start)")


def profile_table(shapes, threads: int, steps: int, warmup: int, batch: int, records: list) -> list[str]:
    opts = EstimateOptions(batch_size=batch).resolved()
    lines = [f"### {threads} thread(s)", "",
             "| input | critic | variant | data | forward | backward | optimiser | step (no data) | step / twin |"
             " re-projection | Björck + kernel build | its backward |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label in shapes:
        shape = SHAPES[label]
        sides = make_sides(shape, opts=opts)
        for name, (critic, twin) in default_pairs(shape).items():
            n = steps if shape != (3, 32, 32) or "conv" not in name else max(5, steps // 4)
            vs = [Variant("certified", critic, sides, opts, threads), Variant("plain twin", twin, sides, opts, threads)]
            run_round_robin(vs, n, warmup, reparam=True)
            model = {v.name: v.median_ms("forward") + v.median_ms("backward") + v.median_ms("optimiser") for v in vs}
            for v in vs:
                ratio = model[v.name] / model["plain twin"]
                rp = [v.median_ms(k) for k in ("retract", "build", "build_backward")]
                rp_txt = " | ".join("–" if np.isnan(x) else f"{x:.2f}" for x in rp)
                lines.append(f"| {label} | {name} | {v.name} | " + " | ".join(f"{v.median_ms(p):.2f}" for p in PHASES)
                             + f" | {model[v.name]:.2f} | {ratio:.2f}× | {rp_txt} |")
                records.append({"input": label, "critic": name, "variant": v.name, "threads": threads,
                                "step_ms": model[v.name], "data_ms": v.median_ms("data"), "ratio": ratio})
            val = validation_ms(critic, sides)
            lines.append(f"| {label} | {name} | validation pass (ms, {sides[0].n_validation} + "
                         f"{sides[1].n_validation} samples) | {val:.1f} | | | | | | | | |")
            records.append({"input": label, "critic": name, "variant": "validation", "threads": threads, "ms": val})
    return lines


def threads_table(shapes, thread_counts, steps: int, warmup: int, batch: int, block: int = 5) -> list[str]:
    """Step time (data included) of every critic and twin at each thread count: the counts take turns
    in blocks of `block` steps (the first of each block unrecorded: the thread pool wakes up)."""
    opts = EstimateOptions(batch_size=batch).resolved()
    head = " | ".join(f"{t} thr (ms)" for t in thread_counts)
    lines = [f"| input | critic | variant | {head} | " + " | ".join(f"{t} / {thread_counts[0]}" for t in thread_counts[1:]) + " |",
             "|---|---|---|" + "---|" * (2 * len(thread_counts) - 1)]
    for label in shapes:
        shape = SHAPES[label]
        sides = make_sides(shape, opts=opts)
        for name, (critic, twin) in default_pairs(shape).items():
            n = steps if shape != (3, 32, 32) or "conv" not in name else max(block, steps // 4)
            for vname, model in (("certified", critic), ("plain twin", twin)):
                vs = [Variant(vname, copy.deepcopy(model), sides, opts, t) for t in thread_counts]
                for v in vs:
                    for _ in range(warmup):
                        v.step(record=False)
                for _ in range(max(1, n // (block - 1))):
                    for v in vs:
                        for i in range(block):
                            v.step(record=i > 0)
                ms = [v.median_ms("step") for v in vs]
                lines.append(f"| {label} | {name} | {vname} | " + " | ".join(f"{m:.2f}" for m in ms) + " | "
                             + " | ".join(f"{m / ms[0]:.2f}" for m in ms[1:]) + " |")
    return lines


def compare(args) -> None:
    """The profile of another checkout (--before-root) and of this one, alternating per input size in
    fresh processes, with a summary of each critic's step / twin before and after."""
    import json
    import tempfile

    sections, records = {"before": [], "after": []}, {"before": [], "after": []}
    for label in args.shapes.split(","):
        for which, root in (("before", args.before_root), ("after", ROOT)):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--shapes", label, "--threads", args.threads,
                       "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
                       "--out", f"{tmp}/t.md", "--json", f"{tmp}/t.json"]
                env = dict(os.environ, W1_BENCH_ROOT=str(Path(root).resolve()))
                subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
                sections[which].append(Path(f"{tmp}/t.md").read_text())
                records[which] += json.loads(Path(f"{tmp}/t.json").read_text())
    key = lambda r: (r["input"], r["critic"], r["threads"])  # noqa: E731
    after = {key(r): r for r in records["after"] if r["variant"] == "certified"}
    lines = ["| input | critic | threads | step / plain twin before | after | certified step before (ms) | after (ms) |",
             "|---|---|---|---|---|---|---|"]
    for r in records["before"]:
        if r["variant"] == "certified":
            a = after[key(r)]
            lines.append(f"| {r['input']} | {r['critic']} | {r['threads']} | {r['ratio']:.2f}× | **{a['ratio']:.2f}×** "
                         f"| {r['step_ms']:.2f} | {a['step_ms']:.2f} |")
    cmd = (f"PYTHONPATH=. python bench/profile_step.py --before-root {args.before_root} --threads {args.threads} "
           f"--steps {args.steps} --out {args.out}")
    text = "\n".join([
        f"# Where a training step's time goes: default critics against their plain twins ({dt.date.today()}, CPU)", "",
        __doc__.split("\n\n")[1].strip(), "",
        f"Command: `{cmd}` (the before checkout: `git worktree add {args.before_root} <commit>`). Each input size "
        "runs in a fresh process, before and after alternating. Times are process CPU time (ms, medians), "
        "which a shared machine's load disturbs far less than wall time; step / twin compares forward + backward "
        "+ optimiser (the data phase is the same code for both and listed apart).", "",
        "## Summary", "", *lines, "", "## Before", "", *sections["before"], "", "## After", "", *sections["after"]])
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated: " + ", ".join(SHAPES))
    ap.add_argument("--threads", default="1", help="thread counts, comma-separated (e.g. 1,2)")
    ap.add_argument("--steps", type=int, default=40, help="timed rounds (a quarter for the 3x32x32 conv critic)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=EstimateOptions().resolved().batch_size, help="samples per side per step")
    ap.add_argument("--no-phases", action="store_true", help="only the step time per thread count")
    ap.add_argument("--neighbour", action="store_true", help="run a CPU-bound process beside the measurement")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default=None,
                    help="cpu: process CPU time (the profile's default: robust on a shared machine), "
                         "wall: elapsed time (the thread table's default: what more threads buy)")
    ap.add_argument("--before-root", default=None, help="another checkout: profile it and this one, with a summary")
    ap.add_argument("--out", default=None, help="write the markdown here (default: print only)")
    ap.add_argument("--json", default=None, help="write the profile's numbers here as JSON")
    args = ap.parse_args()
    if args.before_root:
        return compare(args)
    global clock
    args.clock = args.clock or ("wall" if args.no_phases else "cpu")
    clock = CLOCKS[args.clock]
    shapes = [s for s in args.shapes.split(",") if s]
    threads = [int(t) for t in args.threads.split(",")]
    header = [f"Code: {CODE}. Environment: {environment()}; batch {args.batch} + {args.batch}, Adam, {args.clock} time, "
              f"neighbour: {'one CPU-bound process' if args.neighbour else 'none started'}.", ""]
    body: list[str] = []
    records: list[dict] = []
    with neighbour(args.neighbour):
        if args.no_phases:
            body += threads_table(shapes, threads, args.steps, args.warmup, args.batch)
        else:
            for t in threads:
                body += profile_table(shapes, t, args.steps, args.warmup, args.batch, records) + [""]
            progress = progress_ms()
            opts = EstimateOptions().resolved()
            body += [f"Per estimate, besides the steps: a validation pass (rows above) every {opts.eval_every} steps, "
                     f"{opts.steps // opts.eval_every} per critic at the default {opts.steps} steps; a progress point "
                     f"(read-back, curve point, event) every {opts.progress_every} steps: {progress * 1e3:.1f} µs each, "
                     f"{progress * opts.steps / opts.progress_every:.2f} ms per critic at {opts.steps} steps."]
    load = os.getloadavg()
    text = "\n".join(header + body + ["", f"Load average at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}."])
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        import json
        Path(args.json).write_text(json.dumps(records))


if __name__ == "__main__":
    main()
