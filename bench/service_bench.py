"""Benchmarks of the job service on loopback, on the embedded default (SQLite + filesystem://) and
on Redis + PostgreSQL (real servers started in temporary folders on free ports):

- submission: POST /v1/jobs throughput and latency (p50/p95/max) with many concurrent clients,
  bounded by a request count and a time limit (no worker runs then; the jobs are cancelled after);
- dispatch: created_at -> started_at of jobs submitted one at a time to idle workers;
- recovery: a worker SIGKILLed mid-job, the time until the job runs again on the other worker and
  until it succeeds (the reconciler notices the stale heartbeat; the job resumes from its checkpoint).

- load (``--load``, instead of the above): requests/s and p50/p95 latency of a mix of reads and
  submissions (90/10) from 16, 64 and 256 concurrent clients (``--load-clients``), each with 0 and
  then 100 event streams held open (``--streams``), with ``--api-workers 1,2`` API processes
  (``w1 serve --api-workers N``) side by side in one run; ``--server-root DIR`` benchmarks another
  checkout's server (e.g. the code before a change, extracted with ``git archive <commit> | tar -x -C DIR``).

    python bench/service_bench.py [--backends embedded,redis-postgres] [--requests 400] [--clients 16]
    python bench/service_bench.py --load [--api-workers 1,2] [--server-root DIR] [--seconds 8]

Writes bench/results/service-<date>.json and .md. The server runs with short recovery settings
(heartbeat 1 s, stale after 5 s, reconcile every 1 s) so recovery is measured in seconds.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.client import W1Client  # noqa: E402

RECOVERY_SETTINGS = {"W1_HEARTBEAT_INTERVAL_S": "1", "W1_STALE_AFTER_S": "5",
                     "W1_RECONCILE_INTERVAL_S": "1", "W1_MAX_QUEUED_PER_OWNER": "1000000"}
TINY = {"critic": "fc", "width": 16, "steps": 20, "batch_size": 32, "eval_every": 10, "device": "cpu",
        "progress_every": 5}
LONG = {"critic": "fc", "width": 16, "steps": 600, "batch_size": 64, "early_stopping": False, "eval_every": 500,
        "checkpoint_every": 50, "progress_every": 10, "device": "cpu"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:g} s")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def parse_time(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


# -- back-ends -------------------------------------------------------------------------------

@contextlib.contextmanager
def embedded(tmp: Path):
    """The default: SQLite in the data dir, kombu's filesystem:// queue."""
    yield {}, {"database": "sqlite", "broker": "filesystem://"}


@contextlib.contextmanager
def redis_postgres(tmp: Path):
    """A real redis-server and PostgreSQL cluster on free loopback ports."""
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    redis_port, pg_port = free_port(), free_port()
    pg = tmp / "pg"
    pg.mkdir()
    if as_postgres:  # initdb refuses root; the postgres user must reach its folder
        tmp.chmod(0o755)
        shutil.chown(pg, "postgres", "postgres")
    redis = None
    try:
        subprocess.run([*as_postgres, "initdb", "-D", str(pg / "data"), "-A", "trust", "-U", "postgres"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*as_postgres, "pg_ctl", "-D", str(pg / "data"), "-l", str(pg / "log"), "-w",
                        "-o", f"-p {pg_port} -k {pg} -c listen_addresses=127.0.0.1 -c max_connections=200",
                        "start"], check=True, stdout=subprocess.DEVNULL)
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                                 stdout=subprocess.DEVNULL)
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(redis_port), "ping"],
                                          capture_output=True, text=True).stdout.strip() == "PONG",
                   20, "redis-server")
        versions = {
            "redis": subprocess.run(["redis-server", "--version"], capture_output=True,
                                    text=True).stdout.split()[2].removeprefix("v="),
            "postgres": subprocess.run(["postgres", "--version"], capture_output=True,
                                       text=True).stdout.split()[2],
        }
        yield ({"W1_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{pg_port}/postgres",
                "W1_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0"},
               {"database": f"postgresql {versions['postgres']}", "broker": f"redis {versions['redis']}"})
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        if (pg / "data" / "postmaster.pid").exists():
            subprocess.run([*as_postgres, "pg_ctl", "-D", str(pg / "data"), "-m", "fast", "-w", "stop"],
                           stdout=subprocess.DEVNULL)


BACKENDS = {"embedded": embedded, "redis-postgres": redis_postgres}


# -- the service -----------------------------------------------------------------------------

