"""Faults with real processes: a worker SIGKILLed mid-job, the API restarted while jobs are queued
and running, cancelling a running job, time limits, per-owner quotas; and the fencing token and
reconciler rules on a real SQLite job table."""
import signal
import time
from datetime import timedelta

import numpy as np
import pytest

pytestmark = pytest.mark.slow

# long enough that a poll sees it running mid-way: a step of this critic takes ~2 ms since issue 14
LONG_STEPS = 2000
LONG = {"critic": "fc", "width": 32, "steps": LONG_STEPS, "batch_size": 32, "eval_every": 40, "device": "cpu",
        "progress_every": 5, "eval_samples": 64, "early_stopping": False, "checkpoint_every": 20, "seed": 7}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("f")
    rng = np.random.default_rng(2)
    real, fake = folder / "real.npy", folder / "fake.npy"
    np.save(real, rng.integers(0, 128, (256, 1, 8, 8), dtype=np.uint8))
    np.save(fake, rng.integers(90, 256, (256, 1, 8, 8), dtype=np.uint8))
    return real, fake


def submit(svc, real_id, fake_id, options, **extra):
    with svc.client() as c:
        r = c.post("/v1/jobs", json={"real": {"dataset": real_id}, "fake": {"dataset": fake_id}, "options": options, **extra})
        assert r.status_code == 202, r.text
        return r.json()["id"]


def wait_for(svc, job_id, pred, timeout=180):
    deadline = time.monotonic() + timeout
    with svc.client() as c:
        while time.monotonic() < deadline:
            job = c.get(f"/v1/jobs/{job_id}").json()
            if pred(job):
                return job
            time.sleep(0.1)
    raise AssertionError(f"condition not reached for {job_id}: {job}\n{svc.log_tail()}")


def test_sigkilled_worker_job_resumes_on_another(make_service, files):
    from training.estimator import estimate_w1

    svc = make_service(workers=1)
    real_id, fake_id = (svc.upload(p).json()["id"] for p in files)
    job_id = submit(svc, real_id, fake_id, LONG)
    running = wait_for(svc, job_id, lambda j: (j["progress"] or {}).get("step", 0) >= 50)
    assert running["status"] == "running" and running["attempts"] == 1
    svc.kill_worker(sig=signal.SIGKILL)  # no goodbye: its message is gone, its heartbeat stops
    killed_at = (running["progress"] or {})["step"]
    svc.start_worker()
    job = svc.wait(job_id, timeout=300)
    assert job["status"] == "succeeded", (job, svc.log_tail())
    assert job["attempts"] == 2 and job["error"] is None
    result = job["result"]
    assert result["steps_run"] == LONG_STEPS and len(result["curve"]) > 0
    assert killed_at < LONG_STEPS
    # resumed from the checkpoint, exactly: the same numbers as an uninterrupted run
    direct = estimate_w1(str(files[0]), str(files[1]), LONG)
    assert result["estimate"] == pytest.approx(direct.estimate, rel=1e-5, abs=1e-6)
    assert result["certified_lower_bound"] == pytest.approx(direct.certified_lower_bound, rel=1e-5, abs=1e-6)
    with svc.client() as c:
        assert set(c.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]) >= {"curve.json", "critic.onnx"}


def test_api_restart_loses_nothing_and_cancel_running(make_service, files):
    svc = make_service(workers=1)
    real_id, fake_id = (svc.upload(p).json()["id"] for p in files)
    quick = dict(LONG, steps=30, checkpoint_every=10)
    first = submit(svc, real_id, fake_id, dict(LONG, steps=100000, checkpoint_every=100000), label="long")
    queued = [submit(svc, real_id, fake_id, dict(quick, seed=s), label=f"q{s}") for s in range(3)]
    wait_for(svc, first, lambda j: j["status"] == "running")
    svc.restart_api(sig=signal.SIGKILL)  # the API dies hard while one job runs and three wait
    with svc.client() as c:
        listed = {j["id"]: j for j in c.get("/v1/jobs", params={"limit": 100}).json()["items"]}
    assert set(listed) == {first, *queued}

    # cancel the running job: it stops within seconds and is marked cancelled
    wait_for(svc, first, lambda j: (j["progress"] or {}).get("step", 0) >= 10)
    with svc.client() as c:
        t0 = time.monotonic()
        r = c.post(f"/v1/jobs/{first}/cancel")
        assert r.status_code == 202, r.text
    job = svc.wait(first, timeout=60)
    assert job["status"] == "cancelled" and time.monotonic() - t0 < 10, job
    assert "cancelled" in job["error"] and job["result"] is None
    assert job["error"] == f"cancelled by request at step {job['progress']['step']}", job  # one step, not two
    # a cancelled job never resumes, so its stop wrote no checkpoint (a large critic's can take seconds)
    assert not (svc.data_dir / "jobs" / first / "checkpoint" / "checkpoint.pt").exists()

    # the queued ones run afterwards on the same worker, nothing lost
    for jid in queued:
        assert svc.wait(jid, timeout=300)["status"] == "succeeded"
    with svc.client() as c:
        assert c.post(f"/v1/jobs/{first}/cancel").status_code == 409


