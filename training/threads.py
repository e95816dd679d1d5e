"""CPU threads of an estimate: chosen from the cores this process owns and the workload, not inherited.

torch's default is one intra-op thread per visible core. Measured on a 2-core machine
(bench/results/threads_*): a second thread gains at most 1.5x while nothing else runs (none for the
small BCOP critic at 8x8), and costs 2-30x as soon as another process is busy, because OpenMP's
threads spin at every barrier waiting for a partner the scheduler has parked (a default estimate ran
15-25x slower beside one busy neighbour, issue 14). Hence:

- cores owned = CPU affinity, capped by a cgroup CPU quota, divided among the workers sharing the
  machine (`W1_HOST_WORKERS`, which `w1 serve` sets for its local workers);
- with two or fewer owned cores: one thread (a neighbour then costs ~1.0-1.3x, not 20x);
- with more: one core is left for the rest of the machine, and the step must be large enough to share
  (one thread per `MACS_PER_THREAD` multiply-adds of a training step; on a GPU the CPU only prepares
  batches, so at most `ACCELERATOR_THREADS`);
- `W1_THREADS=N`, `w1 estimate --threads N` or `with fixed_threads(N):` override it; `OMP_NUM_THREADS`
  caps the cores it counts.

OpenMP's wait policy is fixed when torch loads its runtime, so `passive_openmp_waits()` (called when
`training` is imported) asks for passive waits before torch is imported, unless the user chose one:
threads that sleep at a barrier instead of spinning bound the cost of sharing a core. A run's thread
count changes the rounding of its reductions (so its bits), so it is fixed for the whole estimate and
recorded in the result."""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ENV = "W1_THREADS"
WORKERS_ENV = "W1_HOST_WORKERS"
# Multiply-adds of a training step (forward + backward) worth one more thread: 2 threads sped up the FC
# critic at 8x8 (57M per step) by 1.3x on an idle machine, and not the BCOP conv critic at 8x8 (8M).
MACS_PER_THREAD = 25e6
ACCELERATOR_THREADS = 4      # on CUDA/MPS the CPU side only prepares batches
_override: int | None = None


@dataclass(frozen=True)
class ThreadChoice:
    """Intra-op threads of an estimate and why: 'W1_THREADS', 'override', or the policy's reasoning."""

    intra_op: int
    reason: str


def passive_openmp_waits() -> None:
    """Ask OpenMP for passive waits, if torch has not loaded its runtime yet and nobody chose a policy."""
    global OPENMP_WAITS
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    OPENMP_WAITS = openmp_waits()


def recorded_openmp_waits() -> str:
    """openmp_waits() as it was when `training` was imported (before torch, in the product)."""
    return OPENMP_WAITS


def openmp_waits() -> str:
    """How OpenMP's threads wait between parallel regions, as its runtime read it when torch loaded
    (recorded in results: with two or more threads it decides whether a second thread helps; measured
    on a 2-core VM, bench/results/openmp_waits_2026-12-07_cpu.md)."""
    policy, spin = os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT")
    parts = [f"OMP_WAIT_POLICY={policy}" if policy else "", f"GOMP_SPINCOUNT={spin}" if spin else ""]
    return " ".join(p for p in parts if p) or "runtime default (spin, then sleep)"


OPENMP_WAITS = openmp_waits()


