"""CPU threads of an estimate: chosen from the cores this process owns and the workload, not inherited,
and given up while training as soon as another process wants those cores.

torch's default is one intra-op thread per visible core, with OpenMP threads that spin at every barrier
waiting for their partners. Measured on a 2-core machine (bench/results/threads_*, openmp_waits_*): a
second spinning thread makes a default estimate 1.2-1.4x faster while nothing else runs, and 2-30x
slower as soon as another process is busy, because the partner a spinning thread waits for has been
parked by the scheduler (a default estimate ran 15-25x slower beside one busy neighbour, issue 14).
Sleeping (passive) waits bound that cost but make the second thread a loss on every size measured
(each parallel region then wakes a sleeping thread). Hence:

- cores owned = CPU affinity, capped by a cgroup CPU quota, divided among the workers sharing the
  machine (`W1_HOST_WORKERS`, which `w1 serve` sets for its local workers);
- with two owned cores: both, if a training step is large enough to share (one thread per
  `MACS_PER_THREAD` multiply-adds of a step); with more: one core is left for the rest of the machine,
  and the same rule; on a GPU the CPU only prepares batches, so at most `ACCELERATOR_THREADS`;
- OpenMP keeps its default waits (spin, then sleep), and `ThreadWatch` reads how busy the other
  processes keep this process's cores (/proc/stat less our own CPU time) every `WATCH_WINDOW_S` while
  it trains: when they use more than `BUSY_SLACK` of a core for `GIVE_UP_WINDOWS` readings in a row
  (or throughout the estimate's set-up), it gives up the threads they need, and takes them back after
  `TAKE_BACK_WINDOWS` quiet readings, so a busy neighbour costs about a second of slow steps instead of
  the whole run. Where that cannot be read (not Linux) or the user asked for passive waits
  (`OMP_WAIT_POLICY=PASSIVE`), a machine of two cores gets one thread, as before the watch;
- `W1_THREADS=N`, `w1 estimate --threads N` or `with fixed_threads(N):` override it (and the watch);
  `OMP_NUM_THREADS` caps the cores it counts.

A run's thread count can change the rounding of its reductions (so its bits): a run whose threads the
watch changed may differ from one that kept them in the last digits (the FC critic's estimates were
bit-identical on one and two threads; "the same to 4 digits" elsewhere). The result records the threads
it started with and every change (versions["threads"], versions["threads_changes"])."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

ENV = "W1_THREADS"
WORKERS_ENV = "W1_HOST_WORKERS"
# Multiply-adds of a training step (forward + backward) worth one more thread: 2 threads sped up the FC
# critic at 8x8 (57M per step) by 1.3x on an idle machine, and not the BCOP conv critic at 8x8 (8M).
MACS_PER_THREAD = 25e6
ACCELERATOR_THREADS = 4      # on CUDA/MPS the CPU side only prepares batches
# ThreadWatch: how often it reads how busy the other processes keep this process's cores, how much of a
# core they may use before the estimate gives up a thread for them, and for how many windows in a row
# before it gives one up (a neighbour then costs about a second of slow steps: a spinning thread whose
# partner is parked runs 2-30x slower; a shell command's burst of a few tenths of a second costs nothing)
# or takes it back. The machine's own background (servers idling, the kernel) stays well under the slack.
WATCH_WINDOW_S = 0.5
BUSY_SLACK = 0.25
GIVE_UP_WINDOWS = 2
TAKE_BACK_WINDOWS = 6
PROC_STAT = Path("/proc/stat")
_override: int | None = None


@dataclass(frozen=True)
class ThreadChoice:
    """Intra-op threads of an estimate and why: 'W1_THREADS', 'override', or the policy's reasoning."""

    intra_op: int
    reason: str
    watched: bool = False  # the policy's choice on the CPU: ThreadWatch gives threads up to busy neighbours


def openmp_waits() -> str:
    """How OpenMP's threads wait between parallel regions, as its runtime read it when torch loaded
    (recorded in results: with two or more threads it decides whether a second thread helps; measured
    on a 2-core VM, bench/results/openmp_waits_2026-12-07_cpu.md)."""
    policy, spin = os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT")
    parts = [f"OMP_WAIT_POLICY={policy}" if policy else "", f"GOMP_SPINCOUNT={spin}" if spin else ""]
    return " ".join(p for p in parts if p) or "runtime default (spin, then sleep)"


def recorded_openmp_waits() -> str:
    """openmp_waits() as it was when `training` was imported (usually before torch loaded OpenMP)."""
    return OPENMP_WAITS


def passive_waits() -> bool:
    """Whether OpenMP's threads sleep at barriers (a user's OMP_WAIT_POLICY=PASSIVE): then a second thread
    costs more than it gains on a small machine (openmp_waits_2026-12-07_cpu.md)."""
    return "OMP_WAIT_POLICY=PASSIVE" in OPENMP_WAITS.upper()


