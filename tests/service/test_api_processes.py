"""API processes are interchangeable (service/server/leader.py, `w1 serve --api-workers N`):

- the reconciler's lead, in process: a PostgreSQL advisory lock on a connection of its own and a
  file lock beside SQLite; one holder at a time, taken over when the holder goes (its connection
  ended, its file closed);
- two API processes on one PostgreSQL + Redis (real servers on loopback), as replicas behind a load
  balancer would be: jobs submitted through both are stored and sent once each, event streams opened
  on either process see the changes made through the other until the final status (none dropped),
  the reconciler runs in exactly one of them, and after that one is SIGKILLed in the other;
- `w1 serve --api-workers 2` on the embedded default: two processes answer on one port, Prometheus
  counters add up across them, the file lock names the leading process, and uvicorn replaces a
  SIGKILLed one while the lead moves on.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from httpx_sse import connect_sse

pytestmark = pytest.mark.slow

OPTIONS = {"critic": "fc", "width": 16, "steps": 10, "batch_size": 32, "device": "cpu"}


def test_lead_is_held_once_and_taken_over(fresh_postgres_url, tmp_path, wait_for):
    from sqlalchemy import create_engine, text

    from service.server.leader import FileLead, PostgresLead

    first, second = FileLead(tmp_path / "reconciler.lock"), FileLead(tmp_path / "reconciler.lock")
    assert first.holds() and first.holds() and not second.holds()
    assert (tmp_path / "reconciler.lock").read_text() == f"{os.getpid()}\n"
    first.close()
    assert second.holds() and not first.holds()
    second.close()

    a, b = PostgresLead(fresh_postgres_url), PostgresLead(fresh_postgres_url)
    try:
        assert a.holds() and a.holds() and not b.holds()
        a.close()  # the process went away: its connection ends, PostgreSQL releases the lock (at once or
        wait_for(b.holds, 10, "the lead taken over", 0.05)  # within moments: the backend exits asynchronously)
        assert not a.holds()
        # the leader's connection is killed under it: it notices on its next check, the other takes over
        admin = create_engine(fresh_postgres_url)
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = :n AND pid <> pg_backend_pid()"),
                         {"n": f"w1-reconciler-{os.getpid()}"})
            conn.commit()
        admin.dispose()
        assert not b.holds()
        wait_for(a.holds, 10, "the lead taken again", 0.05)
        assert not b.holds()
    finally:
        a.close()
        b.close()


def _lock_holders(url: str) -> list[str]:
    """application_name of every session holding the reconciler's advisory lock in this database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(text(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database() "
                "AND a.application_name LIKE 'w1-reconciler-%'")))
    finally:
        engine.dispose()


def follow(url: str, token: str, job_id: str, opened: list, seen: dict) -> None:
    """Read a job's event stream to its end; ``seen[job_id]``: the statuses it announced."""
    statuses = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
        with connect_sse(c, "GET", f"/v1/jobs/{job_id}/events") as source:
            for event in source.iter_sse():
                if event.event == "status":
                    statuses.append(event.json()["status"])
                    if len(statuses) == 1:
                        opened.append(job_id)
    seen[job_id] = statuses


