"""Threads are chosen, not inherited (training.threads): from W1_THREADS / --threads / fixed_threads, else
from the cores this process owns (affinity, cgroup quota, workers sharing the machine) and the size of
a training step, and given up to a busy neighbour while training (ThreadWatch); estimate_w1 runs with
them, records them and gives the caller's count back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from critics import build_critic
from training import W1Result, estimate_w1
from training.threads import (ENV, MACS_PER_THREAD, WORKERS_ENV, ThreadChoice, ThreadWatch, cgroup_quota,
                              choose_threads, fixed_threads, owned_cores, step_macs)


@pytest.fixture
def cores(monkeypatch):
    """Pretend this process owns `n` cores (affinity), with no quota, no W1_THREADS, one worker."""
    for name in (ENV, WORKERS_ENV, "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("training.threads.cgroup_quota", lambda: None)

    def own(n: int):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)))
    return own


def test_cgroup_quota_v1_and_v2(tmp_path):
    v2 = tmp_path / "v2"
    (v2 / "job").mkdir(parents=True)
    (v2 / "job" / "cpu.max").write_text("250000 100000\n")
    proc = tmp_path / "cgroup-v2"
    proc.write_text("0::/job\n")
    assert cgroup_quota(proc, v2) == 2.5
    (v2 / "job" / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(proc, v2) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct" / "job").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu,cpuacct" / "job" / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("4:memory:/job\n3:cpu,cpuacct:/job\n")
    assert cgroup_quota(proc, v1) == 3.0
    (v1 / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(proc, v1) is None
    assert cgroup_quota(tmp_path / "missing", v1) is None


def test_cores_are_shared_among_the_workers_and_capped_by_the_quota(cores, monkeypatch):
    cores(16)
    assert owned_cores() == 16
    monkeypatch.setenv(WORKERS_ENV, "4")
    assert owned_cores() == 4
    monkeypatch.setattr("training.threads.cgroup_quota", lambda: 2.5)
    assert owned_cores() == 1  # 2 cores of quota for 4 workers: never below one


def test_policy_follows_cores_and_workload(cores):
    small = build_critic("conv", (1, 8, 8))
    fc, conv = build_critic("fc", (3, 32, 32)), build_critic("conv", (3, 32, 32))
    assert step_macs(small, (1, 8, 8), 64) < MACS_PER_THREAD
    fc_threads = int(step_macs(fc, (3, 32, 32), 64) // MACS_PER_THREAD)
    assert 2 < fc_threads < 31 < step_macs(conv, (3, 32, 32), 64) // MACS_PER_THREAD
    cores(1)
    assert choose_threads([conv], (3, 32, 32), 64).intra_op == 1
    cores(2)  # both cores for a step large enough to share, watched; one for a small one
    choice = choose_threads([conv], (3, 32, 32), 64)
    assert (choice.intra_op, choice.watched) == (2, True)
    assert (choose_threads([small], (1, 8, 8), 64).intra_op, choose_threads([small], (1, 8, 8), 64).watched) == (1, False)
    assert choose_threads([conv], (3, 32, 32), 64, "cuda").intra_op == 1  # one thread prepares the batches
    cores(32)
    assert choose_threads([small], (1, 8, 8), 64).intra_op == 1  # too small to share
    assert choose_threads([fc], (3, 32, 32), 64).intra_op == fc_threads  # a thread per MACS_PER_THREAD
    assert choose_threads([conv, fc], (3, 32, 32), 64).intra_op == 31  # the largest candidate; one core left free
    assert choose_threads([conv], (3, 32, 32), 64, "cuda").intra_op == 4  # the CPU only prepares batches


def test_two_cores_get_one_thread_where_a_neighbour_cannot_be_watched_or_waits_are_passive(cores, monkeypatch):
    """Sleeping waits make a second thread a loss on a small machine, and without /proc/stat (not Linux)
    nothing would give the second core back to a busy neighbour: one thread, as before the watch."""
    conv = build_critic("conv", (3, 32, 32))
    cores(2)
    monkeypatch.setattr("training.threads.OPENMP_WAITS", "OMP_WAIT_POLICY=PASSIVE")
    choice = choose_threads([conv], (3, 32, 32), 64)
    assert (choice.intra_op, choice.watched) == (1, False) and "passive" in choice.reason
    monkeypatch.setattr("training.threads.OPENMP_WAITS", "runtime default (spin, then sleep)")
    monkeypatch.setattr("training.threads.cgroup_quota", lambda: 2.0)  # a container's --cpus=2 on a 4-CPU host
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)))
    choice = choose_threads([conv], (3, 32, 32), 64)
    assert choice.intra_op == 1 and "/proc/stat" in choice.reason
    monkeypatch.setattr("training.threads.cgroup_quota", lambda: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert choose_threads([conv], (3, 32, 32), 64).intra_op == 2
    monkeypatch.setattr("training.threads.PROC_STAT", Path("/nonexistent/stat"))
    choice = choose_threads([conv], (3, 32, 32), 64)
    assert choice.intra_op == 1 and "/proc/stat" in choice.reason


def _write_stat(path: Path, busy_s: tuple[float, float]) -> None:
    """A /proc/stat with two CPUs that have been busy (user time) busy_s seconds and idle 1000 s each."""
    ticks = os.sysconf("SC_CLK_TCK")
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"] + [f"cpu{i} {round(b * ticks)} 0 0 {1000 * ticks} 0 0 0 0 0 0"
                                            for i, b in enumerate(busy_s)]
    path.write_text("\n".join(lines + ["intr 0", "ctxt 0"]) + "\n")


def test_the_watch_gives_threads_to_busy_neighbours_and_takes_them_back(tmp_path, monkeypatch):
    """The decision on /proc/stat's numbers: the busy time of this process's CPUs less its own CPU time
    is the others'; over BUSY_SLACK of a core for GIVE_UP_WINDOWS windows in a row, a thread is given up,
    and it is taken back after TAKE_BACK_WINDOWS quiet ones."""
    from training import threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(threads, "WATCH_WINDOW_S", 0.2)  # long enough for os.times' 10 ms ticks
    stat = tmp_path / "stat"
    before = torch.get_num_threads()
    busy = 10.0
    try:
        _write_stat(stat, (busy, 10.0))
        watch = ThreadWatch(stat=stat)
        watch.start(ThreadChoice(2, "test", watched=True))
        assert torch.get_num_threads() == 2

        def window(others_cores: float) -> int:
            """One window in which the others used `others_cores` of a core besides our own time."""
            nonlocal busy
            own0, t0 = sum(os.times()[:2]), watch._last[0]
            while time.monotonic() - t0 < 0.25:
                pass  # our own CPU time, which must not count as the others'
            busy += sum(os.times()[:2]) - own0 + others_cores * (time.monotonic() - t0)
            _write_stat(stat, (busy, 10.0))
            watch.poll()
            return torch.get_num_threads()

        assert [window(0.1) for _ in range(3)] == [2, 2, 2]  # the machine's background: kept
        assert watch.record() == {"threads": "2"}
        assert [window(0.9), window(0.1), window(0.9)] == [2, 2, 2]  # one busy window at a time: a burst
        assert [window(0.9) for _ in range(threads.GIVE_UP_WINDOWS - 1)][-1] == 1  # a neighbour: given up
        record = watch.record()
        assert record["threads"] == "2" and record["threads_changes"].startswith("1 from ")
        assert "of 2 cores busy" in record["threads_changes"]
        assert [window(1.0) for _ in range(3)] == [1, 1, 1]  # while it stays, one thread
        watch.start(ThreadChoice(2, "the next fold", watched=True))  # a later fold starts where the watch is
        assert torch.get_num_threads() == 1
        quiet = [window(0.0) for _ in range(threads.TAKE_BACK_WINDOWS)]
        assert quiet == [1] * (threads.TAKE_BACK_WINDOWS - 1) + [2]  # the neighbour left: taken back
        assert watch.record()["threads_changes"].count(" from ") == 2

        # a neighbour busy throughout the set-up (reading data, building critics): one thread from the start
        _write_stat(stat, (busy, 10.0))
        watch = ThreadWatch(stat=stat)
        own0, t0 = sum(os.times()[:2]), watch._last[0]
        while time.monotonic() - t0 < 0.25:
            pass
        _write_stat(stat, (busy + sum(os.times()[:2]) - own0 + 0.9 * (time.monotonic() - t0), 10.0))
        watch.start(ThreadChoice(2, "test", watched=True))
        assert torch.get_num_threads() == 1
        assert watch.record()["threads"] == "2" and watch.record()["threads_changes"].startswith("1 from ")
    finally:
        torch.set_num_threads(before)


WATCHED = """
import json, os, subprocess, sys, time
import training
import torch
from training.threads import ThreadChoice, ThreadWatch
cpus = sorted(os.sched_getaffinity(0))[:2]
os.sched_setaffinity(0, cpus)  # two cores, as on the machines this policy is for
watch = ThreadWatch()
watch.start(ThreadChoice(2, "test", watched=True))
neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                             preexec_fn=lambda: os.sched_setaffinity(0, cpus))
try:
    a, end = torch.randn(192, 192), time.monotonic() + 10
    while torch.get_num_threads() > 1 and time.monotonic() < end:
        a = torch.tanh(a @ a)  # training steps on two threads
        watch.poll()
    print(json.dumps(watch.record()))