OPENMP_WAITS = openmp_waits()  # read when `training` is imported: before torch, in the product


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
    cores = len(_affinity())
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
    if cores == 1:
        return ThreadChoice(1, "1 owned core")
    if cores == 2 and device_type != "cpu":
        return ThreadChoice(1, f"2 owned cores, training on {device_type}: one thread prepares the batches")
    if device_type != "cpu":
        return ThreadChoice(min(cores - 1, ACCELERATOR_THREADS), f"{cores} owned cores, training on {device_type}")
    watchable = ThreadWatch.can_watch()
    if cores == 2 and (passive_waits() or not watchable):
        why = ("passive OpenMP waits" if passive_waits() else
               "no /proc/stat of this process's own CPUs to watch for busy neighbours")
        return ThreadChoice(1, f"2 owned cores, {why}: one thread, so a busy neighbour cannot stall it")
    macs = max(step_macs(c, input_shape, batch_size) for c in critics)
    free = cores if cores == 2 else cores - 1
    count = int(max(1, min(free, macs // MACS_PER_THREAD)))
    watched = count > 1 and watchable
    return ThreadChoice(count, f"{cores} owned cores{' (one left free)' if cores > 2 else ''}, "
                               f"{macs / 1e6:.0f}M multiply-adds per step"
                               + ("; given up while other processes keep them busy" if watched else ""),
                        watched=watched)


@dataclass
class ThreadWatch:
    """An estimate's intra-op threads, given up while other processes keep the cores it runs on busy and
    taken back when they stop (see the module docstring): `start(choice)` at each critic's training,
    `poll()` at every step (a clock read; /proc/stat and os.times() every WATCH_WINDOW_S). A thread is
    given up after GIVE_UP_WINDOWS busy windows in a row (a shell command's burst is not a neighbour), or
    at the start where the others were busy throughout the estimate's set-up, and taken back after
    TAKE_BACK_WINDOWS quiet windows. One watch serves a whole estimate (its folds too)."""

    stat: Path | None = None            # None: PROC_STAT
    started: int | None = None          # the threads the estimate started with (the most it takes back)
    changes: list = field(default_factory=list)  # {"at_s", "threads", "others_cores"} per change
    _cpus: frozenset = frozenset()
    _last: tuple | None = None
    _busy: int = 0
    _quiet: int = 0
    _t0: float = field(default_factory=time.monotonic)

    @staticmethod
    def can_watch() -> bool:
        """Whether this machine says how busy this process's CPUs are: Linux's /proc/stat, for CPUs that
        are this process's by affinity. Under a cgroup CPU quota smaller than its affinity (a container
        limited by `--cpus` but not pinned), /proc/stat shows the host's CPUs, and a neighbour inside the
        quota would not be seen."""
        cpus = _affinity()
        quota = cgroup_quota()
        return (quota is None or quota >= len(cpus)) and _busy_cpu_seconds(PROC_STAT, cpus) is not None

    def __post_init__(self) -> None:
        self._cpus = _affinity()
        self._last = self._sample()  # so the first decision can read the estimate's set-up time

    def start(self, choice: ThreadChoice) -> None:
        """Apply `choice` and watch if it is the policy's choice of several threads. It starts lower where
        the estimate is down to fewer threads, or where other processes kept the cores busy since the
        last reading (the set-up of the estimate: reading data, building critics)."""
        count = min(choice.intra_op, self.changes[-1]["threads"]) if self.changes else choice.intra_op
        if self.started is None:
            self.started = choice.intra_op
        self._busy = self._quiet = 0
        if not (choice.watched and choice.intra_op > 1):
            self._last = None
        else:
            sample = self._sample()
            if self._last is not None and sample is not None and sample[0] - self._last[0] >= WATCH_WINDOW_S:
                room, others = self._room(self._last, sample, count)
                if room < count:
                    count = room
                    self._note(sample[0], room, others)
            self._last = sample
        apply_threads(ThreadChoice(count, choice.reason))

    def poll(self) -> None:
        if self._last is None or time.monotonic() - self._last[0] < WATCH_WINDOW_S:
            return
        sample = self._sample()
        if sample is None:
            self._last = None
            return
        current = get_threads()
        room, others = self._room(self._last, sample, current)
        self._last = sample
        self._busy, self._quiet = (self._busy + 1, 0) if room < current else (0, self._quiet + 1) if room > current else (0, 0)
        if self._busy >= GIVE_UP_WINDOWS or self._quiet >= TAKE_BACK_WINDOWS:
            apply_threads(ThreadChoice(room, "watched"))
            self._note(sample[0], room, others)
            self._busy = self._quiet = 0

    def _room(self, before: tuple, after: tuple, current: int) -> tuple[int, float]:
        """(threads the other processes leave room for, cores they used) between two samples: e.g. 2 cores,
        others 0.3 -> floor(1.95) = 1."""
        (t0, busy0, own0), (t1, busy1, own1) = before, after
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-9)
        return max(1, min(self.started or current, math.floor(len(self._cpus) - others + BUSY_SLACK))), others

    def _note(self, at: float, threads: int, others: float) -> None:
        self.changes.append({"at_s": round(at - self._t0, 2), "threads": threads, "others_cores": round(others, 2)})

    def record(self) -> dict[str, str]:
        """What results record (versions): the threads the estimate started with, and any changes."""
        out = {"threads": str(self.started if self.started is not None else get_threads())}
        if self.changes:
            out["threads_changes"] = "; ".join(
                f"{c['threads']} from {c['at_s']:g} s (other processes kept {c['others_cores']:g} of "
                f"{len(self._cpus)} cores busy)" for c in self.changes)
        return out

    def _sample(self) -> tuple[float, float, float] | None:
        busy = _busy_cpu_seconds(self.stat or PROC_STAT, self._cpus)
        if busy is None:
            return None
        own = os.times()
        return time.monotonic(), busy, own.user + own.system


def _affinity() -> frozenset:
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return frozenset(range(os.cpu_count() or 1))


def _busy_cpu_seconds(stat: Path, cpus: frozenset) -> float | None:
    """CPU seconds the given CPUs have spent busy since boot (user, nice, system, irq, softirq and steal
    time of /proc/stat's cpuN lines), None where that cannot be read."""
    try:
        lines = stat.read_text().splitlines()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    busy, seen = 0, 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            values = [int(v) for v in rest.split()[:8]]
            if len(values) < 8:
                return None
            busy += sum(values) - values[3] - values[4]  # all but idle and iowait
            seen += 1
    return busy / ticks if seen == len(cpus) and seen else None


def get_threads() -> int:
    import torch

    return torch.get_num_threads()


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
