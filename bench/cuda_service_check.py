"""Every GPU check in one run (under 8 minutes on one GPU), results as JSON + markdown under $OUT.

    python bench/cuda_service_check.py                 # on the GPU machine: writes $OUT (else bench/results)
    python bench/cuda_service_check.py --cpu-smoke     # the same script, tiny sizes on the CPU (proves it runs)

Sections, each timed, each failing on its own without stopping the others:
1. install: versions, the CUDA device, the packages import.
2. tests: the unit tests that need CUDA (tests/critics/test_cuda.py: BCOP orthogonal on the GPU,
   training steps under torch.cuda.set_sync_debug_mode("error"), an estimate on CUDA) and the CPU
   host-read counters.
3. speed: the paper's 64x64 critic, BCOP vs plain convolutions, train and eval, at batch 64 and 256
   per side (bench/critic_speed.py), with the orthogonality error on the GPU (target: train <= 1.2x,
   eval 1.0x, orthogonality within 1e-4).
4. serve: `w1 serve` as shipped, one job with device=auto; the job's device, GPU memory per
   worker (nvidia-smi), and that the serving parent never loaded the CUDA driver.
5. estimate: photo patches 32x32x3, 50,000 a side, the fake side contracted toward the mean by s = 0.5
   (W1 = (1 - s) E||X - c|| exactly, on the population); default options; time to the converged
   (early-stopped) estimate, certified / true, peak GPU memory.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEADLINE_S = 7.5 * 60


def section(name, results, fn, *args):
    """Run one check; record its result (or the error) and its wall time."""
    t0 = time.perf_counter()
    print(f"== {name}", flush=True)
    try:
        out = fn(*args)
        results[name] = {"ok": bool(out.pop("ok", True)), **out}
    except Exception as exc:  # noqa: BLE001 - one failing check must not hide the others
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}
    results[name]["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({k: v for k, v in results[name].items() if k != "trace"}, default=str)[:2000], flush=True)


def _pythonpath() -> str:
    """The repository first, then whatever PYTHONPATH held (the carried wheels on the GPU machine)."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def install(args):
    import numpy
    import torch

    import critics  # noqa: F401
    import service.server.app  # noqa: F401
    import training  # noqa: F401

    cuda = torch.cuda.is_available()
    info = {"torch": torch.__version__, "cuda_runtime": torch.version.cuda, "numpy": numpy.__version__,
            "python": platform.python_version(), "cuda_available": cuda,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []}
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["driver"] = None
    info["ok"] = cuda or args.cpu_smoke
    return info


def unit_tests(args):
    files = ["tests/critics/test_cuda.py", "tests/critics/test_sync_free.py"]
    if args.cpu_smoke:
        files = ["tests/critics/test_cuda.py", "tests/critics/test_sync_free.py::test_the_counter_sees_host_reads"]
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *files], cwd=ROOT,
                       capture_output=True, text=True, timeout=240, env=dict(os.environ, PYTHONPATH=_pythonpath()))
    return {"ok": p.returncode == 0, "returncode": p.returncode, "summary": p.stdout.strip().splitlines()[-1:],
            "tail": p.stdout[-2500:]}


