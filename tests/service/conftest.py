"""Fixtures for the job service tests: real servers, real processes, real files.

- ``live_service`` (module scope): the embedded default (SQLite + filesystem:// in a temp data
  dir): a real uvicorn server (`w1 serve --workers 0`) on a free loopback port plus one real
  worker process (`w1 worker`). It yields a :class:`LiveService`:
    ``.url``, ``.token`` (owner "alice"), ``.tokens`` ({"alice": ..., "bob": ...}), ``.data_dir``,
    ``.start_worker(name=None) -> Popen``, ``.kill_worker(proc=None, sig=SIGKILL)``,
    ``.restart_api()``, ``.spawn_api(log_name) -> Popen`` (another API process on the same data
    dir, database and broker; ``proc.url``), ``.client(token=...) -> httpx.Client``, ``.upload(path, token=None)``,
    ``.wait(job_id, timeout)`` (polls until the job is finished and returns it).
- ``make_service(**env)`` (function scope): a factory for a private LiveService, e.g. to SIGKILL
  workers or point at Redis/PostgreSQL (``make_service(W1_BROKER_URL=..., W1_DATABASE_URL=...)``).
- ``redis_url`` / ``postgres_url`` (session scope): a real redis-server and a real PostgreSQL 15
  started on free loopback ports in temp dirs; they fail with a clear message when the binaries
  are missing (CI installs them). ``fresh_postgres_url``: a new empty database on that server.
- Helpers, as fixtures returning the function (pytest runs with --import-mode=importlib, so test
  modules cannot import conftest): ``make_npz(path, array, key="images")``,
  ``make_npy(path, array)``, ``make_png_zip(path, arrays, names=None)``,
  ``make_png_tar(path, arrays, names=None)`` (``.tar`` or ``.tar.gz``); each returns the path;
  ``wait_for(check, timeout, what)`` polls until ``check()`` returns something true.
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
# Short timings so faults are noticed within seconds.
FAST_ENV = {"W1_HEARTBEAT_INTERVAL_S": "0.3", "W1_STALE_AFTER_S": "4", "W1_RECONCILE_INTERVAL_S": "0.5",
            "W1_BROKER_POLL_INTERVAL_S": "0.05"}


# The shared live_service: a 1 MB upload limit (to test 413 cheaply) and a small catalog.
LIVE_ENV = {"W1_MAX_UPLOAD_BYTES": str(1_000_000),
            "W1_CATALOG": '{"digits": {"source": "builtin:digits", "description": "scikit-learn 8x8 digits"}}'}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_npz(path, array, key: str = "images") -> Path:
    np.savez(path, **{key: np.asarray(array)})
    return Path(path)


def _make_npy(path, array) -> Path:
    np.save(path, np.asarray(array))
    return Path(path)


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(a, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _make_png_zip(path, arrays, names=None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i, a in enumerate(arrays):
            zf.writestr(names[i] if names else f"img/{i:04d}.png", _png(a))
    return Path(path)


def _make_png_tar(path, arrays, names=None) -> Path:
    with tarfile.open(path, "w:gz" if str(path).endswith("gz") else "w") as tf:
        for i, a in enumerate(arrays):
            data = _png(a)
            info = tarfile.TarInfo(names[i] if names else f"img/{i:04d}.png")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return Path(path)


@pytest.fixture(scope="session")
def make_npz():
    return _make_npz


@pytest.fixture(scope="session")
def make_npy():
    return _make_npy


@pytest.fixture(scope="session")
def make_png_zip():
    return _make_png_zip


@pytest.fixture(scope="session")
def make_png_tar():
    return _make_png_tar


def _env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("W1_")}
    env.update(FAST_ENV)
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    return env


class LiveService:
    """A running API + workers (see the module docstring)."""

    def __init__(self, data_dir: Path, **env):
        self.data_dir = Path(data_dir)
        self.logs = self.data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = _env({"W1_DATA_DIR": str(self.data_dir), **{k: str(v) for k, v in env.items()}})
        self.tokens = {owner: self._create_key(owner) for owner in ("alice", "bob")}
        self.token = self.tokens["alice"]
        self.api: subprocess.Popen | None = None
        self.apis: list[subprocess.Popen] = []  # every API process started (the first is self.api)
        self.workers: list[subprocess.Popen] = []
        self._n = 0

    def _run_cli(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "service.cli", *args], env=self.env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def _create_key(self, owner: str) -> str:
        """In-process (the same code as `w1 keys create`), to save a process start per key."""
        from service.server.auth import create_key
        from service.server.db import make_engine, make_sessionmaker, migrate

        url = self.env.get("W1_DATABASE_URL") or f"sqlite:///{self.data_dir / 'w1.db'}"
        migrate(url)
        engine = make_engine(url)
        try:
            with make_sessionmaker(engine)() as s:
                return create_key(s, owner)[1]
        finally:
            engine.dispose()

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.logs / log_name, "ab")
        return subprocess.Popen([sys.executable, "-m", "service.cli", *args], env=self.env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)

    def start_api(self) -> None:
        self.api = self.spawn_api("api.log", self.port)

    def spawn_api(self, log_name: str, port: int | None = None) -> subprocess.Popen:
        """`w1 serve --workers 0` on ``port`` (the first API, or another one on the same data dir,
        database and broker, on a free port), once it answers (``proc.url``); stopped with the service."""
        port = port or free_port()
        proc = self._spawn(["serve", "--workers", "0", "--host", "127.0.0.1", "--port", str(port)], log_name)
        self.apis.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"API exited: {(self.logs / log_name).read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    proc.url = f"http://127.0.0.1:{port}"
                    return proc
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"API did not start: {(self.logs / log_name).read_text()[-3000:]}")

    def stop_api(self, sig=signal.SIGTERM) -> None:
        stop_process(self.api, sig)
        self.api = None

    def restart_api(self, sig=signal.SIGTERM) -> None:
        self.stop_api(sig)
        self.start_api()

    def start_worker(self, name: str | None = None) -> subprocess.Popen:
        self._n += 1
        name = name or f"worker-{self._n}"
        proc = self._spawn(["worker", "--name", name, "--loglevel", "INFO"], f"{name}.log")
        proc.w1_name = name
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen | None = None, sig=signal.SIGKILL) -> None:
        alive = [p for p in self.workers if p.poll() is None]
        proc = proc or (alive[0] if alive else None)
        stop_process(proc, sig)

    def client(self, token: str | None = "default", **kw) -> httpx.Client:
        token = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)

    def upload(self, path, token: str | None = "default", **fields) -> httpx.Response:
        with self.client(token) as c, open(path, "rb") as f:
            return c.post("/v1/datasets", files={"file": (Path(path).name, f)}, data=fields)

    def wait(self, job_id: str, timeout: float = 120, token: str | None = "default") -> dict:
        deadline = time.monotonic() + timeout
        with self.client(token) as c:
            while time.monotonic() < deadline:
                job = c.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    return job
                time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-n:]}" for p in sorted(self.logs.glob("*.log")))

    def stop(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.workers:
            stop_process(p, None, timeout=15)
        for p in self.apis:
            stop_process(p)
        self.api = None


def stop_process(proc: subprocess.Popen | None, sig=signal.SIGTERM, timeout: float = 20) -> None:
    """Send ``sig`` (None: none, it was sent) and wait; SIGKILL after ``timeout`` seconds."""
    if proc is None:
        return
    if sig is not None and proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def live_service(tmp_path_factory):
    svc = LiveService(tmp_path_factory.mktemp("w1-data"), **LIVE_ENV)
    svc.start_api()
    svc.start_worker()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def wait_for():
    """``wait_for(check, timeout, what, interval=0.2)``: poll ``check()`` until it returns something
    true and return that; AssertionError naming ``what`` after ``timeout`` seconds."""
    def wait(check, timeout: float, what: str, interval: float = 0.2):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"{what}: not within {timeout:g} s")

    return wait


@pytest.fixture
def make_service(tmp_path):
    made: list[LiveService] = []

    def make(workers: int = 1, **env) -> LiveService:
        svc = LiveService(tmp_path / f"svc{len(made)}", **env)
        made.append(svc)
        svc.start_api()
        for _ in range(workers):
            svc.start_worker()
        return svc

    yield make
    for svc in made:
        svc.stop()


# -- real Redis and PostgreSQL -------------------------------------------------------------------

def _need(binary: str, hint: str) -> str:
    path = shutil.which(binary) or (binary if Path(binary).exists() else None)
    if path is None:
        pytest.fail(f"{binary} not found: {hint}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    exe = _need("redis-server", "install it (Debian: apt-get install redis-server)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start", pytrace=False)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


PG_BIN = Path(os.environ.get("W1_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    initdb = PG_BIN / "initdb"
    if not initdb.exists():
        found = shutil.which("initdb")
        if found is None:
            pytest.fail(f"PostgreSQL binaries not found in {PG_BIN} or PATH: install postgresql "
                        "(Debian: apt-get install postgresql) or set W1_TEST_PG_BIN", pytrace=False)
        initdb = Path(found)
    bindir = initdb.parent
    root = tmp_path_factory.mktemp("pg")
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        os.chmod(root, 0o755)
        for parent in root.parents:  # postgres must be able to reach its folder
            if str(parent).startswith(("/tmp", str(Path(tempfile_root())))):
                try:
                    os.chmod(parent, os.stat(parent).st_mode | 0o005)
                except PermissionError:
                    pass
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_user, *map(str, cmd)], capture_output=True, text=True, timeout=120)
    out = run(bindir / "initdb", "-D", data, "-U", "w1", "--auth=trust", "-E", "UTF8")
    if out.returncode != 0:
        pytest.fail(f"initdb failed: {out.stderr}", pytrace=False)
    out = run(bindir / "pg_ctl", "-D", data, "-l", root / "pg.log", "-w", "-t", "60", "start",
              "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off")
    if out.returncode != 0:
        pytest.fail(f"postgres did not start: {out.stderr} {(root / 'pg.log').read_text() if (root / 'pg.log').exists() else ''}",
                    pytrace=False)
    out = run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "w1", "w1")
    assert out.returncode == 0, out.stderr
    yield f"postgresql+psycopg://w1@127.0.0.1:{port}/w1"
    run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop")


@pytest.fixture
def fresh_postgres_url(postgres_url):
    """A new, empty database on the session's PostgreSQL server (one per test)."""
    import uuid

    import psycopg

    name = f"w1_{uuid.uuid4().hex[:12]}"
    base = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + "/" + name


def tempfile_root() -> str:
    import tempfile

    return tempfile.gettempdir()