def test_two_api_processes_on_postgres_and_redis(make_service, redis_url, fresh_postgres_url, tmp_path, wait_for):
    import redis

    broker = redis_url.replace("/0", "/3")
    redis.Redis.from_url(broker).flushdb()
    svc = make_service(workers=0, W1_DATABASE_URL=fresh_postgres_url, W1_BROKER_URL=broker,
                       W1_MAX_QUEUED_PER_OWNER="1000")
    other = svc.spawn_api("api2.log")
    urls, procs = [svc.url, other.url], {svc.api.pid: svc.api, other.pid: other}
    holders = wait_for(lambda: _lock_holders(fresh_postgres_url), 30, "a reconciler lead")
    assert len(holders) == 1 and int(holders[0].rsplit("-", 1)[1]) in procs, holders
    leader = int(holders[0].rsplit("-", 1)[1])

    rng = np.random.default_rng(5)
    ids = []
    for i, lo in enumerate((0, 100)):  # one set uploaded through each process
        np.save(tmp_path / f"{lo}.npy", rng.integers(lo, 256, (64, 1, 8, 8), dtype=np.uint8))
        with httpx.Client(base_url=urls[i], headers={"Authorization": f"Bearer {svc.token}"}, timeout=60) as c, \
                open(tmp_path / f"{lo}.npy", "rb") as f:
            ids.append(c.post("/v1/datasets", files={"file": (f"{lo}.npy", f)}).json()["id"])
    body = {"real": {"dataset": ids[0]}, "fake": {"dataset": ids[1]}, "options": OPTIONS}

    def submit(i: int, out: list) -> None:  # alternately through each process; the last two share a key
        with httpx.Client(base_url=urls[i % 2], headers={"Authorization": f"Bearer {svc.token}"}, timeout=60) as c:
            same = i >= 38
            r = c.post("/v1/jobs", json=dict(body, label="same" if same else f"j{i}"),
                       headers={"Idempotency-Key": "same"} if same else {})
            out.append((i, r.status_code, r.json()["id"] if r.status_code in (200, 202) else r.text))

    answers: list = []
    threads = [threading.Thread(target=submit, args=(i, answers)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(code for _, code, _ in answers) == {202: 39, 200: 1}, answers
    through = {job_id: i % 2 for i, _, job_id in sorted(answers)}  # the process each job came through
    accepted = sorted(through)
    assert len(accepted) == 39

    # 20 streams, each on the process a job did not come through; the jobs are then cancelled
    # through the process they came through
    opened, seen = [], {}
    streams = [threading.Thread(target=follow, args=(urls[1 - through[j]], svc.token, j, opened, seen))
               for j in accepted[:20]]
    for t in streams:
        t.start()
    wait_for(lambda: len(opened) == 20, 60, "20 event streams open")
    for job_id in accepted:
        with httpx.Client(base_url=urls[through[job_id]], headers={"Authorization": f"Bearer {svc.token}"}) as c:
            assert c.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    for t in streams:
        t.join(timeout=60)
    assert sorted(seen) == accepted[:20], "an event stream ended without its final status"
    assert all(s == ["queued", "cancelled"] for s in seen.values()), seen

    with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {svc.token}"}) as c:
        stored = [j["id"] for j in c.get("/v1/jobs", params={"limit": 500}).json()["items"]]
    assert sorted(stored) == accepted  # each job stored once
    sent = Counter(json.loads(m)["headers"]["argsrepr"].strip("()[]',\" ")
                   for m in redis.Redis.from_url(broker).lrange("w1", 0, -1))
    assert set(sent) == set(accepted) and set(sent.values()) == {1}, sent.most_common(3)  # sent once each

    # the leader dies: the other process takes the lead and reconciles. A job whose worker vanished
    # (running, heartbeat long gone) is requeued by whoever leads now.
    from sqlalchemy import create_engine, text

    engine = create_engine(fresh_postgres_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'running', attempts = 1, started_at = now(), "
                          "heartbeat_at = now() - interval '1 hour', finished_at = NULL, error = NULL, cancel_requested = false "
                          "WHERE id = :id"), {"id": accepted[0]})
    procs[leader].send_signal(signal.SIGKILL)
    procs[leader].wait(timeout=20)
    survivor = next(pid for pid in procs if pid != leader)
    assert wait_for(lambda: _lock_holders(fresh_postgres_url) == [f"w1-reconciler-{survivor}"], 30,
                    "the lead taken over")
    with engine.connect() as conn:
        requeued = lambda: conn.execute(text("SELECT status, error FROM jobs WHERE id = :id"),  # noqa: E731
                                        {"id": accepted[0]}).one()
        row = wait_for(lambda: (r := requeued()).status == "queued" and r, 30, "the stale job requeued")
    engine.dispose()
    assert "lost its worker" in row.error
    log = (svc.logs / ("api.log" if survivor == svc.api.pid else "api2.log")).read_text()
    assert f"reconciler: running in this API process (pid {survivor})" in log, log[-2000:]


def test_serve_api_workers_share_one_port(make_service, wait_for):
    """`w1 serve --api-workers 2` (W1_API_WORKERS) on SQLite: two processes on one port, one lead,
    counters added up; a SIGKILLed one is replaced and the lead moves; all stop with `w1 serve`."""
    svc = make_service(workers=0, W1_API_WORKERS="2")
    children = lambda: subprocess.run(["pgrep", "-P", str(svc.api.pid), "-f", "spawn_main"],  # noqa: E731
                                      capture_output=True, text=True).stdout.split()
    assert "in 2 process(es)" in (svc.logs / "api.log").read_text()
    api = wait_for(lambda: len(children()) == 2 and children(), 60, "two API processes")
    lock = svc.data_dir / "reconciler.lock"
    leader = wait_for(lambda: lock.exists() and lock.read_text().strip(), 30, "a reconciler lead")
    assert leader in api
    with svc.client() as c:
        for _ in range(30):
            assert c.get("/v1/jobs").status_code == 200
    metrics = httpx.get(f"{svc.url}/metrics", timeout=10).text
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith('w1_http_requests_total{method="GET",route="/v1/jobs"'))
    assert counted == 30, metrics  # both processes' counts, whichever one answered the scrape

    os.kill(int(leader), signal.SIGKILL)  # uvicorn starts a replacement; another process leads
    wait_for(lambda: lock.read_text().strip() not in ("", leader), 60, "the lead taken over")
    now = wait_for(lambda: len(children()) == 2 and leader not in children() and children(), 60,
                   "the killed API process replaced")
    assert lock.read_text().strip() in now
    with svc.client() as c:
        assert c.get("/v1/jobs").status_code == 200
    svc.stop_api()
    assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in now), 15, "the API processes stopped")
