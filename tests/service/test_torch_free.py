"""The contracts and the client work without torch: `w1 --help`, every client command's help, the
client library and a client command run in a process where `import torch` fails, and start in well
under a second of CPU time (CPU, not wall time: the shared CI machine's load must not decide it)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Prepended to every child: any import of torch (or a torch submodule) raises.
BLOCK = """
import sys, time
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""

RUN_W1 = BLOCK + """
import runpy
sys.argv = ["w1", *ARGS]
try:
    runpy.run_module("service.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
print(json.dumps({"cpu_s": time.process_time(), "torch": "torch" in sys.modules}), file=sys.stderr)
sys.exit(code)
"""


def run_w1(*args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    code = "import json\nARGS = " + json.dumps(list(args)) + "\n" + RUN_W1
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100", **(env or {})})
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    return proc, stats


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_blocker_blocks():
    proc = subprocess.run([sys.executable, "-c", BLOCK + "import torch"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "torch is blocked" in proc.stderr


@pytest.mark.parametrize("args", [
    ["--help"], ["estimate", "--help"], ["submit", "--help"], ["batch", "--help"], ["jobs", "list", "--help"],
    ["datasets", "--help"], ["generators", "add", "--help"],
])
def test_help_without_torch_under_a_second(args):
    proc, stats = run_w1(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and not stats["torch"]
    assert stats["cpu_s"] < 1.0, stats


def test_client_library_without_torch():
    code = BLOCK + ("from service.client import W1Client, parse_source\n"
                    "from service.contracts import JobCreate, JobOut, JobStatus\n"
                    "from training.options import EstimateOptions\n"
                    "from training.result import W1Result, ProgressEvent\n"
                    "from training.table import result_table\n"
                    "import training\n"
                    "assert training.EstimateOptions is EstimateOptions\n"
                    "JobCreate.model_validate({'real': {'catalog': 'a'}, 'fake': {'dataset': 'b'},"
                    " 'options': {'steps': 5, 'space': {'channels': 3}}})\n"
                    "assert JobStatus('succeeded').final and not JobStatus.RUNNING.final\n"
                    "assert parse_source('generator:g:5') == {'generator': 'g', 'samples': 5}\n"
                    "print(time.process_time(), 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    cpu_s, loaded = proc.stdout.split()
    assert loaded == "False" and float(cpu_s) < 1.0


def test_client_command_without_torch():
    """A client command runs to its (network) error without torch: one line, exit 1."""
    port = free_port()
    proc, stats = run_w1("jobs", "list", "--server", f"http://127.0.0.1:{port}")
    assert proc.returncode == 1 and "cannot reach the w1 server" in proc.stderr
    assert not stats["torch"] and stats["cpu_s"] < 1.0, stats


def test_every_command_has_a_summary_and_exists():
    from service.cli import COMMANDS, SUMMARIES, LazyGroup, main

    assert set(SUMMARIES) == set(COMMANDS)
    for name in COMMANDS:
        assert LazyGroup.get_command(main, None, name) is not None, name