def test_time_limit_and_quota(make_service, files):
    svc = make_service(workers=1, W1_JOB_TIME_LIMIT_S="2", W1_MAX_QUEUED_PER_OWNER="2")
    real_id, fake_id = (svc.upload(p).json()["id"] for p in files)
    slow = dict(LONG, steps=100000)
    a = submit(svc, real_id, fake_id, slow)
    b = submit(svc, real_id, fake_id, slow)
    with svc.client() as c:
        r = c.post("/v1/jobs", json={"real": {"dataset": real_id}, "fake": {"dataset": fake_id}, "options": slow})
        assert r.status_code == 429 and "limit 2 per owner" in r.json()["detail"]
        r = c.post("/v1/batches", json={"real": {"dataset": real_id}, "fakes": [{"label": "x", "fake": {"dataset": fake_id}}]})
        assert r.status_code == 429
    for jid in (a, b):
        job = svc.wait(jid, timeout=120)
        assert job["status"] == "failed" and "time limit of 2 s exceeded" in job["error"], job


# -- the fencing token and the reconciler, on a real SQLite job table ------------------------------

@pytest.fixture
def table(tmp_path):
    from service.server.db import make_engine, make_sessionmaker, migrate
    from service.server.settings import get_settings

    settings = get_settings(data_dir=tmp_path, max_attempts=2, stale_after_s=5, reconcile_interval_s=1)
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    yield settings, make_sessionmaker(engine)
    engine.dispose()


class FakeCelery:
    """Records dispatches (the reconciler's only use of the broker)."""

    def __init__(self):
        self.sent = []

    def send_task(self, name, args, queue):
        self.sent.append(args[0])


def new_job(sessions, **values):
    from service.server.db import Job

    with sessions() as s:
        job = Job(owner="alice", spec={"real": {}, "fake": {}, "options": {}}, dispatched_at=None, **values)
        s.add(job)
        s.commit()
        return job.id


def make_stale(sessions, job_id, seconds=60):
    from sqlalchemy import update

    from service.server.db import Job, now

    with sessions() as s:
        s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=now() - timedelta(seconds=seconds)))
        s.commit()


def get(sessions, job_id):
    from sqlalchemy import select

    from service.server.db import Job

    with sessions() as s:
        return s.scalar(select(Job).where(Job.id == job_id))


def test_zombie_attempt_cannot_overwrite_newer_one(table):
    from service.server.reconciler import reconcile
    from service.server.worker import Attempt

    settings, sessions = table
    job_id = new_job(sessions)
    old = Attempt(settings, sessions, job_id, "w-old")
    assert old.claim() and old.fence == 1
    assert not Attempt(settings, sessions, job_id, "dup").claim()  # duplicate delivery: no-op
    make_stale(sessions, job_id)
    celery = FakeCelery()
    assert reconcile(settings, sessions, celery)["requeued"] == 1 and celery.sent == [job_id]
    new = Attempt(settings, sessions, job_id, "w-new")
    assert new.claim() and new.fence == 3
    # the zombie wakes up: every write is refused, and it learns it lost the job
    assert not old.write(status="succeeded", result={"estimate": 666})
    assert old.lost and old.should_stop()
    old.beat()
    job = get(sessions, job_id)
    assert job.status == "running" and job.result is None and job.worker == "w-new" and job.attempts == 2
    assert new.write(status="succeeded", result={"estimate": 1.0})
    assert get(sessions, job_id).result == {"estimate": 1.0}


def test_reconciler_caps_attempts_cancels_and_redispatches(table):
    from service.server.reconciler import reconcile
    from service.server.worker import Attempt

    settings, sessions = table
    capped = new_job(sessions)
    for _ in range(2):
        assert Attempt(settings, sessions, capped, "w").claim()
        make_stale(sessions, capped)
        reconcile(settings, sessions, FakeCelery())
    job = get(sessions, capped)
    assert job.status == "failed" and "gave up after max_attempts=2" in job.error and job.attempts == 2

    cancelled = new_job(sessions)
    assert Attempt(settings, sessions, cancelled, "w").claim()
    from sqlalchemy import update

    from service.server.db import Job

    with sessions() as s:
        s.execute(update(Job).where(Job.id == cancelled).values(cancel_requested=True))
        s.commit()
    make_stale(sessions, cancelled)
    reconcile(settings, sessions, FakeCelery())
    assert get(sessions, cancelled).status == "cancelled"

    # never dispatched (the API died between commit and send): dispatched now
    from service.server.db import now

    lost = new_job(sessions, created_at=now() - timedelta(seconds=60))
    celery = FakeCelery()
    reconcile(settings, sessions, celery)
    assert celery.sent == [lost] and get(sessions, lost).dispatched_at is not None
    # a healthy running job is left alone
    healthy = new_job(sessions)
    assert Attempt(settings, sessions, healthy, "w").claim()
    assert reconcile(settings, sessions, FakeCelery()) == {"requeued": 0, "failed": 0, "cancelled": 0, "dispatched": 0}
