"""Manual GPU check of the service: `python bench/cuda_service_check.py` on a CUDA machine.

Starts `w1 serve` (embedded default) on a GPU machine, runs one job with device=auto and checks
that the worker trained on CUDA while the serving parent process never initialised CUDA.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    data = Path(tempfile.mkdtemp())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("W1_")}
    env.update(W1_DATA_DIR=str(data / "d"), PYTHONPATH=str(ROOT))
    log = open(data / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            if proc.poll() is not None or time.monotonic() > deadline:
                print("w1 serve did not come up:\n" + (data / "serve.log").read_text()[-3000:])
                return 2
        rng = np.random.default_rng(0)
        ids = []
        with httpx.Client(base_url=url, timeout=60) as c:
            for lo in (0, 100):
                p = data / f"{lo}.npy"
                np.save(p, rng.integers(lo, 256 if lo else 128, (512, 1, 8, 8), dtype=np.uint8))
                ids.append(c.post("/v1/datasets", files={"file": (p.name, p.read_bytes())}).json()["id"])
            t0 = time.time()
            job = c.post("/v1/jobs", json={"real": {"dataset": ids[0]}, "fake": {"dataset": ids[1]},
                                           "options": {"critic": "dcgan", "steps": 200, "device": "auto"}}).json()
            while (j := c.get(f"/v1/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed", "cancelled"):
                time.sleep(0.5)
            r = j["result"] or {}
            print(json.dumps({"status": j["status"], "error": j["error"], "device": r.get("device"),
                              "estimate": r.get("estimate"), "wall_s": round(time.time() - t0, 1)}))
        parent = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.split()
        print("serve pid", proc.pid, "CUDA processes", parent, "parent uses CUDA:", str(proc.pid) in parent)
        print((data / "serve.log").read_text()[-1500:])
        return 0 if j["status"] == "succeeded" and str(r.get("device", "")).startswith("cuda") else 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