class Service:
    """`w1 serve --workers 0` (API + reconciler) and `w1 worker` processes we can kill."""

    def __init__(self, tmp: Path, backend_env: dict, root: Path = ROOT, api_workers: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, W1_DATA_DIR=str(tmp / "data"), CUDA_VISIBLE_DEVICES="",
                        PYTHONPATH=str(root), **RECOVERY_SETTINGS, **backend_env)
        self.log = (tmp / "service.log").open("w")
        self.workers: dict[str, subprocess.Popen] = {}
        more = ["--api-workers", str(api_workers)] if api_workers > 1 else []  # (older servers lack the option)
        self.api = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--workers", "0",
                                     "--port", str(self.port), *more], env=self.env,
                                    stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._ready, 120, f"API at {self.url}", 0.2)

    def _ready(self) -> bool:
        if self.api.poll() is not None:
            raise RuntimeError(f"the API exited with {self.api.returncode}; see {self.log.name}")
        try:
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(self, name: str) -> None:
        self.workers[name] = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--name", name], env=self.env,
            stdout=self.log, stderr=subprocess.STDOUT)

    def stop_workers(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.workers.clear()

    def close(self) -> None:
        self.stop_workers()
        self.api.terminate()
        try:
            self.api.wait(20)
        except subprocess.TimeoutExpired:
            self.api.kill()
        self.log.close()

    def job_worker(self, job_id: str) -> str | None:
        """Which worker runs a job: read from the job table (the API does not expose it)."""
        from sqlalchemy import select

        from service.server.db import Job, make_engine
        from service.server.settings import get_settings

        url = self.env.get("W1_DATABASE_URL") or get_settings(data_dir=self.env["W1_DATA_DIR"]).db_url
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                return conn.execute(select(Job.worker).where(Job.id == job_id)).scalar()
        finally:
            engine.dispose()


# -- measurements ----------------------------------------------------------------------------

def measure_dispatch(client: W1Client, sources: dict, jobs: int) -> dict:
    """Tiny jobs one at a time to idle workers: created_at -> started_at from the job's timestamps."""
    latencies, walls = [], []
    for i in range(jobs):
        job = client.submit_job(sources["real"], sources["fake"], options=TINY, label=f"dispatch-{i}")
        t0 = time.monotonic()
        job = client.wait_job(job["id"], use_events=False, poll_interval=0.05, timeout=300)
        walls.append(time.monotonic() - t0)
        if job["status"] != "succeeded":
            raise RuntimeError(f"dispatch job {job['id']} {job['status']}: {job['error']}")
        latencies.append((parse_time(job["started_at"]) - parse_time(job["created_at"])).total_seconds())
    return {"jobs": jobs, "created_to_started_s": latencies,
            "p50_s": percentile(latencies, 50), "max_s": max(latencies),
            "job_wall_s_p50": percentile(walls, 50)}


def measure_recovery(service: Service, client: W1Client, sources: dict) -> dict:
    """SIGKILL the worker running a job mid-way; time until the job runs again and succeeds."""
    job = client.submit_job(sources["real"], sources["fake"], options=LONG, label="recovery")
    job_id = job["id"]

    def running_far_enough():
        j = client.get_job(job_id)
        if j["status"] in ("succeeded", "failed", "cancelled"):
            raise RuntimeError(f"recovery job ended ({j['status']}) before the kill; make LONG longer")
        return j if j["status"] == "running" and (j["progress"] or {}).get("step", 0) >= 150 else None

    before = wait_until(running_far_enough, 300, "recovery job running", 0.05)
    victim = wait_until(lambda: service.job_worker(job_id), 10, "job's worker")
    service.workers[victim].send_signal(signal.SIGKILL)
    t_kill = time.monotonic()
    step_at_kill = before["progress"]["step"]

    requeued = rerun = None
    resumed_step = None
    while True:
        j = client.get_job(job_id)
        t = time.monotonic() - t_kill
        if requeued is None and j["status"] == "queued":
            requeued = t
        if rerun is None and j["status"] == "running" and j["attempts"] >= 2:
            rerun = t
        if rerun is not None and resumed_step is None and j["progress"] and j["attempts"] >= 2:
            resumed_step = j["progress"]["step"]
        if j["status"] in ("succeeded", "failed", "cancelled"):
            break
        if t > 300:
            raise TimeoutError(f"recovery job {job_id} not finished 300 s after the kill")
        time.sleep(0.05)
    return {"killed_worker": victim, "step_at_kill": step_at_kill, "total_steps": LONG["steps"],
            "kill_to_requeued_s": requeued, "kill_to_running_again_s": rerun,
            "first_step_seen_after_restart": resumed_step,
            "kill_to_succeeded_s": time.monotonic() - t_kill, "final_status": j["status"],
            "attempts": j["attempts"], "job_id": job_id}


def measure_submissions(url: str, sources: dict, requests: int, clients: int,
                        time_limit: float) -> dict:
    """POST /v1/jobs from `clients` threads (one connection each) until `requests` or the limit."""
    body = {"real": sources["real"], "fake": sources["fake"], "options": TINY, "label": "load"}
    lock, issued = threading.Lock(), [0]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    ids: list[str] = []
    deadline = time.monotonic() + time_limit

    def client_loop():
        with httpx.Client(base_url=url, timeout=60) as http:
            while True:
                with lock:
                    if issued[0] >= requests or time.monotonic() > deadline:
                        return
                    issued[0] += 1
                t0 = time.perf_counter()
                try:
                    r = http.post("/v1/jobs", json=body)
                    status = r.status_code
                except httpx.HTTPError:
                    status = -1
                elapsed = time.perf_counter() - t0
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 202:
                        latencies.append(elapsed)
                        ids.append(r.json()["id"])

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    # No worker runs now: cancel what was queued, so nothing is left to train.
    with W1Client(url) as client:
        for job_id in ids:
            client.cancel_job(job_id)
    return {"clients": clients, "requests": sum(statuses.values()), "accepted": len(latencies),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}, "wall_s": wall,
            "throughput_per_s": len(latencies) / wall if wall else float("nan"),
            "latency_p50_ms": 1000 * percentile(latencies, 50),
            "latency_p95_ms": 1000 * percentile(latencies, 95),
            "latency_max_ms": 1000 * max(latencies, default=float("nan"))}


