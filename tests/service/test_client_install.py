"""The client installs alone and works: `pip install` of this project without extras, into a fresh
virtual environment (no system packages), gives a `w1` whose client commands and W1Client run
against a real server (`live_service`), and in which torch, FastAPI, Celery and the database drivers
cannot even be imported. The estimator's and the server's commands name the extra to install.

pip fetches the client's few requirements from the package index (or its local cache)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SERVER_SIDE = ("torch", "torchvision", "fastapi", "starlette", "sqlalchemy", "alembic", "celery", "kombu",
               "psycopg", "uvicorn", "sklearn", "PIL", "scipy")
FAST = ["-o", "critic=fc", "-o", "width=16", "-o", "steps=30", "-o", "batch_size=32", "-o", "eval_every=10",
        "-o", "device=cpu"]


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A fresh venv with `pip install <this project>` (no extras): the client install."""
    root = tmp_path_factory.mktemp("client-install")
    source = root / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("critics", "training", "service"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    pip = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                          "--quiet", str(source)], capture_output=True, text=True, timeout=600,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return env_dir


def run_w1(env_dir: Path, *args: str, server=None, cwd=None) -> subprocess.CompletedProcess:
    """`w1 ARGS` of the client venv, piped (not a terminal), away from this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COLUMNS") and not k.startswith("W1_")}
    if server is not None:
        env.update(W1_SERVER=server.url, W1_TOKEN=server.token)
    return subprocess.run([str(env_dir / "bin" / "w1"), *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd or env_dir)


def test_server_and_estimator_packages_are_not_installed(client_venv):
    code = ("import importlib.util, json, sys; "
            f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {SERVER_SIDE!r}}}))")
    out = subprocess.run([str(client_venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         cwd=client_venv, timeout=60, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert not any(found.values()), f"installed with the client: {[m for m, ok in found.items() if ok]}"


def test_estimator_and_server_commands_name_their_extra(client_venv):
    for args, extra in ((["estimate", "a.npz", "b.npz"], "estimator"), (["serve"], "server"),
                        (["worker"], "server"), (["keys", "list"], "server"),
                        (["series", "a.npz", "b.npz"], "estimator")):
        out = run_w1(client_venv, *args)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert f"pip install 'w1-service[{extra}]'" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "Usage:" in run_w1(client_venv, "estimate", "--help").stdout  # help needs no extra


def test_client_commands_and_library_against_a_live_server(client_venv, live_service, tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "real.npz", images=rng.integers(0, 128, (200, 1, 8, 8), dtype=np.uint8))
    np.savez(tmp_path / "fake.npz", images=rng.integers(100, 256, (200, 1, 8, 8), dtype=np.uint8))
    (tmp_path / "batch.yaml").write_text(
        "real: real.npz\noptions: {critic: fc, width: 16, steps: 30, batch_size: 32, eval_every: 10, device: cpu}\n"
        "fakes:\n  - {label: bright, source: fake.npz}\n  - {label: same, source: real.npz}\n")

    added = run_w1(client_venv, "datasets", "add", str(tmp_path / "real.npz"), server=live_service)
    assert added.returncode == 0 and added.stdout.strip().startswith("ds_"), added.stderr
    done = run_w1(client_venv, "submit", "real.npz", "fake.npz", *FAST, "--label", "client-only", "--wait",
                  server=live_service, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "certified lower bound" in done.stdout and "lower confidence bound" in done.stdout

    listed = run_w1(client_venv, "jobs", "list", "--label", "client-only", server=live_service)
    assert listed.returncode == 0 and "succeeded" in listed.stdout, listed.stderr
    batch = run_w1(client_venv, "batch", "batch.yaml", server=live_service, cwd=tmp_path)
    assert batch.returncode == 0, batch.stderr
    assert "certified lower bound" in batch.stdout and "bright" in batch.stdout and "same" in batch.stdout
    assert (tmp_path / "batch.csv").is_file() and (tmp_path / "batch.json").is_file()
    assert run_w1(client_venv, "generators", "list", server=live_service).returncode == 0
    series = run_w1(client_venv, "series", "real.npz", "fake.npz", "fake.npz", "real.npz", "--labels", "a,b,c",
                    "--critic", "fc", "--width", "16", "--steps", "30", "--batch-size", "32", "--eval-every", "10",
                    "--device", "cpu", "--server", live_service.url, "--csv", "series.csv", server=live_service,
                    cwd=tmp_path)
    assert series.returncode == 0, series.stderr
    assert "warm" in series.stdout and "c" in series.stdout and (tmp_path / "series.csv").read_text().count("\n") == 4

    builtin = run_w1(client_venv, "submit", "builtin:digits", "fake.npz", server=live_service, cwd=tmp_path)
    assert builtin.returncode == 1 and "pip install 'w1-service[estimator]'" in builtin.stderr, builtin.stderr

    code = ("import sys; from service.client import W1Client\n"
            f"with W1Client({live_service.url!r}, token={live_service.token!r}) as w1:\n"
            "    jobs = w1.list_jobs(label='client-only')['items']\n"
            "    print(jobs[0]['status'], jobs[0]['result']['certified_lower_bound'] > 0, 'torch' in sys.modules)\n")
    out = subprocess.run([str(client_venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["succeeded", "True", "False"]
