"""Jobs: submit, list, read, cancel, follow (Server-Sent Events), artifacts."""
from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy import select

from service import ops
from service.db import ACTIVE, FINISHED, Job
from service.deps import CtxDep, OwnerDep
from service.limits import parse_cursor
from service.ops import Problem, owned
from service.schemas import ArtifactList, JobCreate, JobList, JobOut
from service.views import job_out, respond

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

ARTIFACTS = {"curve.json": "application/json", "curve.png": "image/png",
             "critic.onnx": "application/octet-stream", "critic.pt": "application/octet-stream"}
KEEPALIVE_S = 15.0


@router.post("", status_code=202, response_model=JobOut)
def submit_job(body: JobCreate, ctx: CtxDep, who: OwnerDep,
               idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> Response:
    """Submit a job: 202 + Location. Same Idempotency-Key and body: the same job (200)."""
    job, created = ops.submit_job(ctx, who, body, idempotency_key)
    return respond(job_out(job), 202 if created else 200, {"Location": f"/v1/jobs/{job.id}"})


@router.get("", response_model=JobList)
def list_jobs(ctx: CtxDep, who: OwnerDep, status: str | None = None, batch_id: str | None = None,
              label: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
              cursor: str | None = None) -> Response:
    """Jobs, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    q = select(Job).where(Job.owner == who)
    if status:
        wanted = status.split(",")
        bad = [w for w in wanted if w not in (*ACTIVE, *FINISHED)]
        if bad:
            raise Problem(422, f"unknown status {bad[0]!r}; use one of {', '.join((*ACTIVE, *FINISHED))}")
        q = q.where(Job.status.in_(wanted))
    if batch_id:
        q = q.where(Job.batch_id == batch_id)
    if label:
        q = q.where(Job.label == label)
    if cursor:
        q = q.where(Job.seq < parse_cursor(cursor))
    with ctx.sessions() as s:
        rows = list(s.scalars(q.order_by(Job.seq.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return respond(JobList(items=[job_out(j) for j in rows], next_cursor=str(rows[-1].seq) if more else None))


@router.get("/{job_id}", response_model=JobOut)
def read_job(job_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    with ctx.sessions() as s:
        return respond(job_out(owned(s, Job, job_id, who)))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut)
def cancel_job(job_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    """Best effort: a queued job is cancelled at once, a running one within a few steps."""
    return respond(job_out(ops.cancel_job(ctx, who, job_id)), 202)


@router.get("/{job_id}/events", response_class=StreamingResponse)
async def job_events(job_id: str, request: Request, ctx: CtxDep, who: OwnerDep) -> StreamingResponse:
    """Server-Sent Events: ``progress`` while it runs, ``status`` on every change; ends when done."""
    def load() -> dict:
        with ctx.sessions() as s:
            return job_out(owned(s, Job, job_id, who)).model_dump(mode="json")

    first = await run_in_threadpool(load)
    watch = request.app.state.watch

    async def stream():
        last_status, last_progress, job = None, None, first
        sub = watch.subscribe(job_id, first)
        try:
            while True:
                if job is None:  # nothing changed for a while: a comment keeps proxies from closing us
                    yield ": keep-alive\n\n"
                else:
                    if job["progress"] is not None and job["progress"] != last_progress:
                        last_progress = job["progress"]
                        yield f"event: progress\ndata: {json.dumps(job['progress'])}\n\n"
                    if job["status"] != last_status:  # after progress: the final status ends the stream
                        last_status = job["status"]
                        yield f"event: status\ndata: {json.dumps(job)}\n\n"
                    if job["status"] in FINISHED:
                        return
                job = await sub.next(KEEPALIVE_S)
        finally:
            sub.close()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{job_id}/artifacts", response_model=ArtifactList)
def list_artifacts(job_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    with ctx.sessions() as s:
        job = owned(s, Job, job_id, who)
    folder = ctx.settings.artifacts_dir(job.id, job.fence)
    return respond(ArtifactList(items=[n for n in ARTIFACTS if (folder / n).is_file()]))


@router.get("/{job_id}/artifacts/{name}", response_class=FileResponse)
def get_artifact(job_id: str, name: str, ctx: CtxDep, who: OwnerDep) -> FileResponse:
    with ctx.sessions() as s:
        job = owned(s, Job, job_id, who)
    if name not in ARTIFACTS:
        raise Problem(404, f"no artifact {name!r}; artifacts are {', '.join(ARTIFACTS)}")
    path = ctx.settings.artifacts_dir(job.id, job.fence) / name
    if not path.is_file():
        raise Problem(404, f"job {job.id} has no {name} (status {job.status})")
    return FileResponse(path, media_type=ARTIFACTS[name], filename=name)