# -- load: many concurrent clients, with and without open event streams --------------------

async def _http(port: int, method: str, path: str, body: bytes = b"") -> int:
    """One request on its own connection; its status (-1 on a network error). A bare asyncio client:
    httpx's pool takes seconds to juggle hundreds of connections and would be measured instead."""
    import asyncio

    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n\r\n").encode()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + body)
        status = await reader.readline()
        await reader.read()
        writer.close()
        return int(status.split()[1])
    except (OSError, IndexError, ValueError):
        return -1


async def _load_round(port: int, job_ids: list[str], submit: bytes, clients: int, seconds: float,
                      streams: int) -> dict:
    import asyncio

    stop = asyncio.Event()
    opened = []

    async def stream(i: int):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /v1/jobs/{job_ids[i % len(job_ids)]}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            while b"event: status" not in await asyncio.wait_for(reader.readline(), 120):
                pass
            opened.append(i)
            await stop.wait()
            writer.close()
        except (OSError, asyncio.TimeoutError):
            pass

    holders = [asyncio.create_task(stream(i)) for i in range(streams)]
    deadline = time.monotonic() + 120
    while len(opened) < streams and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    end = time.monotonic() + seconds

    async def client(c: int):
        n = 0
        while time.monotonic() < end:
            n += 1
            kind = (c + n) % 10
            t0 = time.perf_counter()
            if kind == 0:
                status = await _http(port, "POST", "/v1/jobs", submit)
            elif kind < 5:
                status = await _http(port, "GET", f"/v1/jobs/{job_ids[(c + n) % len(job_ids)]}")
            elif kind < 8:
                status = await _http(port, "GET", "/v1/jobs?limit=10")
            else:
                status = await _http(port, "GET", "/v1/datasets")
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    wall = time.perf_counter() - t0
    stop.set()
    await asyncio.gather(*holders)
    return {"clients": clients, "streams_open": len(opened), "requests": len(latencies),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "requests_per_s": len(latencies) / wall, "p50_ms": 1000 * percentile(latencies, 50),
            "p95_ms": 1000 * percentile(latencies, 95), "max_ms": 1000 * max(latencies, default=float("nan"))}


def measure_load(name: str, args) -> list[dict]:
    """Every row of --load on one back-end: for each number of API processes, a fresh service."""
    rows = []
    for api_workers in (int(n) for n in args.api_workers.split(",")):
        rows += _measure_load(name, api_workers, args)
    return rows


