"""An estimate quiet, beside a CPU-bound neighbour (there from the start, or arriving LATE_S seconds
into the estimate), and two estimates side by side (two workers on one machine): steps/s of each
against the quiet row (issue 14's target: within 2x).

Each estimate is `w1 estimate` in a fresh process, as a user or a worker runs it (so the thread policy,
training.threads, applies as it would there): the FC critic on digits against two digit classes, a
fixed number of steps (no early stopping), steps/s from the result's timings (training only). The
neighbour is one pure-Python spin. Two side by side get W1_HOST_WORKERS=2, as `w1 serve --workers 2`
gives its workers. With --baseline-root, the same rows for another checkout (e.g. the commit before
the thread policy: torch's inherited threads) run in the same call, rows interleaved.

    PYTHONPATH=. python bench/neighbour.py                          # writes bench/results/neighbour_<date>_cpu.md
    PYTHONPATH=. python bench/neighbour.py --baseline-root /tmp/w1-before --steps 300
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASE = ["builtin:digits", "builtin:digits?classes=0,1"]


def estimate_cmd(steps: int, critic: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", "estimate", *CASE, "--critic", critic, "--steps", str(steps),
            "--no-early-stopping", "--quiet", "--json", "--seed", "0"]


def launch(root: Path, steps: int, critic: str, workers: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(root), W1_HOST_WORKERS=str(workers))
    for name in ("OMP_NUM_THREADS", "W1_THREADS", "OMP_WAIT_POLICY"):
        env.pop(name, None)
    return subprocess.Popen(estimate_cmd(steps, critic), cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"estimate failed ({proc.returncode}): {err.strip()[-2000:]}")
    result = json.loads(out)
    return {"steps_per_s": result["timings"]["steps_per_s"], "total_s": result["timings"]["total_s"],
            "threads": result["versions"].get("threads", "inherited"), "estimate": result["estimate"],
            "threads_changes": result["versions"].get("threads_changes")}


LATE_S = 2.0  # the late neighbour arrives this long after the estimate's process started (training by then)


def spin() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def row(root: Path, mode: str, steps: int, critic: str) -> list[dict]:
    """One row: 'quiet', 'neighbour' (a spin beside it), 'late' (a spin arriving LATE_S s in) or 'pair'
    (two estimates side by side)."""
    neighbour = spin() if mode == "neighbour" else None
    try:
        if neighbour is not None:
            time.sleep(0.5)
        load = os.getloadavg()[0]
        procs = [launch(root, steps, critic, 2 if mode == "pair" else 1) for _ in range(2 if mode == "pair" else 1)]
        if mode == "late":
            time.sleep(LATE_S)
            neighbour = spin()
        return [dict(finish(p), load_at_start=load) for p in procs]
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


def table(results: dict[str, dict[str, list[dict]]]) -> list[str]:
    lines = ["| code | threads at start | quiet steps/s | + CPU-bound neighbour | vs quiet | + neighbour arriving "
             f"{LATE_S:g} s in | vs quiet | two side by side (each) | vs quiet | load average at each row's start |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, rows in results.items():
        quiet = rows["quiet"][0]["steps_per_s"]
        nb, late = rows["neighbour"][0]["steps_per_s"], rows["late"][0]["steps_per_s"]
        pair = [r["steps_per_s"] for r in rows["pair"]]
        threads = "/".join(sorted({str(r["threads"]) for rs in rows.values() for r in rs}))
        lines.append(f"| {label} | {threads} | {quiet:.1f} | {nb:.1f} | {quiet / nb:.2f}x slower | {late:.1f} | "
                     f"{quiet / late:.2f}x slower | {pair[0]:.1f}, {pair[1]:.1f} | {quiet / min(pair):.2f}x slower (worst) | "
                     + " / ".join(f"{rows[m][0]['load_at_start']:.1f}" for m in MODES) + " |")
    return lines


MODES = ("quiet", "neighbour", "late", "pair")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--critic", default="fc")
    ap.add_argument("--baseline-root", type=Path, default=None, help="another checkout to run the same rows for")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / f"neighbour_{dt.date.today()}_cpu.md"))
    args = ap.parse_args()
    roots = {"this checkout": ROOT}
    if args.baseline_root is not None:
        roots = {f"baseline ({args.baseline_root.name})": args.baseline_root.resolve(), **roots}
    load0 = os.getloadavg()
    results: dict[str, dict[str, list[dict]]] = {label: {} for label in roots}
    for mode in MODES:
        for label, root in roots.items():  # interleaved, so both checkouts see the same machine
            results[label][mode] = row(root, mode, args.steps, args.critic)
            print(label, mode, results[label][mode], flush=True)
    load1 = os.getloadavg()
    cmd = "PYTHONPATH=. python bench/neighbour.py" + (f" --baseline-root {args.baseline_root}" if args.baseline_root else "") \
        + f" --steps {args.steps} --critic {args.critic}"
    text = "\n".join([
        f"# A busy neighbour and a second worker beside an estimate ({dt.date.today()}, CPU)", "",
        f"`w1 estimate {' '.join(repr(c) for c in CASE)} --critic {args.critic} --steps {args.steps} "
        "--no-early-stopping`, each in a fresh process; steps/s of training from the result. Neighbour: one "
        f"pure-Python spin, started before the estimate or {LATE_S:g} s after its process. Two side by side: W1_HOST_WORKERS=2 (as `w1 serve --workers 2` sets). "
        f"{len(os.sched_getaffinity(0))} cores owned; load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end "
        "(the machine is shared: the quiet row is only as quiet as that).", "", f"Command: `{cmd}`", "",
        *table(results), "", "Raw:", "", "```", json.dumps(results, indent=1), "```"])
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
