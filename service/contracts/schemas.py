"""Pydantic models of the REST API (docs/api.md). Request models forbid unknown fields so a typo
answers 422 instead of being silently ignored.

The API, the worker, the client and the CLI share them; they import pydantic and the torch-free
training.options / training.result only (checked by import-linter, pyproject.toml)."""
from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from training.options import EstimateOptions
from training.result import W1Result


class JobStatus(StrEnum):
    """A job's life: queued -> running -> succeeded | failed | cancelled (a job can be requeued)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class Source(BaseModel):
    """Exactly one of: an uploaded dataset, a catalog name, or an uploaded generator (+ samples)."""

    model_config = ConfigDict(extra="forbid")
    # unset kinds are left out when shown (a job's spec echoes {"catalog": "digits"}, as submitted)
    dataset: str | None = Field(None, exclude_if=lambda v: v is None)
    catalog: str | None = Field(None, exclude_if=lambda v: v is None)
    generator: str | None = Field(None, exclude_if=lambda v: v is None)
    samples: int | None = Field(None, ge=2, le=10_000_000, exclude_if=lambda v: v is None)

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in ("dataset", "catalog", "generator") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a source is exactly one of {\"dataset\": id}, {\"catalog\": name} or "
                             "{\"generator\": id, \"samples\": n}")
        if self.generator is None and self.samples is not None:
            raise ValueError("'samples' only applies to a generator source")
        return self

    @classmethod
    def parse(cls, text: str) -> Source:
        """The command line's names for what the server has: ``catalog:NAME``, ``dataset:ID``,
        ``generator:ID`` or ``generator:ID:SAMPLES``. ValueError, naming ``text``, otherwise."""
        kind, sep, rest = text.partition(":")
        if not sep or kind not in SERVER_KINDS:
            raise ValueError(f"{text!r}: not catalog:NAME, dataset:ID or generator:ID[:SAMPLES]")
        if not rest:
            raise ValueError(f"{text!r}: missing the name or id after '{kind}:'")
        fields: dict[str, Any] = {kind: rest}
        if kind == "generator":
            gen_id, sep, samples = rest.partition(":")
            if not gen_id:
                raise ValueError(f"{text!r}: missing the id after 'generator:'")
            fields = {"generator": gen_id}
            if sep:
                if not samples.lstrip("-").isdigit():
                    raise ValueError(f"{text!r}: the sample count after the generator id must be an integer")
                if int(samples) <= 0:
                    raise ValueError(f"{text!r}: the sample count must be positive")
                fields["samples"] = int(samples)
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise ValueError(f"{text!r}: {_one_line(exc)}") from None


SERVER_KINDS = ("catalog", "dataset", "generator")  # the prefixes of Source.parse


def server_side_options(options: EstimateOptions) -> EstimateOptions:
    """Options a client may not choose: FID weights are a file on the server, found only through
    the server's settings (W1_FID_WEIGHTS), so a client cannot make a worker open a path."""
    if options.fid_weights is not None:
        raise ValueError("fid_weights is a server setting (W1_FID_WEIGHTS), not a job option; "
                         "leave it unset and ask for fid: true")
    return options


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    real: Source
    fake: Source
    options: EstimateOptions = Field(default_factory=EstimateOptions)
    label: str | None = Field(None, max_length=300)

    _server_side = field_validator("options")(server_side_options)


