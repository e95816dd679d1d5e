"""`w1 serve`, `w1 worker`, `w1 keys`: the server side of the `w1` command.

`w1 serve` is the embedded default: the API (uvicorn, with the reconciler) plus local worker
processes: one per visible GPU (each with its own CUDA_VISIBLE_DEVICES) or one CPU worker.
This parent process never initialises CUDA: GPUs are counted with nvidia-smi, and workers are
separate processes started with `w1 worker`.
"""
from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

from service.server.processes import count_gpus, die_with_parent
from service.server.settings import SettingsInvalid, get_settings


LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"


def job_log_lines() -> None:
    """One line per job event (accepted, started, finished) from the `w1` loggers; the libraries'
    own chatter (Celery, Kombu, uvicorn's access log) stays at warnings."""
    import logging

    logger = logging.getLogger("w1")
    logger.setLevel(logging.INFO)
    if not any(getattr(h, "_w1", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT, "%H:%M:%S"))
        handler._w1 = True
        logger.addHandler(handler)
        logger.propagate = False
    # filesystem:// has no host: kombu warns "No hostname was supplied" on every connection
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)


def _overrides(**kw) -> dict:
    return {k: v for k, v in kw.items() if v is not None}


def load_settings(**overrides):
    """Settings for a command: a bad value is one line naming the variable, not a traceback."""
    try:
        return get_settings(**overrides)
    except SettingsInvalid as exc:
        raise click.ClickException(f"invalid settings: {exc}")


class WorkerPool:
    """Local `w1 worker` processes, restarted if they die, stopped with the server."""

    def __init__(self, devices: list[str | None], env: dict):
        self.devices, self.env = devices, env
        self.procs: list[subprocess.Popen | None] = [None] * len(devices)
        self.stopping = threading.Event()
        # Created by stop() before it signals the workers: their running job checkpoints and requeues
        # itself at once (service.server.worker.server_gone) rather than being killed mid-step.
        self.stop_file = Path(env["W1_DATA_DIR"]) / f"serve-{os.getpid()}.stopping"
        self.stop_file.unlink(missing_ok=True)

    def _start(self, i: int) -> None:
        env = dict(self.env, W1_WORKER_NAME=f"local-{i}", W1_SERVE_PID=str(os.getpid()),
                   W1_SERVE_STOPPING=str(self.stop_file))
        if self.devices[i] is not None:  # one GPU each; the job row's worker name says which
            env.update(CUDA_VISIBLE_DEVICES=self.devices[i], W1_WORKER_NAME=f"local-{i}-gpu{self.devices[i]}")
        # A worker gets SIGTERM when `w1 serve` dies, even by SIGKILL. SIGTERM is Celery's warm
        # shutdown, which waits for the running job: that job notices the server is gone or stopping
        # (W1_SERVE_PID, W1_SERVE_STOPPING: service.server.worker.server_gone), checkpoints and
        # requeues itself.
        self.procs[i] = subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=env,
                                         preexec_fn=functools.partial(die_with_parent, signal.SIGTERM, os.getpid()))

    def start(self) -> None:
        for i in range(len(self.devices)):
            self._start(i)
        threading.Thread(target=self._watch, daemon=True, name="w1-worker-watch").start()

    def _watch(self) -> None:
        while not self.stopping.wait(2.0):
            for i, p in enumerate(self.procs):
                if p is not None and p.poll() is not None and not self.stopping.is_set():
                    click.echo(f"w1 serve: worker {i} exited with {p.returncode}; restarting", err=True)
                    self._start(i)

    def stop(self) -> None:
        self.stopping.set()
        if any(p is not None and p.poll() is None for p in self.procs):
            self.stop_file.touch()
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs:
            if p is not None:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
        self.stop_file.unlink(missing_ok=True)


def api_app():
    """The app of one of `w1 serve --api-workers N`'s API processes: uvicorn starts each by importing
    this factory, and its settings come from the environment `w1 serve` set. It stops (SIGTERM)
    when `w1 serve` dies, even by SIGKILL."""
    from service.server.app import create_app

    die_with_parent(signal.SIGTERM, os.getppid())
    job_log_lines()
    return create_app(get_settings())


