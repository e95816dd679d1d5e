"""Broker faults (issue 8): the job table is the system of record, so a job survives its message.

- Redis down while the reconciler requeues a dead worker's job: it runs once Redis is back.
- Redis restarted empty with three jobs queued (and, embedded, the queue folder emptied): all run.
- `w1 serve` SIGKILLed: its orphaned worker checkpoints, requeues the job and exits; the
  restarted server's worker finishes it.
Every job finishes exactly once: one attempt writes the result (claim guard + fence), and the
worker logs show one success per job."""
import os
import re
import shutil
import signal
import subprocess
import time

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.slow

OPTIONS = {"critic": "fc", "width": 16, "steps": 20, "batch_size": 16, "eval_every": 10, "device": "cpu",
           "progress_every": 5, "eval_samples": 32, "seed": 3}
# long enough that a kill lands mid-run now that steps take about a millisecond
LONG = dict(OPTIONS, steps=3000, early_stopping=False, checkpoint_every=10, eval_every=100)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("b")
    rng = np.random.default_rng(8)
    real, fake = folder / "real.npy", folder / "fake.npy"
    np.save(real, rng.integers(0, 128, (128, 1, 8, 8), dtype=np.uint8))
    np.save(fake, rng.integers(60, 256, (128, 1, 8, 8), dtype=np.uint8))
    return real, fake


class Redis:
    """A private redis-server on a fixed port that a test can stop and start again (empty)."""

    def __init__(self, folder, port):
        self.folder, self.port, self.proc = folder, port, None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self):
        exe = shutil.which("redis-server")
        assert exe, "redis-server not installed"
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # no goodbye, no persistence: it comes back empty
            self.proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = Redis(tmp_path, port)
    r.start()
    yield r
    r.stop()


def submit(svc, ids, options, **extra):
    with svc.client() as c:
        r = c.post("/v1/jobs", json={"real": {"dataset": ids[0]}, "fake": {"dataset": ids[1]}, "options": options, **extra})
        assert r.status_code == 202, r.text
        return r.json()["id"]


def wait_for(svc, job_id, pred, timeout=120):
    deadline = time.monotonic() + timeout
    with svc.client() as c:
        while time.monotonic() < deadline:
            job = c.get(f"/v1/jobs/{job_id}").json()
            if pred(job):
                return job
            time.sleep(0.1)
    raise AssertionError(f"condition not reached for {job_id}: {job}\n{svc.log_tail()}")


def successes(svc) -> dict[str, int]:
    """Successful finishes per job id, from every worker's log."""
    counts: dict[str, int] = {}
    for log in svc.logs.glob("*.log"):
        for job_id in re.findall(r"job (job_[0-9a-f]+) succeeded", log.read_text(errors="replace")):
            counts[job_id] = counts.get(job_id, 0) + 1
    return counts


def test_redis_down_during_requeue(make_service, redis_server, fresh_postgres_url, files):
    svc = make_service(workers=1, W1_BROKER_URL=redis_server.url, W1_DATABASE_URL=fresh_postgres_url,
                       W1_REDISPATCH_AFTER_S="3")
    ids = [svc.upload(p).json()["id"] for p in files]
    job_id = submit(svc, ids, LONG)
    wait_for(svc, job_id, lambda j: (j["progress"] or {}).get("step", 0) >= 20)
    svc.kill_worker(sig=signal.SIGKILL)
    redis_server.stop()
    # the reconciler presumes the worker dead and requeues the job while Redis is down
    job = wait_for(svc, job_id, lambda j: j["status"] == "queued", timeout=60)
    assert "lost its worker" in job["error"]
    time.sleep(2)  # a few reconciler passes fail to send
    redis_server.start()  # back, empty
    svc.start_worker()
    job = svc.wait(job_id, timeout=240)
    assert job["status"] == "succeeded" and job["attempts"] == 2, (job, svc.log_tail())
    assert job["result"]["steps_run"] == LONG["steps"]
    assert successes(svc) == {job_id: 1}


def test_redis_restarted_empty_with_jobs_queued(make_service, redis_server, fresh_postgres_url, files):
    svc = make_service(workers=0, W1_BROKER_URL=redis_server.url, W1_DATABASE_URL=fresh_postgres_url,
                       W1_REDISPATCH_AFTER_S="2")
    ids = [svc.upload(p).json()["id"] for p in files]
    jobs = [submit(svc, ids, dict(OPTIONS, seed=s)) for s in range(3)]
    import redis

    assert redis.Redis(port=redis_server.port).llen("w1") == 3  # sent, waiting for a worker
    redis_server.stop()
    redis_server.start()  # every message is gone
    assert redis.Redis(port=redis_server.port).llen("w1") == 0
    svc.start_worker()
    for job_id in jobs:
        job = svc.wait(job_id, timeout=240)
        assert job["status"] == "succeeded" and job["attempts"] == 1, (job, svc.log_tail())
    time.sleep(3)  # a resend that came late would run now; it must be a no-op
    assert successes(svc) == {j: 1 for j in jobs}


