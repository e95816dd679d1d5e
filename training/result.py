"""What an estimate returns and reports while it runs. Plain pydantic models, so the job service can
store them as JSON and clients can read them back without torch."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


class Cancelled(Exception):
    """Raised by estimate_w1 when should_stop() returned true; the checkpoint (if any) is saved first."""

    def __init__(self, step: int):
        super().__init__(f"estimate cancelled at step {step}")
        self.step = step


class ProgressEvent(BaseModel):
    """One progress report: `objective` is the training objective averaged since the last report,
    `estimate` the latest validation estimate (None before the first validation)."""

    step: int
    total: int
    objective: float
    estimate: float | None = None
    elapsed_s: float = 0.0


class CurvePoint(BaseModel):
    """One point of the training curve. `validation` is measured on samples held out of training but
    separate from the final held-out set, so it can be used for early stopping."""

    step: int
    objective: float
    validation: float | None = None
    time_s: float = 0.0


class FIDResult(BaseModel):
    """FID beside W1 (a different quantity); `value` None with `note` saying why it was not computed."""

    value: float | None = None
    note: str = ""
    samples: int = 0


class SampleCounts(BaseModel):
    real_train: int
    real_heldout: int
    fake_train: int
    fake_heldout: int


class Timings(BaseModel):
    train_s: float
    eval_s: float
    total_s: float


class W1Result(BaseModel):
    """A W1 estimate with everything needed to judge and reproduce it.

    `estimate` is mean f(real) - mean f(fake) on held-out samples; `certified_lower_bound` divides it
    by the critic's certified Lipschitz bound, so it is a lower bound on W1 in the stated `space`
    (up to sampling error, which `certified_ci` covers)."""

    model_config = ConfigDict(extra="forbid")

    estimate: float
    stderr: float
    ci: tuple[float, float]
    confidence: float
    lipschitz_bound: float
    lipschitz_layers: list[dict[str, Any]] = Field(default_factory=list)
    certified_lower_bound: float
    certified_ci: tuple[float, float]
    orthogonality_error: float
    samples: SampleCounts
    space: dict[str, Any]
    sources: dict[str, dict[str, Any]]
    curve: list[CurvePoint] = Field(default_factory=list)
    steps_run: int
    stopped_early: bool = False
    timings: Timings
    device: str
    seed: int
    options: dict[str, Any]
    versions: dict[str, str]
    fid: FIDResult | None = None

    # the trained critic (eval mode) when the result comes straight from estimate_w1; never serialised
    _critic: Any = PrivateAttr(default=None)

    @property
    def critic(self):
        """The trained critic module, or None for a result read back from JSON."""
        return self._critic

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> "W1Result":
        return cls.model_validate_json(text)

    def summary_rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a human-readable summary, shared by the CLI and the service."""
        pct = f"{self.confidence:.0%}"
        s = self.samples
        rows = [
            ("W1 estimate (held-out)", f"{self.estimate:.4f} ± {self.stderr:.4f} (s.e.)"),
            (f"{pct} interval", f"[{self.ci[0]:.4f}, {self.ci[1]:.4f}]"),
            ("certified lower bound", f"{self.certified_lower_bound:.4f}"),
            (f"certified {pct} interval", f"[{self.certified_ci[0]:.4f}, {self.certified_ci[1]:.4f}]"),
            ("Lipschitz bound", f"{self.lipschitz_bound:.6f}"),
            ("space", _describe_space(self.space)),
            ("samples real (train/held-out)", f"{s.real_train} / {s.real_heldout}"),
            ("samples fake (train/held-out)", f"{s.fake_train} / {s.fake_heldout}"),
            ("steps", f"{self.steps_run}" + (" (early stop)" if self.stopped_early else "")),
            ("time", f"{self.timings.total_s:.1f} s (train {self.timings.train_s:.1f} s) on {self.device}"),
        ]
        if self.fid is not None:
            rows.append(("FID", f"{self.fid.value:.3f}" if self.fid.value is not None else self.fid.note))
        return rows

    def summary_table(self):
        """A rich Table of summary_rows(): the one result table (training.report)."""
        from training.report import result_table

        return result_table(self)


def _describe_space(space: dict[str, Any]) -> str:
    parts = []
    for key in ("value_range", "channels", "size", "resize"):
        if key in space and space[key] is not None:
            parts.append(f"{key}={space[key]}")
    return ", ".join(parts) if parts else str(space)