@click.command()
@click.option("--host", default=None, help="Address to listen on (default W1_HOST or 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default W1_PORT or 8000).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Local worker processes (default W1_WORKERS, else one per visible GPU or 1); 0 = API only.")
@click.option("--api-workers", type=int, default=None,
              help="API processes serving the port (default W1_API_WORKERS or 1); the reconciler runs in one of them.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data directory (W1_DATA_DIR).")
def serve(host, port, workers, api_workers, data_dir):
    """Run the API, the reconciler and local workers (SQLite + filesystem queue by default)."""
    from service.server import auth
    from service.server.db import make_engine, make_sessionmaker, migrate

    settings = load_settings(**_overrides(host=host, port=port, workers=workers, api_workers=api_workers,
                                          data_dir=data_dir))
    settings.ensure_dirs()
    job_log_lines()
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    with make_sessionmaker(engine)() as s:
        keys, local_mode = auth.active_keys(s), not auth.any_keys(s)
    engine.dispose()
    if keys == 0 and not auth.is_loopback(settings.host):
        raise click.ClickException(
            f"refusing to listen on {settings.host}: no API keys are configured, so anyone who can "
            f"reach the port could use the service. Create one with `w1 keys create --owner NAME`, "
            f"or listen on 127.0.0.1.")
    if settings.workers is not None:
        devices: list[str | None] = [None] * settings.workers
    else:
        devices = count_gpus() or [None]
    env = dict(os.environ, W1_DATA_DIR=str(settings.data_dir))
    env.setdefault("W1_HOST_WORKERS", str(len(devices)))  # they share this machine's cores (training.threads)
    if settings.database_url:
        env["W1_DATABASE_URL"] = settings.database_url
    if settings.broker_url:
        env["W1_BROKER_URL"] = settings.broker_url
    pool = WorkerPool(devices, env)
    pool.start()
    click.echo(f"w1 serve: API on http://{settings.host}:{settings.port} (dashboard at /ui/, docs at /docs) in "
               f"{settings.api_workers} process(es), {len(devices)} worker(s) {'on GPUs ' + ','.join(d for d in devices if d) if any(devices) else 'on CPU'}, "
               f"data in {settings.data_dir}", err=True)
    click.echo("w1 serve: " + (f"no API keys: loopback clients are served without a token, as owner "
                               f"{auth.LOCAL_OWNER!r}. The first `w1 keys create` ends that."
                               if local_mode else f"{keys} active API key(s): every request needs a token"), err=True)
    try:
        run_api(settings, pool)
    finally:
        pool.stop()


def run_api(settings, pool: WorkerPool) -> None:
    """uvicorn: the app in this process, or ``api_workers`` processes sharing the port (uvicorn's
    supervisor restarts one that dies; they elect the reconciler's process among themselves)."""
    import uvicorn

    from service.server.app import create_app

    if settings.api_workers == 1:
        # workers stop in the app's shutdown: uvicorn re-raises SIGTERM after it, so the caller's
        # `finally` would never run
        uvicorn.run(create_app(settings, on_shutdown=[pool.stop]), host=settings.host, port=settings.port,
                    log_level="warning", timeout_graceful_shutdown=5)
        return
    counters = settings.data_dir / "metrics"  # prometheus_client's multiprocess mode (service/server/metrics.py)
    shutil.rmtree(counters, ignore_errors=True)
    counters.mkdir(parents=True)
    os.environ.update(W1_DATA_DIR=str(settings.data_dir), W1_HOST=settings.host, W1_PORT=str(settings.port),
                      PROMETHEUS_MULTIPROC_DIR=str(counters))
    uvicorn.run("service.server.cli:api_app", factory=True, workers=settings.api_workers, host=settings.host,
                port=settings.port, log_level="warning", timeout_graceful_shutdown=5)