def speed(args):
    from bench import critic_speed

    rows = {}
    batches = (4,) if args.cpu_smoke else (64, 256)
    steps = ["--steps", "1", "--eval-steps", "1", "--warmup", "1"] if args.cpu_smoke else \
        ["--steps", "20", "--eval-steps", "20", "--warmup", "5"]
    for b in batches:
        out = critic_speed.main(["--device", args.device, "--only", "ours", "--no-ablation", "--batch", str(b),
                                 "--out", str(args.out), *steps])
        by = {r["name"]: r for r in out["results"]}
        ours, plain = by["ours: BCOPConv2d"], by["plain nn.Conv2d"]
        rows[f"batch {b}"] = {"plain_train_ms": plain["train_s"] * 1e3, "bcop_train_ms": ours["train_s"] * 1e3,
                              "train_ratio": ours["train_ratio"], "plain_eval_ms": plain["eval_s"] * 1e3,
                              "bcop_eval_ms": ours["eval_s"] * 1e3, "eval_ratio": ours["eval_ratio"],
                              "orth_error": ours["orth_error"]}
    ok = all(r["orth_error"] is not None and r["orth_error"] < 1e-4 for r in rows.values())
    targets = {k: {"train<=1.2x": r["train_ratio"] <= 1.2, "eval<=1.05x": r["eval_ratio"] <= 1.05}
               for k, r in rows.items()}
    return {"ok": ok, "rows": rows, "targets": targets}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gpu_memory() -> dict[str, int]:
    """MiB used per process, from nvidia-smi ({} without one)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    rows = [line.split(",") for line in out.strip().splitlines() if "," in line]
    return {pid.strip(): int(mem.strip()) for pid, mem in rows if mem.strip().isdigit()}


def serve(args):
    import httpx
    import numpy as np

    data = Path(tempfile.mkdtemp(prefix="w1-serve-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("W1_")}
    env.update(W1_DATA_DIR=str(data / "d"), PYTHONPATH=_pythonpath())
    log_path = data / "serve.log"
    t_start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env, cwd=ROOT,
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    memory: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                return {"ok": False, "error": "w1 serve did not come up", "log": log_path.read_text()[-3000:]}
            time.sleep(0.2)
        t_up = time.monotonic()
        rng = np.random.default_rng(0)
        n, steps = (256, 20) if args.cpu_smoke else (4096, 400)
        with httpx.Client(base_url=url, timeout=60) as c:
            ids = []
            for lo in (0, 100):
                path = data / f"{lo}.npy"
                np.save(path, rng.integers(lo, 256 if lo else 128, (n, 3, 32, 32), dtype=np.uint8))
                r = c.post("/v1/datasets", files={"file": (path.name, path.read_bytes())})
                r.raise_for_status()
                ids.append(r.json()["id"])
            t0 = time.monotonic()
            r = c.post("/v1/jobs", json={"real": {"dataset": ids[0]}, "fake": {"dataset": ids[1]},
                                         "options": {"steps": steps, "device": "auto", "eval_samples": 256}})
            r.raise_for_status()
            job = r.json()
            while (j := c.get(f"/v1/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed", "cancelled"):
                for pid, mib in _gpu_memory().items():
                    memory[pid] = max(memory.get(pid, 0), mib)
                if time.monotonic() - t0 > 240:
                    return {"ok": False, "error": "job did not finish in 240 s", "job": j}
                time.sleep(0.5)
        result = j.get("result") or {}
        maps = Path(f"/proc/{proc.pid}/maps").read_text() if Path(f"/proc/{proc.pid}/maps").exists() else ""
        device = str(result.get("device", ""))
        want = "cpu" if args.cpu_smoke else "cuda"
        return {"ok": j["status"] == "succeeded" and device.startswith(want) and "libcuda.so" not in maps,
                "status": j["status"], "error": j.get("error"), "device": device,
                "certified_lower_bound": result.get("certified_lower_bound"), "steps_run": result.get("steps_run"),
                "job_wall_s": round(time.monotonic() - t0, 1), "serve_startup_s": round(t_up - t_start, 1),
                "parent_loaded_cuda_driver": "libcuda.so" in maps,
                "gpu_memory_mib_per_process": memory, "serve_pid": proc.pid,
                "log_tail": log_path.read_text()[-1500:]}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def estimate(args):
    import numpy as np
    import torch

    from training import estimate_w1
    from training.builtin import photos

    n = 600 if args.cpu_smoke else 50_000
    try:
        real, _, _ = photos(size=32, count=n, seed=0)
        other, _, _ = photos(size=32, count=n, seed=1)
        real = real.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        other = other.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        data = "builtin:photos patches"
    except Exception as exc:  # noqa: BLE001 - scikit-image's pictures missing: smooth synthetic images
        rng = np.random.default_rng(0)
        real, other = (np.kron(rng.random((n, 3, 8, 8), dtype=np.float32), np.ones((4, 4), np.float32))
                       for _ in range(2))
        data = f"synthetic 8x8 noise upsampled to 32x32 (photos unavailable: {exc})"
    s = 0.5
    center = real.mean(axis=0, keepdims=True)
    fake = center + s * (other - center)
    # both sides in [0, 1], mapped to [-1, 1] (x2): W1 there = 2 (1 - s) E||X - c|| (population value,
    # estimated on the real samples; its sampling error is far below the estimate's)
    true_w1 = 2 * (1 - s) * float(np.linalg.norm((real - center).reshape(n, -1).astype(np.float64), axis=1).mean())
    opts = {"device": args.device, "space": {"value_range": (0.0, 1.0)}}
    if args.cpu_smoke:
        opts.update(steps=20, eval_every=10)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    r = estimate_w1(real, fake, **opts)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if args.device == "cuda" else None
    return {"ok": r.certified_ci[0] <= true_w1, "data": data, "samples_per_side": n, "true_w1": true_w1,
            "estimate": r.estimate, "certified_lower_bound": r.certified_lower_bound,
            "certified_over_true": r.certified_lower_bound / true_w1, "lipschitz_bound": r.lipschitz_bound,
            "steps_run": r.steps_run, "stopped_early": r.stopped_early, "wall_s_to_converged_estimate": wall,
            "train_s": r.timings.train_s, "eval_s": r.timings.eval_s, "steps_per_s": r.steps_run / r.timings.train_s,
            "peak_gpu_memory_mib": peak, "device": r.device, "critic": r.options.get("critic"),
            "conv": r.options.get("conv")}


def markdown(report) -> str:
    m = report["meta"]
    lines = [f"# GPU service check, {m['date']}", "", f"device: {m['device_name']}; torch {m['torch']}; "
             f"mode: {'CPU smoke (tiny sizes)' if m['cpu_smoke'] else 'full'}; total {m['total_s']} s", "",
             "| check | ok | wall s | notes |", "|---|---|---|---|"]
    for name, r in report["checks"].items():
        note = r.get("error") or ""
        if name == "tests":
            note = note or " ".join(r.get("summary", []))
        if name == "serve" and not r.get("error"):
            note = f"device {r.get('device')}, GPU MiB per process {r.get('gpu_memory_mib_per_process')}, " \
                   f"parent loaded CUDA driver: {r.get('parent_loaded_cuda_driver')}, job {r.get('job_wall_s')} s"
        if name == "estimate" and not r.get("error"):
            note = (f"{r['samples_per_side']} a side, {r['critic']}/{r['conv']}: certified/true "
                    f"{r['certified_over_true']:.3f} in {r['wall_s_to_converged_estimate']:.1f} s ({r['steps_run']} steps, "
                    f"{r['steps_per_s']:.1f} steps/s), peak GPU memory {r['peak_gpu_memory_mib']} MiB")
        lines.append(f"| {name} | {'yes' if r['ok'] else 'NO'} | {r['wall_s']} | {str(note)[:400]} |")
    sp = report["checks"].get("speed", {}).get("rows")
    if sp:
        lines += ["", "## BCOP vs plain convolutions (paper's 64x64 critic)", "",
                  "| batch per side | plain train | BCOP train | ratio | plain eval | BCOP eval | ratio | orth. error |",
                  "|---|---|---|---|---|---|---|---|"]
        for k, r in sp.items():
            lines.append(f"| {k.split()[-1]} | {r['plain_train_ms']:.1f} ms | {r['bcop_train_ms']:.1f} ms | "
                         f"{r['train_ratio']:.2f}x | {r['plain_eval_ms']:.1f} ms | {r['bcop_eval_ms']:.1f} ms | "
                         f"{r['eval_ratio']:.2f}x | {r['orth_error']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-smoke", "--dry-run", action="store_true", dest="cpu_smoke",
                    help="tiny sizes on the CPU: proves the script runs, measures nothing")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench" / "results"))
    ap.add_argument("--only", nargs="*", help="run only these sections")
    args = ap.parse_args(argv)
    args.device = "cpu" if args.cpu_smoke else "cuda"
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    checks: dict[str, dict] = {}
    for name, fn in (("install", install), ("tests", unit_tests), ("speed", speed), ("serve", serve),
                     ("estimate", estimate)):
        if args.only and name not in args.only:
            continue
        if time.perf_counter() - t0 > DEADLINE_S:
            checks[name] = {"ok": False, "error": "skipped: out of the 7.5 min budget", "wall_s": 0}
            continue
        section(name, checks, fn, args)
    import torch

    now = dt.datetime.now(dt.timezone.utc)
    meta = {"date": now.isoformat(timespec="seconds"), "cpu_smoke": args.cpu_smoke, "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
            "host": platform.node(), "total_s": round(time.perf_counter() - t0, 1)}
    report = {"meta": meta, "checks": checks}
    stem = args.out / f"cuda_service_check-{'cpu-smoke' if args.cpu_smoke else 'cuda'}-{now:%Y-%m-%d}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {stem}.json and .md")
    return 0 if all(c["ok"] for c in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