finally:
    neighbour.kill()
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_busy_neighbour_gets_a_thread():
    """The real thing: another process spins on one of this process's two cores while it trains on two
    spinning threads; the watch sees it in /proc/stat and gives a thread up."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", ENV)}
    out = subprocess.run([sys.executable, "-c", WATCHED], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["threads"] == "2" and record["threads_changes"].startswith("1 from "), record


def test_omp_num_threads_caps_the_cores_counted(cores, monkeypatch):
    conv = build_critic("conv", (3, 32, 32))
    cores(32)
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert choose_threads([conv], (3, 32, 32), 64).intra_op == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_threads([conv], (3, 32, 32), 64).intra_op == 1


def test_overrides(cores, monkeypatch):
    cores(2)
    critic = build_critic("fc", (1, 4, 4), width=8)
    monkeypatch.setenv(ENV, "3")
    assert choose_threads([critic], (1, 4, 4), 64).intra_op == 3
    with fixed_threads(5):
        assert choose_threads([critic], (1, 4, 4), 64).intra_op == 5
    assert choose_threads([critic], (1, 4, 4), 64).intra_op == 3
    monkeypatch.setenv(ENV, "two")
    with pytest.raises(ValueError, match="W1_THREADS must be a positive integer"):
        choose_threads([critic], (1, 4, 4), 64)
    with pytest.raises(ValueError, match="positive integer"):
        with fixed_threads(0):
            pass


def test_estimate_runs_with_the_chosen_threads_and_gives_the_callers_back(cores):
    cores(2)
    rng = np.random.default_rng(0)
    real = rng.random((120, 1, 4, 4), dtype=np.float32)
    fake = real * 0.5
    opts = dict(critic="fc", width=8, steps=3, batch_size=8, early_stopping=False, validation=0, device="cpu")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert estimate_w1(real, fake, **opts).versions["threads"] == "1"
        assert torch.get_num_threads() == 2
        with fixed_threads(2):
            assert estimate_w1(real, fake, **opts).versions["threads"] == "2"
    finally:
        torch.set_num_threads(before)


def test_the_callers_thread_count_does_not_change_the_result(digits_uint8):
    """The estimate runs on the threads the policy chose (recorded in the result); what ran before that
    (building the critics: QR decompositions for the orthogonal initialisation, which LAPACK splits
    differently on two threads) must not depend on the caller's, or the same seed and the same recorded
    threads give other numbers (0.343 vs 0.359 on one small-data case, by OMP_NUM_THREADS alone)."""
    real, fake = digits_uint8[:600], digits_uint8[600:1200] // 2
    before = torch.get_num_threads()
    results = []
    try:
        for ambient in (2, 1):
            torch.set_num_threads(ambient)
            with fixed_threads(1):
                results.append(estimate_w1(real, fake, steps=20, eval_every=10, seed=0))
    finally:
        torch.set_num_threads(before)
    assert results[0].versions["threads"] == results[1].versions["threads"] == "1"
    assert results[0].estimate == results[1].estimate
    assert [c.validation for c in results[0].selection.candidates] == \
        [c.validation for c in results[1].selection.candidates]


def test_cli_threads_flag(tmp_path):
    from service.cli import main

    rng = np.random.default_rng(0)
    np.save(tmp_path / "real.npy", rng.random((120, 4), dtype=np.float32))
    np.save(tmp_path / "fake.npy", rng.random((120, 4), dtype=np.float32) * 0.5)
    args = ["estimate", str(tmp_path / "real.npy"), str(tmp_path / "fake.npy"), "--critic", "fc", "--width", "8",
            "--steps", "3", "--quiet", "--threads", "2", "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert W1Result.from_json(res.stdout).versions["threads"] == "2"
    res = CliRunner().invoke(main, args[:-2] + ["--threads", "0"])
    assert res.exit_code == 2 and "--threads" in res.output


def test_importing_training_leaves_openmp_waits_alone_and_results_record_them():
    """OpenMP keeps its default (spinning) waits, which a second thread needs to pay off; the watch, not
    the wait policy, is what protects a neighbour. Whatever the user chose is recorded in every result."""
    code = "import os, sys, training; assert 'torch' not in sys.modules; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"
    record = ("import training, numpy as np; from training import estimate_w1; x = np.linspace(0, 1, 240).reshape(60, 4);"
              " print(estimate_w1(x, x / 2, critic='fc', width=8, steps=2).versions['openmp_waits'])")
    for extra, want in (({}, "runtime default (spin, then sleep)"), ({"GOMP_SPINCOUNT": "1000"}, "GOMP_SPINCOUNT=1000"),
                        ({"OMP_WAIT_POLICY": "PASSIVE"}, "OMP_WAIT_POLICY=PASSIVE")):
        out = subprocess.run([sys.executable, "-c", record], env={**env, **extra}, capture_output=True, text=True,
                             check=True)
        assert out.stdout.strip().splitlines()[-1] == want, out.stdout


def test_onnx_generators_get_the_same_threads_and_do_not_spin(cores, monkeypatch, onnx_generator):
    from training.sources import open_source
    from training.threads import onnx_session_options

    cores(2)
    options = onnx_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    cores(8)
    assert onnx_session_options().intra_op_num_threads == 7
    with fixed_threads(3):
        assert onnx_session_options().intra_op_num_threads == 3
    monkeypatch.setenv(ENV, "2")
    assert onnx_session_options().intra_op_num_threads == 2
    path, _ = onnx_generator
    assert open_source(f"onnx:{path}?latent=4").sample(3, torch.Generator().manual_seed(0)).shape == (3, 3, 8, 8)