def _measure_load(name: str, api_workers: int, args) -> list[dict]:
    import asyncio

    tmp = Path(tempfile.mkdtemp(prefix=f"w1load-{name}-"))
    rows = []
    try:
        with BACKENDS[name](tmp) as (backend_env, described):
            service = Service(tmp, backend_env, Path(args.server_root), api_workers)
            try:
                rng = np.random.default_rng(0)
                np.save(tmp / "real.npy", rng.integers(0, 128, (256, 1, 8, 8), dtype=np.uint8))
                np.save(tmp / "fake.npy", rng.integers(100, 256, (256, 1, 8, 8), dtype=np.uint8))
                with httpx.Client(base_url=service.url, timeout=60) as http:
                    ids = {}
                    for side in ("real", "fake"):
                        with open(tmp / f"{side}.npy", "rb") as f:
                            ids[side] = http.post("/v1/datasets", files={"file": (f"{side}.npy", f)}).json()["id"]
                    body = {"real": {"dataset": ids["real"]}, "fake": {"dataset": ids["fake"]}, "options": TINY}
                    job_ids = [http.post("/v1/jobs", json=body).json()["id"] for _ in range(5)]
                submit = json.dumps(dict(body, label="load")).encode()
                # not recorded: warms every API process (first requests import and fill per-process caches)
                asyncio.run(_load_round(service.port, job_ids, submit, 32, 3.0, 0))
                for clients in (int(c) for c in args.load_clients.split(",")):
                    for streams in (int(n) for n in args.streams.split(",")):
                        row = asyncio.run(_load_round(service.port, job_ids, submit, clients, args.seconds, streams))
                        row.update(backend=name, database=described["database"], broker=described["broker"],
                                   api_processes=api_workers, load_average=os.getloadavg()[0])
                        print(json.dumps(row), file=sys.stderr)
                        rows.append(row)
            finally:
                service.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def load_markdown(report: dict) -> str:
    lines = [f"# Service load benchmark, {report['date']}", "",
             f"Server code: {report['server_root']}. Machine: {report['machine']['cpus']} CPUs, load average "
             f"{report['machine']['load_average_at_start'][0]:.1f} at start, "
             f"{report['machine']['load_average_at_end'][0]:.1f} at the end (the client shares the CPUs "
             f"with the server and other work). Each row: {report['seconds']:g} s of 90 % reads, 10 % "
             "submissions, one connection per request.", "",
             "| backend | API processes | clients | open streams | requests/s | p50 | p95 | max | load avg | statuses |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['backend']} | {r.get('api_processes', 1)} | {r['clients']} | {r['streams_open']} "
                     f"| {r['requests_per_s']:.0f} | {r['p50_ms']:.0f} ms | {r['p95_ms']:.0f} ms | {r['max_ms']:.0f} ms "
                     f"| {r.get('load_average', float('nan')):.1f} | {r['statuses']} |")
    return "\n".join(lines) + "\n"


def run_backend(name: str, args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"w1bench-{name}-"))
    try:
        with BACKENDS[name](tmp) as (backend_env, described):
            service = Service(tmp, backend_env)
            try:
                for i in range(2):
                    service.start_worker(f"bench-{i}")
                rng = np.random.default_rng(0)
                np.savez(tmp / "real.npz", x=rng.integers(0, 128, (512, 1, 8, 8), dtype=np.uint8))
                np.savez(tmp / "fake.npz", x=rng.integers(100, 256, (512, 1, 8, 8), dtype=np.uint8))
                with W1Client(service.url) as client:
                    sources = {side: client.resolve_source(tmp / f"{side}.npz")
                               for side in ("real", "fake")}
                    t0 = time.monotonic()
                    warm = client.wait_job(client.submit_job(sources["real"], sources["fake"],
                                                             options=TINY, label="warm-up")["id"],
                                           use_events=False, poll_interval=0.05, timeout=300)
                    first_job_s = time.monotonic() - t0
                    assert warm["status"] == "succeeded", warm
                    dispatch = measure_dispatch(client, sources, args.dispatch_jobs)
                    recovery = measure_recovery(service, client, sources)
                service.stop_workers()
                submissions = measure_submissions(service.url, sources, args.requests, args.clients,
                                                  args.time_limit)
            finally:
                service.close()
        return {"backend": described, "first_job_wall_s": first_job_s, "dispatch": dispatch,
                "recovery": recovery, "submissions": submissions}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _seconds(value: float | None) -> str:
    """Seconds for the report; None when the poll never saw that state (it passed between polls)."""
    return "(not seen between polls)" if value is None else f"{value:.1f} s"


