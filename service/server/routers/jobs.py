"""Jobs: submit, list, read, cancel, follow (Server-Sent Events), artifacts."""
from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import select

from service.server import domain
from service.server.db import ACTIVE, FINISHED, Job
from service.server.deps import CtxDep, OwnerDep
from service.server.limits import parse_cursor
from service.server.domain import owned
from service.server.errors import Invalid, NotFound
from service.contracts import ArtifactList, JobCreate, JobList, JobOut
from service.server.openapi import errors, links
from service.server.views import job_out, respond

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=errors(401, 422, 503))

ARTIFACTS = {"curve.json": "application/json", "curve.png": "image/png",
             "critic.onnx": "application/octet-stream", "critic.pt": "application/octet-stream"}


@router.post("", status_code=202, response_model=JobOut, name="submit",
             responses={202: {"links": links("job_id", "jobs_get", "jobs_cancel", "jobs_events", "jobs_artifacts")},
                        200: {"model": JobOut, "description": "The job an earlier request with this Idempotency-Key made"},
                        **errors(413, 422, 429)})
def submit_job(body: JobCreate, ctx: CtxDep, who: OwnerDep,
               idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> Response:
    """Submit a job: 202 + Location. Same Idempotency-Key and body: the same job (200)."""
    job, created = domain.submit_job(ctx, who, body, idempotency_key)
    return respond(job_out(job), 202 if created else 200, {"Location": f"/v1/jobs/{job.id}"})


@router.get("", response_model=JobList, name="list", responses=errors(422))
def list_jobs(ctx: CtxDep, who: OwnerDep, status: str | None = None, batch_id: str | None = None,
              label: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
              cursor: str | None = None) -> Response:
    """Jobs, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    q = select(Job).where(Job.owner == who)
    if status:
        wanted = status.split(",")
        bad = [w for w in wanted if w not in (*ACTIVE, *FINISHED)]
        if bad:
            raise Invalid(f"unknown status {bad[0]!r}; use one of {', '.join((*ACTIVE, *FINISHED))}")
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


@router.get("/{job_id}", response_model=JobOut, name="get", responses=errors(404))
def read_job(job_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    with ctx.sessions() as s:
        return respond(job_out(owned(s, Job, job_id, who)))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut, name="cancel", responses=errors(404, 409))
def cancel_job(job_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    """Best effort: a queued job is cancelled at once, a running one within a few steps."""
    return respond(job_out(domain.cancel_job(ctx, who, job_id)), 202)


async def watched_job(job_id: str, ctx: CtxDep, who: OwnerDep) -> dict:
    """The job as ``GET /v1/jobs/{id}`` shows it (404 before any event is sent)."""
    def load() -> dict:
        with ctx.sessions() as s:
            return job_out(owned(s, Job, job_id, who)).model_dump(mode="json")

    return await run_in_threadpool(load)


@router.get("/{job_id}/events", response_class=EventSourceResponse, name="events", responses={
    200: {"description": "`event: progress` (data: Progress) while it runs, `event: status` (data: Job) "
                         "on every change; the stream ends after the final status",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    **errors(401, 404, 422, 503, json_content=True)})
async def job_events(job_id: str, request: Request,
                     first: Annotated[dict, Depends(watched_job)]) -> AsyncIterable[ServerSentEvent]:
    """Server-Sent Events: ``progress`` while it runs, ``status`` on every change; ends when done."""
    # FastAPI's SSE support writes the events, and a keep-alive comment after 15 s of silence
    last_status, last_progress, job = None, None, first
    with request.app.state.watch.watching({job_id: first}) as watching:
        while True:
            if job["progress"] is not None and job["progress"] != last_progress:
                last_progress = job["progress"]
                yield ServerSentEvent(event="progress", data=last_progress)
            if job["status"] != last_status:  # after progress: the final status ends the stream
                last_status = job["status"]
                yield ServerSentEvent(event="status", data=job)
            if job["status"] in FINISHED:
                return
            await watching.changed()
            job = watching.views[job_id]


@router.get("/{job_id}/artifacts", response_model=ArtifactList, name="artifacts", responses=errors(404))
def list_artifacts(job_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    with ctx.sessions() as s:
        job = owned(s, Job, job_id, who)
    folder = ctx.settings.artifacts_dir(job.id, job.fence)
    return respond(ArtifactList(items=[n for n in ARTIFACTS if (folder / n).is_file()]))


@router.get("/{job_id}/artifacts/{name}", response_class=FileResponse, name="artifact", responses={
    200: {"description": "The file: curve.json (JSON), curve.png (PNG), critic.onnx and critic.pt (binary)",
          "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                      "image/png": {"schema": {"type": "string", "format": "binary"}},
                      "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/CurvePoint"}}}}},
    **errors(404)})
def get_artifact(job_id: str, name: str, ctx: CtxDep, who: OwnerDep) -> FileResponse:
    with ctx.sessions() as s:
        job = owned(s, Job, job_id, who)
    if name not in ARTIFACTS:
        raise NotFound(f"no artifact {name!r}; artifacts are {', '.join(ARTIFACTS)}")
    path = ctx.settings.artifacts_dir(job.id, job.fence) / name
    if not path.is_file():
        raise NotFound(f"job {job.id} has no {name} (status {job.status})")
    return FileResponse(path, media_type=ARTIFACTS[name], filename=name)