def test_lost_messages_on_the_embedded_broker(make_service, files):
    svc = make_service(workers=0, W1_REDISPATCH_AFTER_S="2")
    ids = [svc.upload(p).json()["id"] for p in files]
    jobs = [submit(svc, ids, dict(OPTIONS, seed=s)) for s in range(3)]
    queue = svc.data_dir / "broker" / "queue"
    lost = list(queue.glob("*.msg"))
    assert len(lost) == 3
    for p in lost:
        p.unlink()
    svc.start_worker()
    for job_id in jobs:
        assert svc.wait(job_id, timeout=240)["status"] == "succeeded"
    time.sleep(3)
    assert successes(svc) == {j: 1 for j in jobs}


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError):
                continue
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_serve(svc) -> None:
    """`w1 serve` with one local worker on the service's port, as a user runs it."""
    svc.api = svc._spawn(["serve", "--workers", "1", "--host", "127.0.0.1", "--port", str(svc.port)], "serve.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{svc.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(svc.log_tail())


def _stored_job(svc, job_id: str):
    """The job's row as stored (status, error, progress), read from the database itself."""
    from sqlalchemy import select

    from service.server.db import Job, make_engine, make_sessionmaker

    engine = make_engine(f"sqlite:///{svc.data_dir / 'w1.db'}")
    try:
        with make_sessionmaker(engine)() as s:
            job = s.scalar(select(Job).where(Job.id == job_id))
            return {"status": job.status, "error": job.error, "progress": job.progress}
    finally:
        engine.dispose()


def _restart_and_finish(svc, job_id: str) -> None:
    """A new `w1 serve` finishes the requeued job from its checkpoint, as its second attempt."""
    _start_serve(svc)
    job = svc.wait(job_id, timeout=240)
    assert job["status"] == "succeeded" and job["attempts"] == 2, (job, svc.log_tail())
    assert job["result"]["steps_run"] == LONG["steps"]
    svc.api.send_signal(signal.SIGTERM)
    svc.api.wait(timeout=30)
    svc.api = None


def test_serve_stopped_by_ctrl_c_requeues_its_running_job_before_it_exits(make_service, files):
    """Ctrl-C on `w1 serve` mid-job: the job is checkpointed and queued again before the server has
    exited (it used to stay `running` until a restarted server presumed its worker dead), and the
    next `w1 serve` finishes it from the checkpoint."""
    svc = make_service(workers=0)
    svc.stop_api()
    _start_serve(svc)
    ids = [svc.upload(p).json()["id"] for p in files]
    job_id = submit(svc, ids, LONG)
    wait_for(svc, job_id, lambda j: (j["progress"] or {}).get("step", 0) >= 20)
    svc.api.send_signal(signal.SIGINT)
    assert svc.api.wait(timeout=60) is not None
    job = _stored_job(svc, job_id)
    assert job["status"] == "queued" and "server (w1 serve) is gone or stopping" in job["error"], job
    assert 0 < job["progress"]["step"] < LONG["steps"]
    assert (svc.data_dir / "jobs" / job_id / "checkpoint").is_dir()
    _restart_and_finish(svc, job_id)


def test_serve_sigkilled_orphaned_worker_stops(make_service, files):
    svc = make_service(workers=0)
    svc.stop_api()
    _start_serve(svc)
    ids = [svc.upload(p).json()["id"] for p in files]
    job_id = submit(svc, ids, LONG)
    wait_for(svc, job_id, lambda j: (j["progress"] or {}).get("step", 0) >= 20)
    workers = _children(svc.api.pid)
    assert workers, "w1 serve started no worker"
    svc.api.kill()
    svc.api.wait()
    # the orphan checkpoints, puts the job back and exits (it does not train on)
    deadline = time.monotonic() + 60
    while any(_alive(p) for p in workers):
        assert time.monotonic() < deadline, "the orphaned worker is still running"
        time.sleep(0.2)
    job = _stored_job(svc, job_id)
    assert job["status"] == "queued" and "server (w1 serve) is gone or stopping" in job["error"], job
    stopped_at = job["progress"]["step"]
    assert 0 < stopped_at < LONG["steps"]
    assert (svc.data_dir / "jobs" / job_id / "checkpoint").is_dir()
    _restart_and_finish(svc, job_id)