class BatchFake(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(..., max_length=300)
    fake: Source
    step: int | None = Field(None, ge=0, description="The checkpoint's training step (a series' x axis).")


BatchMode = Literal["independent", "series"]


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    real: Source
    fakes: list[BatchFake] = Field(..., min_length=1, max_length=1000)
    options: EstimateOptions = Field(default_factory=EstimateOptions)
    mode: BatchMode = Field("independent", description=(
        "'independent': one job per fake, run in parallel by any workers. 'series': the fakes are checkpoints "
        "of one model in training order; one worker runs them in that order, each item's critic warm-started "
        "from the previous item's (training.series), checkpointing during and after every item; cancelling "
        "stops the chain and keeps the finished items."))

    _server_side = field_validator("options")(server_side_options)


class Progress(BaseModel):
    """The latest progress of a running job (training.result.ProgressEvent): `step` of `total` counts
    every critic's steps so far, so it never goes back; `phase` and `candidate` say what is training."""

    step: int
    total: int
    estimate: float | None = None
    objective: float | None = None
    phase: str = Field("", description="'selection' (critic='auto' trying its candidates), 'training' or 'evaluation'.")
    candidate: str = Field("", description="The critic being trained.")
    candidate_step: int = Field(0, description="That critic's own training step.")


class JobSpec(BaseModel):
    """What a job runs: both sources as submitted and the options with every default filled in."""

    real: Source
    fake: Source
    options: dict[str, Any]
    step: int | None = Field(None, description="A batch item's checkpoint step, when given.")


class JobOut(BaseModel):
    id: str
    status: JobStatus
    label: str | None
    batch_id: str | None
    spec: JobSpec
    attempts: int
    progress: Progress | None
    result: W1Result | None = Field(description="The estimate once the job succeeded; its `sources` name "
                                                "the sets by id, name and sha256 (never by server path)")
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class DatasetOut(BaseModel):
    id: str
    name: str
    sha256: str
    format: str
    count: int
    shape: list[int]
    size_bytes: int
    created_at: datetime


class GeneratorOut(BaseModel):
    id: str
    name: str
    format: str
    latent_shape: list[int]
    latent_distribution: str
    output_range: list[float]
    output_shape: list[int]
    sha256: str
    created_at: datetime


class GeneratorForm(BaseModel):
    """The form fields of a generator upload (multipart, beside the file), in their text form
    (``latent_shape="100,1,1"``, ``output_range="-1,1"``): the client writes them with
    :meth:`form`, the server reads them with :meth:`parse`. Limits (axes, elements) are the
    server's own (service/server/uploads/sizes.py)."""

    latent_shape: tuple[int, ...] = Field(min_length=1)
    latent_distribution: Literal["normal", "uniform"] = "normal"
    output_range: tuple[float, float] = (-1.0, 1.0)

    @field_validator("latent_shape", "output_range", mode="before")
    @classmethod
    def _comma_separated(cls, value, info):
        if isinstance(value, str):
            value = [p for p in value.replace(" ", "").split(",") if p]
        if info.field_name == "output_range" and len(value) != 2:
            raise ValueError(f"expected 'low,high', got {','.join(map(str, value))!r}")
        return value

    @model_validator(mode="after")
    def _range(self):
        low, high = self.output_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"output_range must be 'low,high' with low < high, got {low:g},{high:g}")
        return self

    @classmethod
    def parse(cls, fields: dict[str, str]) -> GeneratorForm:
        """From the uploaded form (empty fields take their defaults); ValueError naming the field."""
        given = {k: v for k, v in fields.items() if k in cls.model_fields and v != ""}
        if "latent_shape" not in given:
            raise ValueError("latent_shape is required (e.g. '62' or '100,1,1')")
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            raise ValueError(_one_line(exc)) from None

    def form(self) -> dict[str, str]:
        return {"latent_shape": ",".join(map(str, self.latent_shape)), "latent_distribution": self.latent_distribution,
                "output_range": ",".join(map(str, self.output_range))}


def _one_line(exc: ValidationError) -> str:
    """A validation error as ``field: problem; ...``."""
    parts: dict[str, str] = {}
    for err in exc.errors():
        where = str(err["loc"][0]) if err["loc"] else ""
        what = err["msg"].removeprefix("Value error, ")
        parts.setdefault(where, f"{where}: {what}" if where else what)  # the first problem of each field
    return "; ".join(parts.values())


class CatalogItem(BaseModel):
    name: str
    description: str
    count: int | None
    shape: list[int] | None


class SummaryRow(BaseModel):
    label: str | None
    status: JobStatus
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    certified_lower_bound: float | None
    lipschitz_bound: float | None
    lower_confidence_bound: float | None = None
    certified_ci_low: float | None = None
    certified_ci_high: float | None = None
    step: int | None = Field(None, description="The checkpoint's training step, when given.")
    start: Literal["cold", "warm", "fallback"] | None = Field(
        None, description="Series items: how the critic started (cold, warm-started from the previous item's "
        "critic, or cold after the warm start validated below a short cold trial).")
    warm_started: bool | None = Field(None, description="Series items: whether the reported critic was warm-started.")


class BatchOut(BaseModel):
    id: str
    status: JobStatus
    mode: BatchMode = "independent"
    jobs: list[JobOut]
    summary: list[SummaryRow]


class BatchCreated(BaseModel):
    id: str
    mode: BatchMode = "independent"
    jobs: list[JobOut]


class ArtifactList(BaseModel):
    items: list[str]


class ErrorOut(BaseModel):
    """Every error answer (4xx and 503): one sentence saying what is wrong and what to do."""

    detail: str


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    detail: str | None = None
