"""The service's GPU side, tested on a CPU machine: `w1 serve` starts one worker per GPU that
nvidia-smi lists (a stand-in nvidia-smi on PATH is the only fake: the enumeration boundary), each
with its own CUDA_VISIBLE_DEVICES, while the serving parent never calls into CUDA;
and CUDA out-of-memory raised inside a real estimate is a clear job error, not a dead worker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def test_serve_starts_one_worker_per_listed_gpu_and_parent_stays_off_cuda(tmp_path):
    import socket

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    smi = fake_bin / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H200 (UUID: GPU-b)'\n")
    smi.chmod(0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("W1_") and k != "CUDA_VISIBLE_DEVICES"}
    env.update(W1_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT), PATH=f"{fake_bin}:{env['PATH']}")
    log_path = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env,
                            cwd=ROOT, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        assert "2 worker(s) on GPUs 0,1" in log_path.read_text()
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        environs = {}
        for pid in children:
            raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            e = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
            environs[e.get("W1_WORKER_NAME")] = e.get("CUDA_VISIBLE_DEVICES")
        assert environs == {"local-0-gpu0": "0", "local-1-gpu1": "1"}
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        # the CUDA driver library is loaded by the first CUDA call (cuInit), never by importing torch:
        # absent means the parent never touched CUDA (on a GPU machine: bench/cuda_service_check.py)
        assert "libcuda.so" not in maps
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def table(tmp_path):
    from service.server.db import make_engine, make_sessionmaker, migrate
    from service.server.settings import get_settings

    settings = get_settings(data_dir=tmp_path, catalog={"digits": {"source": "builtin:digits"}})
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    yield settings, make_sessionmaker(engine)
    engine.dispose()


def new_job(sessions, options):
    from service.server.db import Job

    with sessions() as s:
        job = Job(owner="alice", spec={"real": {"catalog": "digits"}, "fake": {"catalog": "digits"},
                                       "options": options}, dispatched_at=None)
        s.add(job)
        s.commit()
        return job.id


def get(sessions, job_id):
    from sqlalchemy import select

    from service.server.db import Job

    with sessions() as s:
        return s.scalar(select(Job).where(Job.id == job_id))


def test_cuda_out_of_memory_is_a_job_error_and_the_worker_goes_on(table):
    from service.server.worker import Attempt

    class OutOfMemoryAtStep3(Attempt):
        """The device boundary of a real estimate: a progress report at step 3 finds the GPU full."""

        def progress(self, event):
            super().progress(event)
            if event.step == 3:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    settings, sessions = table
    options = {"critic": "fc", "width": 16, "steps": 8, "batch_size": 48, "progress_every": 1,
               "early_stopping": False, "validation": 0, "device": "cpu"}
    failing = new_job(sessions, options)
    OutOfMemoryAtStep3(settings, sessions, failing, "w").run()
    job = get(sessions, failing)
    assert job.status == "failed", job.error
    assert job.error.startswith("CUDA out of memory: batch_size 48 per side did not fit; retry with batch_size 24")
    assert "Tried to allocate 2.00 GiB" in job.error and job.progress["step"] == 3
    # the same worker process takes the next job as usual, and the result says where it ran
    ok = new_job(sessions, options)
    Attempt(settings, sessions, ok, "w").run()
    job = get(sessions, ok)
    assert job.status == "succeeded", job.error
    assert job.result["device"] == "cpu"
