"""Rows of the job table as the API shows them (the response models live in service/schemas.py)."""
from __future__ import annotations

import logging

from fastapi import Response
from pydantic import ValidationError

from service.server.db import ACTIVE, CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Dataset, Generator, Job, as_utc
from service.contracts import DatasetOut, GeneratorOut, JobOut, SummaryRow
from training.result import W1Result

log = logging.getLogger("w1.api")


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id, status=job.status, label=job.label, batch_id=job.batch_id, spec=job.spec,
        attempts=job.attempts, progress=job.progress, result=_result(job), error=job.error,
        created_at=as_utc(job.created_at), started_at=as_utc(job.started_at),
        finished_at=as_utc(job.finished_at),
    )


def _result(job: Job) -> W1Result | None:
    """The stored result as the typed model; one that no longer fits it (written by an older
    version) is logged and shown as None rather than failing every read of the job."""
    if job.result is None:
        return None
    try:
        return W1Result.model_validate(job.result)
    except ValidationError as exc:
        log.warning("job %s: stored result does not fit W1Result (%s)", job.id, exc.error_count())
        return None


def dataset_out(d: Dataset) -> DatasetOut:
    return DatasetOut(id=d.id, name=d.name, sha256=d.sha256, format=d.format, count=d.count,
                      shape=d.shape, size_bytes=d.size_bytes, created_at=as_utc(d.created_at))


def generator_out(g: Generator) -> GeneratorOut:
    return GeneratorOut(id=g.id, name=g.name, format=g.format, latent_shape=g.latent_shape,
                        latent_distribution=g.latent_distribution, output_range=g.output_range,
                        output_shape=g.output_shape, sha256=g.sha256, created_at=as_utc(g.created_at))


def batch_status(jobs: list[Job]) -> str:
    states = {j.status for j in jobs}
    if states & set(ACTIVE):
        return RUNNING if (states - {QUEUED}) else QUEUED
    if states == {SUCCEEDED}:
        return SUCCEEDED
    if states == {CANCELLED}:
        return CANCELLED
    return FAILED


def summary_row(job: Job) -> SummaryRow:
    r = job.result or {}
    ci = r.get("ci") or [None, None]
    return SummaryRow(label=job.label, status=job.status, estimate=r.get("estimate"), ci_low=ci[0],
                      ci_high=ci[1], certified_lower_bound=r.get("certified_lower_bound"),
                      lipschitz_bound=r.get("lipschitz_bound"))


def respond(body, status_code: int = 200, headers: dict | None = None) -> Response:
    """A JSON response straight from a model (or a list of models). Routes declare the model as
    ``response_model`` for the OpenAPI document; returning a Response spares FastAPI validating it
    again in one more worker thread hop."""
    if isinstance(body, list):
        content = b"[" + b",".join(m.model_dump_json().encode() for m in body) + b"]"
    else:
        content = body.model_dump_json().encode()
    return Response(content, status_code=status_code, headers=headers, media_type="application/json")
