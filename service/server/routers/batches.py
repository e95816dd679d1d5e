"""Batches: many fakes against one real set (e.g. checkpoints of one model), with a summary table."""
from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select

from service.server import domain
from service.server.db import Batch, Job
from service.server.deps import CtxDep, OwnerDep
from service.server.domain import owned
from service.contracts import BatchCreate, BatchCreated, BatchOut
from service.server.openapi import errors, links
from service.server.views import batch_status, job_out, respond, summary_row

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=errors(401, 422, 503))


@router.post("", status_code=202, response_model=BatchCreated, name="submit",
             responses={202: {"links": links("batch_id", "batches_get")}, **errors(413, 422, 429)})
def submit_batch(body: BatchCreate, ctx: CtxDep, who: OwnerDep) -> Response:
    """Many fakes against one real set: one job each, all accepted or none (quota)."""
    batch, jobs = domain.submit_batch(ctx, who, body)
    return respond(BatchCreated(id=batch.id, jobs=[job_out(j) for j in jobs]), 202,
                   {"Location": f"/v1/batches/{batch.id}"})


@router.get("/{batch_id}", response_model=BatchOut, name="get", responses=errors(404))
def read_batch(batch_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    with ctx.sessions() as s:
        batch = owned(s, Batch, batch_id, who)
        jobs = list(s.scalars(select(Job).where(Job.batch_id == batch.id).order_by(Job.seq)))
    return respond(BatchOut(id=batch.id, status=batch_status(jobs), jobs=[job_out(j) for j in jobs],
                            summary=[summary_row(j) for j in jobs]))