@click.command()
@click.option("--name", default=None, help="Worker name shown in jobs (default host:pid).")
@click.option("--loglevel", default="WARNING", show_default=True)
def worker(name, loglevel):
    """Run one worker: takes one job at a time from the broker (W1_BROKER_URL).

    Prefork with one child: the child trains (and alone touches CUDA), the parent keeps talking
    to the broker (so `celery inspect ping` health checks answer during long jobs)."""
    if name:
        os.environ["W1_WORKER_NAME"] = name
    from service.server.db import migrate

    settings = load_settings()
    settings.ensure_dirs()
    migrate(settings.db_url)
    from service.server.worker import app, worker_name

    # no banner; job lines from the `w1` loggers only (see job_log_lines)
    app.conf.worker_hijack_root_logger = False
    job_log_lines()
    # Celery warns about root on every start; the worker accepts JSON only (no pickle), which is
    # what makes root dangerous there, and the image runs as a numeric non-root user anyway.
    import warnings

    warnings.filterwarnings("ignore", message=".*running the worker with superuser privileges")
    app.worker_main(["--quiet", "worker", "--pool=prefork", "--concurrency=1", "--prefetch-multiplier=1",
                     "--without-gossip", "--without-mingle", "--without-heartbeat",
                     f"--loglevel={loglevel}", "-n", f"w1@{worker_name()}", "-Q", "w1"])


@click.group()
def keys():
    """Manage API keys (stored hashed; a token is shown once, at creation)."""


def _sessions():
    from service.server.db import make_engine, make_sessionmaker, migrate

    settings = load_settings()
    migrate(settings.db_url)
    return make_sessionmaker(make_engine(settings.db_url))


def local_objects(session) -> str | None:
    """What local mode (no keys) left behind, e.g. "3 jobs and 2 datasets"; None when nothing.
    They belong to the owner ``local``, so only a key of that owner sees them."""
    from sqlalchemy import func, select

    from service.server.auth import LOCAL_OWNER
    from service.server.db import Dataset, Generator, Job

    counts = [(session.scalar(select(func.count()).select_from(model).where(model.owner == LOCAL_OWNER)), name)
              for model, name in ((Job, "job"), (Dataset, "dataset"), (Generator, "generator"))]
    parts = [f"{n} {name}{'s' if n != 1 else ''}" for n, name in counts if n]
    return " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts) or None


@keys.command("create")
@click.option("--owner", required=True, help="Owner name: every object created with this key belongs to it.")
def keys_create(owner):
    """Create a key and print its token (only now; it is stored hashed)."""
    from service.server.auth import LOCAL_MODE_ENDS, LOCAL_OWNER, any_keys, create_key

    with _sessions()() as s:
        first = not any_keys(s)
        try:
            key, token = create_key(s, owner)
        except ValueError as exc:
            raise click.ClickException(str(exc))
        leftovers = local_objects(s) if key.owner != LOCAL_OWNER else None
    click.echo(f"created key {key.id} for owner {key.owner!r}; the token is shown only once:", err=True)
    if first:
        click.echo(f"note: this is the server's first API key. {LOCAL_MODE_ENDS}", err=True)
    if leftovers:
        # objects are never moved between owners: say where the ones made without a key went
        click.echo(f"note: owner {LOCAL_OWNER!r} (everything made without a key, in local mode) has {leftovers}; "
                   f"a key of {key.owner!r} does not see them. To reach them, use a key of owner {LOCAL_OWNER!r}: "
                   f"`w1 keys create --owner {LOCAL_OWNER}`.", err=True)
    click.echo(token)


@keys.command("list")
def keys_list():
    """List keys (id, owner, created, revoked)."""
    from sqlalchemy import select

    from service.server.db import ApiKey

    with _sessions()() as s:
        rows = list(s.scalars(select(ApiKey).order_by(ApiKey.created_at)))
    if not rows:
        click.echo("no API keys (the server only serves loopback clients)")
    for k in rows:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        click.echo(f"{k.id}\t{k.owner}\t{k.prefix}…\t{k.created_at:%Y-%m-%d %H:%M}\t{state}")


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id):
    """Revoke a key by id (see `w1 keys list`)."""
    from service.server.auth import revoke_key

    with _sessions()() as s:
        key = revoke_key(s, key_id)
    if key is None:
        raise click.ClickException(f"no key {key_id!r}")
    click.echo(f"revoked {key.id} ({key.owner})")
