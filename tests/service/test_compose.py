"""Deployment files, checked without a Docker engine: the structure of docker-compose.yml and the
Dockerfile, and that the commands they run are real `w1` commands accepting those options."""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from packaging.specifiers import SpecifierSet

from service.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, args = current.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    return instructions


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) argument list; the shell form is not accepted for commands."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def entrypoint_and_cmd(instructions) -> tuple[list[str], list[str]]:
    entry = [exec_form(a) for k, a in instructions if k == "ENTRYPOINT"][-1]
    cmd = [exec_form(a) for k, a in instructions if k == "CMD"][-1]
    return entry, cmd


def assert_real_w1_command(args: list[str]) -> None:
    """The click group accepts these arguments (with --help, so nothing runs)."""
    result = CliRunner().invoke(main, [*args, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, f"`w1 {' '.join(args)}` is not a valid command:\n{result.output}"


# -- Dockerfile --------------------------------------------------------------------------------

def test_base_image_is_cuda_pytorch_within_the_supported_torch(dockerfile):
    image = [a for k, a in dockerfile if k == "FROM"][-1].split()[0]
    match = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda(\d+\.\d+)-cudnn\d+-(runtime|devel)",
                         image)
    assert match, f"base image {image} is not a CUDA PyTorch image"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["estimator"]
    torch_spec = next(d for d in deps if re.match(r"torch\b(?!vision)", d))
    assert match.group(1) in SpecifierSet(torch_spec[len("torch"):]), \
        f"the image's torch {match.group(1)} does not satisfy pyproject's {torch_spec}"


def test_pip_keeps_the_image_torch(dockerfile):
    installs = [a for k, a in dockerfile if k == "RUN" and "pip install" in a]
    assert installs
    for run in installs:
        for command in run.split("&&"):
            if "pip install" in command:
                assert "--constraint" in command, f"pip may replace the image's torch: {command}"


def test_image_installs_the_server_and_the_estimator(dockerfile):
    """The one image runs the API and the workers: its requirements are the [all] extra's (the
    client's, the estimator's and the server's), expanded by docker/requirements.py."""
    runs = " ".join(a for k, a in dockerfile if k == "RUN")
    extras = re.search(r"python docker/requirements.py ([\w ]+?) > /tmp/requirements.txt", runs).group(1).split()
    out = subprocess.run([sys.executable, str(ROOT / "docker" / "requirements.py"), *extras], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    names = {re.match(r"[A-Za-z0-9_.-]+", line).group(0).lower() for line in out.stdout.splitlines()
             if re.match(r"[A-Za-z]", line)}
    assert {"torch", "fastapi", "celery", "sqlalchemy", "psycopg", "httpx", "click"} <= names, names
    assert not any(n.startswith("w1-service") for n in names), "an extra of our own left unexpanded"


def test_image_torch_is_the_torch_make_installs(dockerfile):
    """One torch version: the base image's torch is the Makefile's pin (what tests run with)."""
    image = [a for k, a in dockerfile if k == "FROM"][-1].split()[0]
    pinned = re.search(r"'torch==([\d.]+)'", (ROOT / "Makefile").read_text()).group(1)
    assert image.startswith(f"pytorch/pytorch:{pinned}-"), (image, pinned)


def test_runs_as_non_root_with_a_data_volume(dockerfile):
    user = [a for k, a in dockerfile if k == "USER"][-1]
    uid, _, gid = user.partition(":")
    # numeric (hadolint DL3066), so Kubernetes' runAsNonRoot can check it without /etc/passwd
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit()), user
    volumes = [a for k, a in dockerfile if k == "VOLUME"]
    assert any("/data" in v for v in volumes)
    env = " ".join(a for k, a in dockerfile if k == "ENV")
    assert "W1_DATA_DIR=/data" in env


def test_entrypoint_and_cmd_are_real_w1_commands(dockerfile):
    entry, cmd = entrypoint_and_cmd(dockerfile)
    assert entry == ["w1"]
    assert_real_w1_command(cmd)


def test_healthcheck_runs_a_script_copied_into_the_image(dockerfile):
    checks = [a for k, a in dockerfile if k == "HEALTHCHECK"]
    assert checks, "no HEALTHCHECK"
    command = exec_form(checks[-1].split(" CMD ", 1)[1])
    workdir = [a for k, a in dockerfile if k == "WORKDIR"][-1]
    script = next(part for part in command if part.endswith(".py"))
    assert script.startswith(workdir + "/")
    assert (ROOT / script[len(workdir) + 1:]).is_file()


def test_copied_paths_exist_and_are_not_dockerignored(dockerfile):
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for keyword, args in dockerfile:
        if keyword != "COPY":
            continue
        sources = [a for a in shlex.split(args) if not a.startswith("--")][:-1]
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such path in the repository"
            assert not any(fnmatch.fnmatch(src, pattern) for pattern in ignored), \
                f"COPY {src} is excluded by .dockerignore"


def test_healthcheck_script_against_a_live_api(live_service):
    port = live_service.url.rsplit(":", 1)[1].split("/")[0]
    env = {**os.environ, "W1_PORT": port}
    proc = subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py"), "api"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_worker_healthcheck_answers_for_this_hosts_worker(redis_url, tmp_path):
    """The compose worker's health check: a Celery ping over Redis, answered by a `w1 worker`
    started as in the container (default name w1@<host>:<pid>). No API is needed for it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("W1_")}
    env.update(W1_DATA_DIR=str(tmp_path), W1_BROKER_URL=redis_url, CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=str(ROOT))
    check = [sys.executable, str(ROOT / "docker" / "healthcheck.py"), "worker"]
    before = subprocess.run(check, env=env, capture_output=True, text=True, timeout=60)
    assert before.returncode == 1 and "no worker on" in before.stderr
    worker = subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(30):
            proc = subprocess.run(check, env=env, capture_output=True, text=True, timeout=60)
            if proc.returncode == 0:
                break
            time.sleep(1)
        assert proc.returncode == 0, proc.stderr
    finally:
        worker.terminate()
        worker.wait(timeout=30)


# -- docker-compose.yml ------------------------------------------------------------------------

def test_services_present(compose):
    assert {"api", "worker", "redis", "postgres"} <= set(compose["services"])


def test_api_and_worker_commands_are_real_w1_commands(compose, dockerfile):
    entry, _ = entrypoint_and_cmd(dockerfile)
    for name in ("api", "worker"):
        service = compose["services"][name]
        assert service.get("build") or service.get("image")
        assert "entrypoint" not in service, "the image's `w1` entrypoint is used"
        assert entry == ["w1"]
        command = service["command"]
        assert_real_w1_command(command if isinstance(command, list) else shlex.split(command))


def test_worker_reserves_an_nvidia_gpu(compose):
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
               and ("count" in d or "device_ids" in d) for d in devices)


def test_every_service_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        test = service.get("healthcheck", {}).get("test")
        assert test, f"service {name} has no healthcheck"
    assert "redis-cli" in compose["services"]["redis"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(compose["services"]["postgres"]["healthcheck"]["test"])


def test_api_and_worker_share_the_data_volume(compose):
    mounts = {}
    for name in ("api", "worker"):
        service = compose["services"][name]
        data_dir = service["environment"]["W1_DATA_DIR"]
        mounts[name] = {v.split(":")[0] for v in service["volumes"]
                        if v.split(":")[1] == data_dir}
    shared = mounts["api"] & mounts["worker"]
    assert shared, "api and worker mount no common volume at W1_DATA_DIR"
    assert shared <= set(compose["volumes"]), "the shared data volume is not a named volume"


def test_scale_out_urls_point_at_the_compose_services(compose):
    for name in ("api", "worker"):
        env = compose["services"][name]["environment"]
        assert re.match(r"postgresql\+psycopg://[^@]+@postgres:5432/\w+$", env["W1_DATABASE_URL"])
        assert re.match(r"redis://redis:6379/\d+$", env["W1_BROKER_URL"])


def test_depends_on_waits_for_healthy_services(compose):
    services = compose["services"]
    for name, needs in (("api", {"redis", "postgres"}), ("worker", {"redis", "postgres", "api"})):
        depends = services[name]["depends_on"]
        assert needs <= set(depends)
        assert all(depends[dep]["condition"] == "service_healthy" for dep in needs)


def test_compose_config_validates_where_compose_is_installed(tmp_path):
    """`docker compose config -q` needs no daemon; skipped where neither compose is installed, except in CI."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                  capture_output=True).returncode == 0:
        cmd = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        cmd = ["docker-compose"]
    elif os.environ.get("CI"):  # .ci/run installs docker-compose: a missing one there is a broken CI
        pytest.fail("neither `docker compose` nor `docker-compose` is installed (CI installs docker-compose)")
    else:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    # .env.example's variables; the password empty as shipped, so compose must refuse it ...
    env = {k: v for k, v in os.environ.items() if not k.startswith("W1_")}
    example = tmp_path / ".env"
    example.write_text((ROOT / ".env.example").read_text())
    args = [*cmd, "-f", str(COMPOSE), "--env-file", str(example), "config", "-q"]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "W1_POSTGRES_PASSWORD" in proc.stderr, proc.stderr
    # ... and accept it once the password is set
    example.write_text(example.read_text().replace("W1_POSTGRES_PASSWORD=", "W1_POSTGRES_PASSWORD=s3cret-for-test"))
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_env_example_names_every_variable_compose_requires():
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert required == {"W1_POSTGRES_PASSWORD"}
    example = (ROOT / ".env.example").read_text()
    for name in required:
        assert re.search(rf"^{name}=$", example, re.M), f".env.example must list {name} (empty)"
    assert ".env" in (ROOT / ".gitignore").read_text().split() and ".env" in (ROOT / ".dockerignore").read_text().split()