def markdown(report: dict) -> str:
    lines = [f"# Service benchmark, {report['date']}", "",
             f"Machine: {report['machine']['cpus']} CPUs, {report['machine']['platform']}, "
             f"Python {report['machine']['python']}; all on loopback, CPU workers, load average "
             f"{report['machine']['load_average_at_start'][0]:.1f} at start and "
             f"{report['machine']['load_average_at_end'][0]:.1f} at the end (other work shared the "
             "CPUs: compare the back-ends with each other, not with other runs). "
             f"Server settings: {', '.join(f'{k}={v}' for k, v in report['settings'].items())}.", "",
             "| backend | submit p50 | submit p95 | submits/s | clients | dispatch p50 | dispatch max "
             "| kill → running again | kill → succeeded |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["results"].items():
        s, d, rec = r["submissions"], r["dispatch"], r["recovery"]
        lines.append(
            f"| {name} ({r['backend']['database']}, {r['backend']['broker']}) "
            f"| {s['latency_p50_ms']:.0f} ms | {s['latency_p95_ms']:.0f} ms "
            f"| {s['throughput_per_s']:.0f} | {s['clients']} | {1000 * d['p50_s']:.0f} ms "
            f"| {1000 * d['max_s']:.0f} ms | {rec['kill_to_running_again_s']:.1f} s "
            f"| {rec['kill_to_succeeded_s']:.1f} s |")
    lines += ["", "Details:", ""]
    for name, r in report["results"].items():
        s, rec = r["submissions"], r["recovery"]
        lines.append(f"- {name}: {s['accepted']} of {s['requests']} submissions accepted "
                     f"(statuses {s['statuses']}) in {s['wall_s']:.1f} s; first job after start "
                     f"{r['first_job_wall_s']:.1f} s; recovery: killed at step {rec['step_at_kill']}"
                     f"/{rec['total_steps']}, requeued after {_seconds(rec['kill_to_requeued_s'])}, "
                     f"first progress after restart at step {rec['first_step_seen_after_restart']}, "
                     f"final {rec['final_status']} after {rec['attempts']} attempts.")
    lines += ["", "Reading it: dispatch is created_at -> started_at as the job table records it "
              "(the filesystem queue polls every W1_BROKER_POLL_INTERVAL_S, 0.1 s by default). "
              "Recovery is dominated by W1_STALE_AFTER_S (5 s here, 60 s by default) plus one "
              "reconcile interval; the job then resumes from its last checkpoint "
              "(checkpoint_every=50 steps here), so kill -> succeeded includes the remaining training. "
              "Submissions are POST /v1/jobs with the datasets already uploaded, no worker "
              "running; the client threads share the same 2 CPUs as the server."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="embedded,redis-postgres")
    parser.add_argument("--requests", type=int, default=400, help="submissions in the load test")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds for the load test")
    parser.add_argument("--dispatch-jobs", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--load", action="store_true", help="only the load benchmark (16/64/256 clients, 0/100 streams)")
    parser.add_argument("--server-root", default=str(ROOT), help="checkout whose server --load measures")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per --load row")
    parser.add_argument("--tag", default="", help="suffix of the --load report's file name (e.g. before, after)")
    parser.add_argument("--api-workers", default="1", help="--load: API processes, a comma-separated list (e.g. 1,2)")
    parser.add_argument("--load-clients", default="16,64,256", help="--load: concurrent clients per row")
    parser.add_argument("--streams", default="0,100", help="--load: event streams held open per row")
    args = parser.parse_args()
    if args.load:
        report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "server_root": args.server_root, "seconds": args.seconds,
                  "machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}, "rows": []}
        for name in args.backends.split(","):
            report["rows"] += measure_load(name, args)
        report["machine"]["load_average_at_end"] = os.getloadavg()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"service-load-{dt.date.today().isoformat()}{'-' + args.tag if args.tag else ''}"
        Path(f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        Path(f"{stem}.md").write_text(load_markdown(report))
        print(load_markdown(report))
        return

    versions = {}
    for pkg in ("celery", "kombu", "sqlalchemy", "fastapi", "uvicorn", "httpx", "psycopg", "redis"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[pkg] = importlib.metadata.version(pkg)
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(),
                          "load_average_at_start": os.getloadavg()},
              "versions": versions, "settings": RECOVERY_SETTINGS,
              "options": {"tiny_job": TINY, "recovery_job": LONG,
                          "requests": args.requests, "clients": args.clients},
              "results": {}}
    for name in args.backends.split(","):
        print(f"== {name}", file=sys.stderr)
        report["results"][name] = run_backend(name, args)
        print(json.dumps(report["results"][name], indent=2), file=sys.stderr)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"service-{dt.date.today().isoformat()}"
    Path(f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{stem}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