def cgroup_quota(proc: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by this process's cgroup quota (v2 cpu.max or v1 cpu.cfs_quota_us), None when
    unlimited or unknown."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        path = path.lstrip("/")
        if controllers == "":  # cgroup v2
            for base in (root / path, root):
                try:
                    quota, period = (base / "cpu.max").read_text().split()
                    return None if quota == "max" else int(quota) / int(period)
                except (OSError, ValueError):
                    continue
        elif "cpu" in controllers.split(","):
            for base in (root / controllers / path, root / "cpu" / path, root / "cpu"):
                try:
                    quota = int((base / "cpu.cfs_quota_us").read_text())
                    period = int((base / "cpu.cfs_period_us").read_text())
                    return None if quota <= 0 else quota / period
                except (OSError, ValueError):
                    continue
    return None


def owned_cores() -> int:
    """Cores this process may use, shared fairly with the other workers on the machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, int(quota)))
    try:
        workers = max(1, int(os.environ.get(WORKERS_ENV, "1")))
    except ValueError:
        workers = 1
    return max(1, cores // workers)


def step_macs(critic, input_shape, batch_size: int) -> float:
    """Multiply-adds of one training step (forward and backward of 2 x batch_size samples) in the
    critic's convolutions and linear layers, counted on one sample in eval mode (no state changes)."""
    import torch
    from torch import nn

    from critics.conv import LipschitzConv2d
    from critics.layers import OrthoLinear

    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, LipschitzConv2d):
            total += output.numel() * module.effective_in_channels * module.effective_kernel_size ** 2
        elif isinstance(module, (OrthoLinear, nn.Linear)):
            total += output.numel() * module.in_features
        elif isinstance(module, nn.Conv2d):
            total += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]

    hooks = [m.register_forward_hook(count) for m in critic.modules()]
    was_training = critic.training
    try:
        critic.eval()
        with torch.no_grad():
            critic(torch.zeros(1, *input_shape, device=next(critic.parameters()).device))
    finally:
        critic.train(was_training)
        for h in hooks:
            h.remove()
    return 3.0 * 2 * batch_size * total


def choose_threads(critics, input_shape, batch_size: int, device_type: str = "cpu") -> ThreadChoice:
    """The intra-op thread count for training these critics (see the module docstring)."""
    if _override is not None:
        return ThreadChoice(_override, "override")
    requested = os.environ.get(ENV, "").strip()
    if requested:
        try:
            count = int(requested)
        except ValueError:
            raise ValueError(f"{ENV} must be a positive integer, got {requested!r}") from None
        if count < 1:
            raise ValueError(f"{ENV} must be a positive integer, got {requested!r}")
        return ThreadChoice(count, ENV)
    cores = owned_cores()
    cap = os.environ.get("OMP_NUM_THREADS", "").strip()
    if cap.isdigit() and int(cap) >= 1 and int(cap) < cores:  # the usual knob: a cap on what we may use
        cores = int(cap)
    if cores <= 2:
        return ThreadChoice(1, f"{cores} owned core(s): one thread, so a busy neighbour cannot stall it")
    if device_type != "cpu":
        return ThreadChoice(min(cores - 1, ACCELERATOR_THREADS), f"{cores} owned cores, training on {device_type}")
    macs = max(step_macs(c, input_shape, batch_size) for c in critics)
    count = int(max(1, min(cores - 1, macs // MACS_PER_THREAD)))
    return ThreadChoice(count, f"{cores} owned cores (one left free), {macs / 1e6:.0f}M multiply-adds per step")


def onnx_session_options():
    """onnxruntime options for a generator sampled on the CPU: the same thread count as a small step
    (the override if any, else one on two owned cores or fewer, else all but one) and threads that
    sleep instead of spinning while they wait (onnxruntime spins by default: the same stall)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if _override is not None:
        threads = _override
    elif os.environ.get(ENV, "").strip().isdigit() and int(os.environ[ENV]) >= 1:
        threads = int(os.environ[ENV])
    else:
        cores = owned_cores()
        threads = 1 if cores <= 2 else cores - 1
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def apply_threads(choice: ThreadChoice) -> ThreadChoice:
    """Set torch's intra-op threads to the choice. (Inter-op threads are left alone: an estimate starts
    no inter-op work, and torch allows setting them only once per process, so it is the caller's.)"""
    import torch

    torch.set_num_threads(choice.intra_op)
    return choice


@contextlib.contextmanager
def torch_threads(count: int | None = None):
    """torch's intra-op threads set to `count` within the block (None: left as they are) and put back
    after it. count=1 is for work done before the policy sets the estimate's threads whose bits must not
    depend on the caller's (a critic's initial weights come from QR decompositions, which LAPACK splits
    differently on two threads)."""
    import torch

    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def restores_threads(func):
    """Decorator: torch's intra-op thread count is put back when `func` returns (estimate_w1 sets its
    own, and a caller training a model between estimates keeps theirs)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with torch_threads():
            return func(*args, **kwargs)
    return wrapper


@contextlib.contextmanager
def fixed_threads(count: int | None):
    """Within the block, estimates use `count` intra-op threads (None: the policy again)."""
    global _override
    if count is not None and (not isinstance(count, int) or count < 1):
        raise ValueError(f"threads must be a positive integer, got {count!r}")
    previous, _override = _override, count
    try:
        yield
    finally:
        _override = previous
