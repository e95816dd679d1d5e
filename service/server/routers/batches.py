"""Batches: many fakes against one real set (e.g. checkpoints of one model), with a summary table; a
batch in "series" mode runs its fakes in order with warm-started critics and has a series plot."""
from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select

from service.server import domain
from service.server.db import Batch, Job
from service.server.deps import CtxDep, OwnerDep
from service.server.domain import owned
from service.server.errors import NotFound
from service.contracts import ArtifactList, BatchCreate, BatchCreated, BatchOut
from service.server.openapi import errors, links
from service.server.series import SERIES_ARTIFACTS, read_artifact
from service.server.views import batch_status, job_out, respond, summary_row

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=errors(401, 422, 503))


@router.post("", status_code=202, response_model=BatchCreated, name="submit",
             responses={202: {"links": links("batch_id", "batches_get", "batches_cancel", "batches_artifacts")},
                        **errors(413, 422, 429)})
def submit_batch(body: BatchCreate, ctx: CtxDep, who: OwnerDep) -> Response:
    """Many fakes against one real set: one job each, all accepted or none (quota). `mode: "series"` runs
    them in the given order on one worker, each critic warm-started from the previous item's."""
    batch, jobs = domain.submit_batch(ctx, who, body)
    return respond(BatchCreated(id=batch.id, mode=batch.mode, jobs=[job_out(j) for j in jobs]), 202,
                   {"Location": f"/v1/batches/{batch.id}"})


def _batch_out(ctx, who: str, batch_id: str) -> BatchOut:
    with ctx.sessions() as s:
        batch = owned(s, Batch, batch_id, who)
        jobs = list(s.scalars(select(Job).where(Job.batch_id == batch.id).order_by(Job.seq)))
    return BatchOut(id=batch.id, status=batch_status(jobs), mode=batch.mode, jobs=[job_out(j) for j in jobs],
                    summary=[summary_row(j) for j in jobs])


@router.get("/{batch_id}", response_model=BatchOut, name="get", responses=errors(404))
def read_batch(batch_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    """The batch's jobs and one summary row per job, in submission (a series': checkpoint) order."""
    return respond(_batch_out(ctx, who, batch_id))


@router.post("/{batch_id}/cancel", status_code=202, response_model=BatchOut, name="cancel", responses=errors(404))
def cancel_batch(batch_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    """Cancel every unfinished job of the batch (queued ones at once, running ones within a few steps); finished
    jobs keep their results. A series stops its chain."""
    domain.cancel_batch(ctx, who, batch_id)
    return respond(_batch_out(ctx, who, batch_id), 202)


@router.get("/{batch_id}/artifacts", response_model=ArtifactList, name="artifacts", responses=errors(404))
def list_artifacts(batch_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    """A series' artifacts, rewritten after every item: series.json (the SeriesResult), series.csv (one row
    per item), series.png (W1's lower confidence bound and certified interval against the checkpoint step)."""
    with ctx.sessions() as s:
        batch = owned(s, Batch, batch_id, who)
    return respond(ArtifactList(items=[n for n in SERIES_ARTIFACTS if read_artifact(ctx.settings, batch.id, n)]))


@router.get("/{batch_id}/artifacts/{name}", response_class=Response, name="artifact", responses={
    200: {"description": "The file: series.json (JSON), series.csv (CSV), series.png (PNG)",
          "content": {"application/json": {"schema": {"type": "object"}},
                      "text/csv": {"schema": {"type": "string"}},
                      "image/png": {"schema": {"type": "string", "format": "binary"}}}},
    **errors(404)})
def get_artifact(batch_id: str, name: str, ctx: CtxDep, who: OwnerDep) -> Response:
    with ctx.sessions() as s:
        batch = owned(s, Batch, batch_id, who)
    if name not in SERIES_ARTIFACTS:
        raise NotFound(f"no artifact {name!r}; a series' artifacts are {', '.join(SERIES_ARTIFACTS)}")
    path = read_artifact(ctx.settings, batch.id, name)
    if path is None:
        raise NotFound(f"batch {batch.id} has no {name} yet ({batch.mode} batch; a series writes it after "
                           "its first item)")
    # Read whole, not streamed by path: the series rewrites these files (write, then rename) after every
    # item, and a FileResponse takes the size from one version and may send the next (a cut-off body).
    return Response(path.read_bytes(), media_type=SERIES_ARTIFACTS[name],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
