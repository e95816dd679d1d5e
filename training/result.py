"""What an estimate returns and reports while it runs. Plain pydantic models, so the job service can
store them as JSON and clients can read them back without torch."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


class Cancelled(Exception):
    """Raised by estimate_w1 when should_stop() returned true; the checkpoint (if any) is saved first."""

    def __init__(self, step: int):
        super().__init__(f"estimate cancelled at step {step}")
        self.step = step


class ProgressEvent(BaseModel):
    """One progress report. `step` counts the training steps of every critic of the estimate so far
    (with critic='auto' the candidates' trials too), so it never goes back; `total` is the number of
    steps now expected (it shrinks when the choice or early stopping ends training sooner). `objective`
    is the training objective averaged since the last report, `estimate` the latest validation
    estimate (None before the first validation)."""

    step: int
    total: int
    objective: float
    estimate: float | None = None
    elapsed_s: float = 0.0
    phase: str = Field("", description="'selection' (critic='auto' trying its candidates), 'training' "
                       "(the chosen critic) or 'evaluation' (held-out estimate, FID).")
    candidate: str = Field("", description="The critic being trained (a candidate name with critic='auto').")
    candidate_step: int = Field(0, description="That critic's own training step.")


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
    real_validation: int = 0
    fake_validation: int = 0


class Timings(BaseModel):
    """Seconds per phase: setup (sources, splits, critics), training (all candidates, selection
    included), held-out evaluation, total; `selection_s` is the candidates' trials and the choice,
    `steps_per_s` the chosen critic's training speed."""

    train_s: float
    eval_s: float
    total_s: float
    selection_s: float = 0.0
    setup_s: float = 0.0
    steps_per_s: float | None = None


class CandidateRecord(BaseModel):
    """One critic that critic='auto' trained: its spec, its certified validation value (the only number
    the choice looks at) with its standard error, its Lipschitz bound, when its trial ended and how far
    behind the winner it was then, steps and time."""

    name: str
    spec: dict[str, Any]
    validation: float | None = Field(None, description="Best validation estimate / lipschitz_bound, at the choice.")
    lipschitz_bound: float | None = None
    validation_stderr: float | None = Field(None, description="Standard error of `validation`.")
    behind_se: float | None = Field(None, description="How far the leader was ahead of it when its trial ended, in "
                                    "standard errors of the difference (None for the winner).")
    trial_ended_at: int | None = Field(None, description="Its step when its trial ended (None for the winner).")
    training: dict[str, float] = Field(default_factory=dict, description="Training settings of its own (small "
                                       "data): lr, input_noise (in units of the data's spread) and input_noise_std.")
    steps: int = 0
    train_s: float = 0.0
    stopped_early: bool = False


class Selection(BaseModel):
    """How critic='auto' chose: every candidate, the winner, the rule, and when and why it decided."""

    chosen: str
    candidates: list[CandidateRecord]
    trial_steps: int = Field(description="The longest trial a candidate could get (steps).")
    rule: str = ("candidates train in rounds of eval_every steps; one that another leads by margin_threshold_se "
                 "standard errors of the validation difference is out; at the end of the trials the highest "
                 "certified validation value wins, except that on small data (under 1,000 training samples a side) "
                 "the first candidate is kept unless another leads it by 2 standard errors; held-out samples "
                 "unread until chosen")
    decided_at_step: int = Field(0, description="The candidates' step when the choice was made.")
    margin_se: float | None = Field(None, description="The winner's lead over the runner-up at the choice, in "
                                    "standard errors of the difference of their certified validation values "
                                    "(negative where small data kept the first candidate behind a leader).")
    margin_threshold_se: float | None = Field(None, description="The lead that ends a candidate's trial.")
    reason: str = Field("", description="When and why the choice was made, in words.")


class SeriesPosition(BaseModel):
    """Where an estimate sits in a checkpoint series (training.series) and how its critic started:
    `start` is 'cold' (a fresh critic), 'warm' (the previous item's critic, trained on) or 'fallback'
    (cold, because the warm critic validated below a short cold trial); the certified validation values
    that decided it (the held-out samples play no part in the decision)."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="Position in the series (0 = the first checkpoint).")
    label: str
    step: int | None = Field(None, description="The checkpoint's training step, when given.")
    start: Literal["cold", "warm", "fallback"]
    carried_validation: float | None = Field(None, description="Certified validation value of the carried critic "
                                             "on this item before it trained here.")
    warm_validation: float | None = Field(None, description="Certified validation value of the warm-started "
                                          "critic (best of its evaluations, the carried critic's included).")
    cold_trial_validation: float | None = Field(None, description="Certified validation value of the short cold "
                                                "trial it was compared with.")
    lead_se: float | None = Field(None, description="The warm critic's lead over the cold trial in standard "
                                  "errors of their paired validation difference (negative: behind).")
    warm_lr: float | None = Field(None, description="The warm critic's learning rate (the series chooses it at its "
                                  "first warm item by racing the candidate rates on the validation split).")
    decision: str = ""
    train_steps: int = Field(0, description="Every training step this item ran: auto's trials, the warm critics' "
                             "and the cold trial's.")

    @property
    def warm_started(self) -> bool:
        return self.start == "warm"


class FoldRecord(BaseModel):
    """One fold of a cross-fitted estimate: its critic trained on the other folds, evaluated on this one."""

    fold: int
    real_heldout: int
    fake_heldout: int
    estimate: float = Field(description="Mean f(real) - mean f(fake) of this fold's critic on this fold.")
    stderr: float
    lipschitz_bound: float
    certified: float = Field(description="estimate / lipschitz_bound.")
    steps: int
    critic: str = Field(description="The critic this fold trained (auto's choice on this fold's validation split).")


class W1Result(BaseModel):
    """A W1 estimate with everything needed to judge and reproduce it.

    `estimate` is mean f(real) - mean f(fake) on held-out samples; `certified_lower_bound` divides it
    by the critic's certified Lipschitz bound, so it is a lower bound on W1 in the stated `space`
    (up to sampling error, which `certified_ci` covers); `lower_confidence_bound` is the one-sided
    bound W1 >= it with probability `confidence`, never negative. `legend` says this in the JSON,
    `notes` explains anything a reader must know (a negative value, a bound above 1)."""

    model_config = ConfigDict(extra="forbid")

    estimate: float
    stderr: float
    ci: tuple[float, float]
    confidence: float
    lipschitz_bound: float
    lipschitz_layers: list[dict[str, Any]] = Field(default_factory=list)
    certified_lower_bound: float
    certified_ci: tuple[float, float]
    lower_confidence_bound: float | None = None
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
    critic_spec: dict[str, Any] | None = Field(None, description="The chosen critic (critics.critic_from_spec).")
    selection: Selection | None = None
    series: SeriesPosition | None = Field(None, description="Set when the estimate is an item of a checkpoint "
                                          "series: its position and how its critic started.")
    folds: list[FoldRecord] | None = Field(None, description="Cross-fitting (folds > 1): every fold's critic and "
                                           "value; the estimate pools them (selection and curve: the first fold's).")
    notes: list[str] = Field(default_factory=list)
    legend: dict[str, str] = Field(default_factory=dict)

    # the trained critics (eval mode) when the result comes straight from estimate_w1; never serialised
    _critics: list = PrivateAttr(default_factory=list)

    @property
    def critic(self):
        """The trained critic module (cross-fitting: the first fold's), or None for a result read back
        from JSON."""
        return self._critics[0] if self._critics else None

    @property
    def critics(self) -> list:
        """Every trained critic: one, or one per fold (cross-fitting); empty for a result read from JSON."""
        return list(self._critics)

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> "W1Result":
        return cls.model_validate_json(text)

    def summary_rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a human-readable summary, shared by the CLI and the service."""
        pct = f"{self.confidence:.0%}"
        s, t = self.samples, self.timings
        rows = []
        if self.lower_confidence_bound is not None:
            rows.append((f"W1 >= ({pct} lower confidence bound)", f"{self.lower_confidence_bound:.4f}"))
        rows += [
            ("certified lower bound (point estimate / L)", f"{self.certified_lower_bound:.4f}"),
            (f"certified {pct} interval", f"[{self.certified_ci[0]:.4f}, {self.certified_ci[1]:.4f}]"),
            ("W1 estimate (critic's held-out dual value)", f"{self.estimate:.4f} ± {self.stderr:.4f} (s.e.)"),
            (f"{pct} interval", f"[{self.ci[0]:.4f}, {self.ci[1]:.4f}]"),
            ("Lipschitz bound L", f"{self.lipschitz_bound:.6f}"),
            ("space", _describe_space(self.space)),
            ("samples real (train/validation/held-out)", f"{s.real_train} / {s.real_validation} / {s.real_heldout}"),
            ("samples fake (train/validation/held-out)", f"{s.fake_train} / {s.fake_validation} / {s.fake_heldout}"),
        ]
        if self.critic_spec is not None:
            rows.append(("critic", _describe_critic(self.critic_spec)))
        if self.selection is not None:
            sel = self.selection
            rows.append(("critic choice (validation, certified)", ", ".join(
                f"{c.name} {c.validation:.4f}" + (f" ± {c.validation_stderr:.4f}" if c.validation_stderr else "")
                if c.validation is not None else f"{c.name} -" for c in sel.candidates) + f" -> {sel.chosen}"))
            if len(sel.candidates) > 1:
                rows.append(("chosen at step", f"{sel.decided_at_step} of at most {sel.trial_steps}"
                             + (f", lead {sel.margin_se:.1f} s.e." if sel.margin_se is not None else "")))
        rows.append(("steps", f"{self.steps_run}" + (" (early stop)" if self.stopped_early else "")
                     + (f", {t.steps_per_s:.1f} steps/s" if t.steps_per_s else "")))
        rows.append(("time", f"{t.total_s:.1f} s (setup {t.setup_s:.1f} s, train {t.train_s:.1f} s"
                     + (f", of which selection {t.selection_s:.1f} s" if t.selection_s else "")
                     + f", evaluation {t.eval_s:.1f} s) on {self.device}"
                     + _threads(self.versions)))
        if self.fid is not None:
            rows.append(("FID", f"{self.fid.value:.3f}" if self.fid.value is not None else self.fid.note))
        rows += [("note", note) for note in self.notes]
        return rows


def _threads(versions: dict[str, str]) -> str:
    """', 2 threads (1 from 1.5 s (...))' for the time row: the CPU threads and what the watch changed."""
    threads = versions.get("threads")
    if not threads:
        return ""
    changes = versions.get("threads_changes")
    return f", {threads} thread{'s' if threads != '1' else ''}" + (f"; then {changes}" if changes else "")


def _describe_critic(spec: dict[str, Any]) -> str:
    parts = [str(spec.get("name"))]
    if spec.get("name") == "dcgan":
        parts.append(str(spec.get("conv")))
    parts.append(str(spec.get("activation")))
    if spec.get("width"):
        parts.append(f"width {spec['width']}")
    parts += [f"{k}={v}" for k, v in (spec.get("options") or {}).items()]
    return " ".join(parts)


def describe_space(space: dict[str, Any]) -> str:
    """One line naming the input space (used in tables and plot titles)."""
    return _describe_space(space)


def _describe_space(space: dict[str, Any]) -> str:
    size = space.get("size")
    if space.get("channels") == 1 and size and size[0] == 1:  # N×D arrays are 1×1×D samples
        return f"vectors of {size[1]}, value_range={space.get('value_range')}"
    parts = []
    for key in ("value_range", "channels", "size", "resize"):
        if key in space and space[key] is not None:
            parts.append(f"{key}={space[key]}")
    return ", ".join(parts) if parts else str(space)
