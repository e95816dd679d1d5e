"""The same code scaled out: Redis broker + PostgreSQL job table (real servers on loopback), two
workers, a job followed over SSE whose result matches estimate_w1, a batch, and a SIGKILLed worker."""
import signal
import time

import numpy as np
import pytest
from httpx_sse import connect_sse

pytestmark = pytest.mark.slow

OPTIONS = {"critic": "fc", "width": 32, "steps": 30, "batch_size": 32, "eval_every": 10, "device": "cpu",
           "progress_every": 5, "eval_samples": 64, "seed": 11}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("s")
    rng = np.random.default_rng(4)
    paths = []
    for name, lo in (("real", 0), ("fake0", 60), ("fake1", 120)):
        p = folder / f"{name}.npy"
        np.save(p, rng.integers(lo, 256 if lo else 128, (256, 1, 8, 8), dtype=np.uint8))
        paths.append(p)
    return paths


def test_redis_postgres_end_to_end(make_service, redis_url, fresh_postgres_url, files):
    from training.estimator import estimate_w1

    svc = make_service(workers=2, W1_BROKER_URL=redis_url.replace("/0", "/1"), W1_DATABASE_URL=fresh_postgres_url)
    with svc.client() as c:
        assert c.get("/readyz").json() == {"status": "ready"}
    real_id, fake0, fake1 = (svc.upload(p).json()["id"] for p in files)
    with svc.client() as c:
        r = c.post("/v1/jobs", json={"real": {"dataset": real_id}, "fake": {"dataset": fake0}, "options": OPTIONS},
                   headers={"Idempotency-Key": "scale-1"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        with connect_sse(c, "GET", f"/v1/jobs/{job_id}/events", timeout=300) as source:
            events = [(event.event, event.json()) for event in source.iter_sse()]
        assert any(k == "progress" for k, _ in events)
        assert events[-1][0] == "status" and events[-1][1]["status"] == "succeeded", (events[-1], svc.log_tail())
        job = c.get(f"/v1/jobs/{job_id}").json()
        replay = c.post("/v1/jobs", json={"real": {"dataset": real_id}, "fake": {"dataset": fake0}, "options": OPTIONS},
                        headers={"Idempotency-Key": "scale-1"})
        assert replay.status_code == 200 and replay.json()["id"] == job_id

        batch = c.post("/v1/batches", json={"real": {"dataset": real_id}, "options": OPTIONS,
                                            "fakes": [{"label": "a", "fake": {"dataset": fake0}},
                                                      {"label": "b", "fake": {"dataset": fake1}},
                                                      {"label": "c", "fake": {"dataset": fake1}}]}).json()
        for j in batch["jobs"]:
            assert svc.wait(j["id"], timeout=300)["status"] == "succeeded"
        out = c.get(f"/v1/batches/{batch['id']}").json()
        assert out["status"] == "succeeded" and [r["label"] for r in out["summary"]] == ["a", "b", "c"]

    direct = estimate_w1(str(files[0]), str(files[1]), OPTIONS)
    assert job["result"]["estimate"] == pytest.approx(direct.estimate, rel=1e-5, abs=1e-6)
    # identical inputs, identical seed: the two "b"/"c" jobs agree exactly across workers
    rows = {r["label"]: r for r in out["summary"]}
    assert rows["b"]["estimate"] == pytest.approx(rows["c"]["estimate"], rel=1e-6)


def test_redis_postgres_sigkilled_worker(make_service, redis_url, fresh_postgres_url, files):
    svc = make_service(workers=1, W1_BROKER_URL=redis_url.replace("/0", "/2"), W1_DATABASE_URL=fresh_postgres_url)
    real_id, fake0, _ = (svc.upload(p).json()["id"] for p in files)
    opts = dict(OPTIONS, steps=200, early_stopping=False, checkpoint_every=20, eval_every=50)
    with svc.client() as c:
        job_id = c.post("/v1/jobs", json={"real": {"dataset": real_id}, "fake": {"dataset": fake0}, "options": opts}).json()["id"]
        deadline = time.monotonic() + 180
        while (c.get(f"/v1/jobs/{job_id}").json()["progress"] or {}).get("step", 0) < 40:
            assert time.monotonic() < deadline, svc.log_tail()
            time.sleep(0.1)
    svc.kill_worker(sig=signal.SIGKILL)
    svc.start_worker()
    job = svc.wait(job_id, timeout=300)
    assert job["status"] == "succeeded" and job["attempts"] == 2, (job, svc.log_tail())
    assert job["result"]["steps_run"] == 200
