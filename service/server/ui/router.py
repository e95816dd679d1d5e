"""Routes of the dashboard: the page, its assets, and three page-only helpers.

The page is plain HTML, CSS and JavaScript modules from ``static/`` (no framework, no build step,
nothing from the internet), sent with a Content-Security-Policy that allows scripts, styles and
connections to this server only, and no inline script or style. The helpers sit under ``/ui/api``
and stay out of the public OpenAPI contract:

- ``GET /ui/api/me``: the owner behind the request's key (or ``local`` in keyless mode), so the page
  can check a key at sign-in and say whose jobs it shows.
- ``GET /ui/api/jobs/{id}/rows``: a job's result as the rows `w1 estimate` prints
  (training.table.result_rows), so the page and the terminal never disagree.
- ``GET /ui/api/events?jobs=a,b,...``: one Server-Sent Events stream for many jobs (a job list or
  a batch). A browser opens at most six connections to one server, so one stream per running job
  would starve the page; this one shares the API process's poller (server/watch.py) like
  ``/v1/jobs/{id}/events`` does.
"""
from __future__ import annotations

from collections.abc import AsyncIterable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import select

from service.server.auth import LOCAL_OWNER
from service.server.db import FINISHED, Job
from service.server.deps import CtxDep, OwnerDep
from service.server.domain import owned
from service.server.errors import Invalid, NotFound
from service.server.views import job_out
from training.table import result_rows

STATIC = Path(__file__).parent / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# Scripts, styles, images and connections from this server only; no inline script or style
# (the page sets SVG attributes and CSSOM properties, never style="..."); blob: images and
# downloads are the artifacts the page fetched with its key.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
       "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}
MAX_STREAM_JOBS = 200

router = APIRouter(include_in_schema=False)


def _assets() -> dict[str, Path]:
    """Every file the page may load, by its path under static/ (nothing else is served)."""
    return {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*")
            if p.is_file() and p.suffix in TYPES}


ASSETS = _assets()


def _page(path: Path) -> FileResponse:
    return FileResponse(path, media_type=TYPES[path.suffix], headers=HEADERS)


@router.get("/")
def root(request: Request) -> Response:
    """Browsers go to the dashboard; API clients get the links."""
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse("/ui/", status_code=307)
    return JSONResponse({"service": "w1", "ui": "/ui/", "docs": "/docs", "openapi": "/openapi.json",
                         "health": "/healthz"})


@router.get("/ui")
def ui_redirect() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/")
def ui_index() -> FileResponse:
    return _page(STATIC / "index.html")


@router.get("/ui/static/{name:path}")
def ui_asset(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise NotFound(f"no dashboard file {name!r}")
    return _page(path)


@router.get("/ui/api/me")
def whoami(request: Request, who: OwnerDep) -> JSONResponse:
    local = who == LOCAL_OWNER and not request.headers.get("authorization")
    return JSONResponse({"owner": who, "local_mode": local})


@router.get("/ui/api/jobs/{job_id}/rows")
def job_rows(job_id: str, ctx: CtxDep, who: OwnerDep) -> JSONResponse:
    """The result rows of `w1 estimate` for this job ([] until it has a result)."""
    with ctx.sessions() as s:
        result = owned(s, Job, job_id, who).result
    return JSONResponse({"rows": [list(row) for row in result_rows(result)] if result else []})


def _stream_ids(jobs: str) -> list[str]:
    ids = list(dict.fromkeys(i.strip() for i in jobs.split(",") if i.strip()))
    if not ids:
        raise Invalid("jobs: give one or more job ids, comma-separated")
    if len(ids) > MAX_STREAM_JOBS:
        raise Invalid(f"jobs: {len(ids)} ids, at most {MAX_STREAM_JOBS} per stream")
    return ids


async def _watched_jobs(jobs: str, ctx: CtxDep, who: OwnerDep) -> dict[str, dict]:
    """Each job as ``GET /v1/jobs/{id}`` shows it, in the order given (404 before any event is sent)."""
    ids = _stream_ids(jobs)

    def load() -> dict[str, dict]:
        with ctx.sessions() as s:
            found = {j.id: job_out(j).model_dump(mode="json")
                     for j in s.scalars(select(Job).where(Job.id.in_(ids), Job.owner == who))}
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound(f"no job {missing[0]!r}")
        return {i: found[i] for i in ids}

    return await run_in_threadpool(load)


@router.get("/ui/api/events", response_class=EventSourceResponse)
async def jobs_events(request: Request,
                      first: Annotated[dict[str, dict], Depends(_watched_jobs)]) -> AsyncIterable[ServerSentEvent]:
    """``event: job`` (data: the job as ``GET /v1/jobs/{id}`` shows it) for each job now and on every
    change; the stream ends when all of them are finished. Another owner's id answers 404."""
    pending, changed = set(first), list(first)
    with request.app.state.watch.watching(first) as watching:
        while True:
            for job_id in changed:
                view = watching.views[job_id]
                yield ServerSentEvent(event="job", data=view)
                if view["status"] in FINISHED:
                    pending.discard(job_id)
            if not pending:
                return
            changed = await watching.changed(among=pending)
