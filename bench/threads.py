"""What a second CPU thread buys, quiet and beside a busy neighbour, with OpenMP's two wait policies.

Runs `bench/profile_step.py --no-phases --threads 1,2` (step wall time of the default critics and their
plain twins at 1x8x8, 1x16x16, 3x32x32; the thread counts take turns in blocks of steps in one
process) four times, each in a fresh process because OpenMP reads its wait policy when torch loads it:
OMP_WAIT_POLICY=ACTIVE (spin at barriers, libgomp's behaviour when nothing is set) and PASSIVE (sleep),
each without and with a CPU-bound neighbour process (one pure-Python spin). training.threads follows
this table (bench/results/threads_<date>_cpu.md).

    PYTHONPATH=. python bench/threads.py                  # writes bench/results/threads_<date>_cpu.md
    PYTHONPATH=. python bench/threads.py --steps 12 --shapes 1x8x8
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(policy: str, neighbour: bool, args) -> str:
    cmd = [sys.executable, str(ROOT / "bench" / "profile_step.py"), "--no-phases", "--threads", "1,2",
           "--steps", str(args.steps), "--shapes", args.shapes] + (["--neighbour"] if neighbour else [])
    env = dict(os.environ, OMP_WAIT_POLICY=policy, PYTHONPATH=str(ROOT))
    env.pop("OMP_NUM_THREADS", None)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--shapes", default="1x8x8,1x16x16,3x32x32")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / f"threads_{dt.date.today()}_cpu.md"))
    args = ap.parse_args()
    parts = [f"# Step time at 1 and 2 CPU threads, quiet and beside a busy neighbour ({dt.date.today()}, CPU)", "",
             "Wall time per training step (data, forward, backward, Adam; batch 64 + 64), median of the recorded "
             "steps; the two thread counts take turns in blocks of 5 steps in one process. Command: "
             f"`PYTHONPATH=. python bench/threads.py --steps {args.steps} --shapes {args.shapes}`.", ""]
    for policy in ("ACTIVE", "PASSIVE"):
        for neighbour in (False, True):
            parts += [f"## OMP_WAIT_POLICY={policy}, {'one CPU-bound neighbour' if neighbour else 'no neighbour started'}",
                      "", run(policy, neighbour, args), ""]
    text = "\n".join(parts)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
