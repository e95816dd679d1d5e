"""`w1 serve` (embedded default with its own worker), `w1 keys`, the loopback-only rule, settings
from the environment and a settings file, and GPU counting without CUDA."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(data_dir, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("W1_")}
    env.update({"W1_DATA_DIR": str(data_dir), "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}, **extra)
    return env


def w1(*args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def serve(tmp_path, env, *args) -> tuple[subprocess.Popen, str]:
    """`w1 serve --port <free> *args` in its own session, logging to tmp_path/serve.log, once it answers."""
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port), *args], env=env,
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError((tmp_path / "serve.log").read_text())
        time.sleep(0.2)


def test_keys_create_list_revoke(tmp_path):
    env = env_for(tmp_path)
    out = w1("keys", "list", env=env)
    assert out.returncode == 0 and "no API keys" in out.stdout
    created = w1("keys", "create", "--owner", "carol", env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("w1_") and "shown only once" in created.stderr
    assert "first API key" in created.stderr and "every request needs a token" in created.stderr
    assert "owner 'local'" not in created.stderr  # nothing was made in local mode
    second = w1("keys", "create", "--owner", "dave", env=env)
    assert second.returncode == 0 and "first API key" not in second.stderr
    listed = w1("keys", "list", env=env).stdout
    assert "carol" in listed and "active" in listed and token not in listed
    key_id = listed.split()[0]
    assert w1("keys", "revoke", key_id, env=env).returncode == 0
    assert "revoked" in w1("keys", "list", env=env).stdout
    bad = w1("keys", "revoke", "key_nope", env=env)
    assert bad.returncode != 0 and "no key" in bad.stderr
    # only the hash is stored
    import sqlite3

    rows = sqlite3.connect(tmp_path / "w1.db").execute("select token_hash from api_keys").fetchall()
    assert rows and all(token not in r[0] for r in rows)


def test_first_key_says_where_local_mode_objects_went(tmp_path):
    """What was made without a key belongs to owner `local`: a key for anyone else does not see
    it, and `w1 keys create` says so and how to reach it (ownership itself does not change)."""
    env = env_for(tmp_path / "data")
    proc, url = serve(tmp_path, env, "--workers", "0")
    try:
        np.savez(tmp_path / "real.npz", images=np.zeros((20, 1, 8, 8), dtype=np.uint8))
        with open(tmp_path / "real.npz", "rb") as fh:  # local mode: no token
            up = httpx.post(f"{url}/v1/datasets", files={"file": ("real.npz", fh)}, timeout=60)
        assert up.status_code == 201, up.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    alice = w1("keys", "create", "--owner", "alice", env=env)
    assert alice.returncode == 0, alice.stderr
    assert "owner 'local' (everything made without a key, in local mode) has 1 dataset;" in alice.stderr
    assert "a key of 'alice' does not see them" in alice.stderr and "w1 keys create --owner local" in alice.stderr
    local = w1("keys", "create", "--owner", "local", env=env)
    assert local.returncode == 0 and "does not see them" not in local.stderr


def test_serve_refuses_public_host_without_keys(tmp_path):
    out = w1("serve", "--host", "0.0.0.0", "--workers", "0", "--port", str(free_port()), env=env_for(tmp_path))
    assert out.returncode != 0
    assert "refusing to listen on 0.0.0.0" in out.stderr and "w1 keys create" in out.stderr


@pytest.mark.parametrize("var, value, message", [
    ("W1_WORKERS", "abc", "W1_WORKERS: Input should be a valid integer"),
    ("W1_PORT", "abc", "W1_PORT: Input should be a valid integer"),
    ("W1_PORT", "99999", "W1_PORT: Input should be less than or equal to 65535 (got '99999')"),
    ("W1_CATALOG", "{bad", "W1_CATALOG is not valid JSON"),
])
def test_bad_settings_are_one_line_without_traceback(tmp_path, var, value, message):
    """serve, worker and keys all load the settings: a bad one is a click error, not pydantic's traceback."""
    env = env_for(tmp_path, **{var: value})
    for args in (("serve",), ("worker",), ("keys", "list")):
        out = w1(*args, env=env, timeout=60)
        assert out.returncode == 1, (args, out.stderr)
        assert out.stderr.startswith(f"Error: invalid settings: {message}"), (args, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_serve_rejects_a_port_out_of_range(tmp_path):
    """A port past 65535 used to be printed as given and bound modulo 65536."""
    out = w1("serve", "--workers", "0", "--port", "99999", env=env_for(tmp_path))
    assert out.returncode == 2 and "'--port': 99999 is not in the range 1<=x<=65535" in out.stderr
    assert "API on" not in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_serve_embedded_default_runs_a_job(tmp_path):
    """One command: API + reconciler + one CPU worker, SQLite + filesystem:// under the data dir."""
    env = env_for(tmp_path / "data", W1_HEARTBEAT_INTERVAL_S="0.3", W1_BROKER_POLL_INTERVAL_S="0.05")
    proc, url = serve(tmp_path, env)
    port = url.rsplit(":", 1)[1]
    try:
        assert "1 worker(s) on CPU" in (tmp_path / "serve.log").read_text()
        rng = np.random.default_rng(0)
        with httpx.Client(base_url=url, timeout=60) as c:  # no keys: loopback clients are served
            ids = []
            for lo in (0, 100):
                buf = tmp_path / f"{lo}.npy"
                np.save(buf, rng.integers(lo, 256 if lo else 128, (128, 1, 8, 8), dtype=np.uint8))
                ids.append(c.post("/v1/datasets", files={"file": (buf.name, buf.read_bytes())}).json()["id"])
            job = c.post("/v1/jobs", json={"real": {"dataset": ids[0]}, "fake": {"dataset": ids[1]},
                                           "options": {"critic": "fc", "width": 16, "steps": 10, "eval_every": 5,
                                                       "device": "cpu", "eval_samples": 32}}).json()
            deadline = time.monotonic() + 240
            while (j := c.get(f"/v1/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed"):
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.3)
            assert j["status"] == "succeeded", j
        # quiet logs: one line per accepted, started and finished job; no Celery banner or noise
        deadline = time.monotonic() + 10
        while f"job {job['id']} succeeded" not in (text := (tmp_path / "serve.log").read_text()):
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        for event in ("accepted", "started on local-0", "succeeded in"):
            assert sum(job["id"] in line and event in line for line in text.splitlines()) == 1, text
        for noise in ("celery@", "[tasks]", "superuser privileges", "No hostname was supplied", "INFO/"):
            assert noise not in text, text
        assert "no API keys: loopback clients are served without a token" in text
        # DNS rebinding: a page of another site whose name now points at 127.0.0.1 is same-origin to the
        # browser, but its requests name that site in Host: local mode serves loopback names only
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):  # (each answer is cached a while)
            assert httpx.get(f"{url}/v1/jobs", headers={"Host": host}).status_code == 200, host
        for host in (f"rebound.example:{port}", "rebound.example", f"127.0.0.1.nip.example:{port}"):
            r = httpx.get(f"{url}/v1/jobs", headers={"Host": host})
            assert r.status_code == 401 and "addressing this server as localhost" in r.json()["detail"], (host, r.text)
        r = httpx.post(f"{url}/v1/jobs/{job['id']}/cancel", headers={"Host": f"rebound.example:{port}"})
        assert r.status_code == 401, r.text
        # the first key ends local mode: `keys create` says so, then the server refuses and logs it
        created = w1("keys", "create", "--owner", "erin", env=env)
        assert created.returncode == 0 and "first API key" in created.stderr, created.stderr
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/v1/jobs", timeout=10).status_code != 401:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        deadline = time.monotonic() + 10
        while "requests without a token answer 401" not in (tmp_path / "serve.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        assert (tmp_path / "data" / "w1.db").exists() and (tmp_path / "data" / "broker").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    # the worker went down with the server
    leftover = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert leftover == []


def test_settings_env_file_and_defaults(tmp_path, monkeypatch):
    from service.server.settings import SettingsInvalid, get_settings

    for k in list(os.environ):
        if k.startswith("W1_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("W1_DATA_DIR", str(tmp_path))
    s = get_settings()
    assert s.db_url == f"sqlite:///{tmp_path / 'w1.db'}" and s.broker == "filesystem://"
    assert s.host == "127.0.0.1" and s.allow_torchscript is False and s.workers is None

    cfg = tmp_path / "w1.yaml"
    cfg.write_text("port: 9000\nmax_attempts: 5\ncatalog:\n  digits:\n    source: builtin:digits\n"
                   "    description: small digits\n")
    monkeypatch.setenv("W1_CONFIG", str(cfg))
    monkeypatch.setenv("W1_MAX_ATTEMPTS", "7")  # the environment wins over the file
    s = get_settings()
    assert s.port == 9000 and s.max_attempts == 7 and s.catalog["digits"].source == "builtin:digits"

    toml = tmp_path / "w1.toml"
    toml.write_text('allow_torchscript = true\n[catalog.mnist]\nsource = "torchvision:mnist?root=/srv"\n')
    monkeypatch.setenv("W1_CONFIG", str(toml))
    s = get_settings()
    assert s.allow_torchscript is True and "mnist" in s.catalog

    monkeypatch.setenv("W1_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(SettingsInvalid, match="not a file"):
        get_settings()
    # a bad value names its file key, the variable that overrides it, or the option
    cfg.write_text("port: 99999\nbogus: 1\ncatalog:\n  x:\n    description: no source\n")
    monkeypatch.setenv("W1_CONFIG", str(cfg))
    with pytest.raises(SettingsInvalid) as err:
        get_settings()
    assert f"'port' in {cfg}: Input should be less than or equal to 65535" in str(err.value)
    assert f"'bogus' in {cfg}: unknown setting" in str(err.value) and "x.source: Field required" in str(err.value)
    monkeypatch.setenv("W1_PORT", "0")
    with pytest.raises(SettingsInvalid, match="W1_PORT: Input should be greater than or equal to 1"):
        get_settings()
    cfg.write_text("port: [1\n")
    with pytest.raises(SettingsInvalid, match="does not parse"):
        get_settings()
    monkeypatch.delenv("W1_CONFIG")
    with pytest.raises(SettingsInvalid, match="--workers: Input should be greater than or equal to 0"):
        get_settings(workers=-1)
    monkeypatch.delenv("W1_PORT")
    monkeypatch.setenv("W1_BOGUS", "1")  # unknown W1_ variables are ignored, unknown file keys are not
    get_settings()


def test_gpu_count_without_cuda(monkeypatch):
    from service.server.processes import count_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
    assert count_gpus() == ["0", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert count_gpus() == []
    # the server side never initialises CUDA in the parent process
    out = subprocess.run([sys.executable, "-c", "import service.server.cli, service.server.app, torch; "
                          "print(torch.cuda.is_initialized())"], capture_output=True, text=True, cwd=ROOT,
                         env=env_for(ROOT / "none"))
    assert out.stdout.strip() == "False", out.stderr
