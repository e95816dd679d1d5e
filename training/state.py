"""Step 2a: everything a candidate critic's training has, as ONE object with state_dict() and
load_state_dict(), and the checkpoint file that holds the states of all candidates of a run.

The learning-rate schedule is a pure function of the step (training.loop.Schedule.lr_at), so critic,
optimiser, batch streams, curve, objective accumulator and early-stopping state are all a resume
needs to continue exactly the run that was never interrupted."""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from training.data import BatchStream

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_VERSION = 2


class TrainState:
    """One critic in training: the module, its optimiser, its two batch streams and the bookkeeping.

    The objective is accumulated on the critic's device (`obj_sum`) and only read back at progress
    points, so a training step never waits for the host."""

    def __init__(self, name: str, critic: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 real: BatchStream, fake: BatchStream, *, input_noise: float = 0.0, noise_seed: int = 0):
        self.name, self.critic, self.optimizer, self.real, self.fake = name, critic, optimizer, real, fake
        device = next(critic.parameters()).device
        self.candidate = None  # the selection.Candidate it was built from, when it was
        # std of the Gaussian noise added to each training batch (0: none), from its own seeded stream
        self.input_noise = input_noise
        self.noise_gen = torch.Generator(device).manual_seed(noise_seed) if input_noise else None
        self.step = 0
        self.curve: list[dict] = []
        acc = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.obj_sum, self.obj_count = torch.zeros((), dtype=acc, device=device), 0
        self.last_validation: float | None = None
        self.best_value, self.best_step, self.best_state = -float("inf"), 0, None
        self.bad_evals, self.stopped_early, self.done = 0, False, False
        self.ended_by: str | None = None  # "steps", "early stopping" or "time budget" once done
        self.train_s = 0.0

    def state_dict(self) -> dict:
        return {
            "name": self.name, "step": self.step, "curve": self.curve,
            "obj": [self.obj_sum.detach().clone(), self.obj_count], "last_validation": self.last_validation,
            "best": {"value": self.best_value, "step": self.best_step, "state": self.best_state,
                     "bad": self.bad_evals},
            "stopped_early": self.stopped_early, "done": self.done, "ended_by": self.ended_by,
            "train_s": self.train_s,
            "critic": self.critic.state_dict(), "optimizer": self.optimizer.state_dict(),
            "real": self.real.state_dict(), "fake": self.fake.state_dict(), "torch_rng": torch.get_rng_state(),
            "noise_rng": self.noise_gen.get_state() if self.noise_gen is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["name"] != self.name:
            raise ValueError(f"checkpoint state of {state['name']!r} loaded into candidate {self.name!r}")
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.real.load_state_dict(state["real"])
        self.fake.load_state_dict(state["fake"])
        torch.set_rng_state(state["torch_rng"].cpu())
        self.step, self.curve = state["step"], list(state["curve"])
        obj, self.obj_count = state["obj"]
        self.obj_sum = obj.to(self.obj_sum.device)
        self.last_validation = state["last_validation"]
        best = state["best"]
        self.best_value, self.best_step, self.best_state, self.bad_evals = (
            best["value"], best["step"], best["state"], best["bad"])
        self.stopped_early, self.done, self.train_s = state["stopped_early"], state["done"], state["train_s"]
        self.ended_by = state.get("ended_by")
        if self.noise_gen is not None and state.get("noise_rng") is not None:
            self.noise_gen.set_state(state["noise_rng"].cpu())


def save_checkpoint(path: Path, fingerprint: str, states: list[TrainState], extra: dict) -> None:
    """Write every candidate's state (and `extra`: the selection so far) atomically."""
    blob = {"version": CHECKPOINT_VERSION, "fingerprint": fingerprint,
            "states": [s.state_dict() for s in states], "extra": extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own per writer (a zombie attempt of a job may still be saving), renamed into place:
    # never a half-written or interleaved checkpoint behind
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, fingerprint: str, device: torch.device) -> dict:
    """The checkpoint's {"states": [...], "extra": {...}}; a clear error for another run's file."""
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from None
    if blob.get("version") != CHECKPOINT_VERSION or blob.get("fingerprint") != fingerprint:
        raise ValueError(f"checkpoint {path} belongs to a run with other options or sources; "
                         "use another checkpoint directory or delete it")
    return blob
