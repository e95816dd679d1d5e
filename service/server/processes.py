"""What `w1 serve` and `w1 worker` need from the operating system, without ever touching CUDA (a
forked child cannot use CUDA once its parent initialised it): the visible GPUs, and children
whose life is tied to their parent's."""
from __future__ import annotations

import os
import shutil
import subprocess


def count_gpus() -> list[str]:
    """Visible GPU ids, without touching CUDA: CUDA_VISIBLE_DEVICES, else nvidia-smi -L."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def die_with_parent(signal_number: int, parent: int) -> None:
    """Linux: this (forked) process receives ``signal_number`` when its parent dies, even by
    SIGKILL, so no orphan is left behind (elsewhere: nothing). Exits at once when its parent is no
    longer ``parent`` (the pid before the fork): it died before the request took effect. (Not
    "parent is pid 1": in a container without an init process the parent is pid 1.)"""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal_number)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent:
        os._exit(1)
