"""Pydantic models of the REST API (docs/api.md). Request models forbid unknown fields so a typo
answers 422 instead of being silently ignored.

The API, the worker, the client and the CLI share them; they import pydantic and the torch-free
training.options / training.result only (checked by import-linter, pyproject.toml)."""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    real: Source
    fakes: list[BatchFake] = Field(..., min_length=1, max_length=1000)
    options: EstimateOptions = Field(default_factory=EstimateOptions)

    _server_side = field_validator("options")(server_side_options)


class Progress(BaseModel):
    step: int
    total: int
    estimate: float | None = None
    objective: float | None = None


class JobSpec(BaseModel):
    """What a job runs: both sources as submitted and the options with every default filled in."""

    real: Source
    fake: Source
    options: dict[str, Any]


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


class BatchOut(BaseModel):
    id: str
    status: JobStatus
    jobs: list[JobOut]
    summary: list[SummaryRow]


class BatchCreated(BaseModel):
    id: str
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
