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
  would starve the page; this one shares the API's single poller (service/watch.py) like
  ``/v1/jobs/{id}/events`` does.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select

from service.server.auth import LOCAL_OWNER
from service.server.db import FINISHED, Job
from service.server.deps import CtxDep, OwnerDep
from service.server.domain import Problem, owned
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
KEEPALIVE_S = 15.0

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
        raise Problem(404, f"no dashboard file {name!r}")
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
        raise Problem(422, "jobs: give one or more job ids, comma-separated")
    if len(ids) > MAX_STREAM_JOBS:
        raise Problem(422, f"jobs: {len(ids)} ids, at most {MAX_STREAM_JOBS} per stream")
    return ids


async def _changed(subs: list, timeout: float) -> list[str]:
    """Ids of the subscriptions that changed, waiting up to ``timeout`` for the first change."""
    waiters = [asyncio.ensure_future(sub.changed.wait()) for sub in subs]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    ready = [sub for sub in subs if sub.changed.is_set()]
    for sub in ready:
        sub.changed.clear()
    return [sub.job_id for sub in ready]


@router.get("/ui/api/events")
async def jobs_events(jobs: str, request: Request, ctx: CtxDep, who: OwnerDep) -> StreamingResponse:
    """``event: job`` (data: the job as ``GET /v1/jobs/{id}`` shows it) for each job now and on every
    change; the stream ends when all of them are finished. Another owner's id answers 404."""
    ids = _stream_ids(jobs)

    def load() -> dict[str, dict]:
        with ctx.sessions() as s:
            found = {j.id: job_out(j).model_dump(mode="json")
                     for j in s.scalars(select(Job).where(Job.id.in_(ids), Job.owner == who))}
        missing = [i for i in ids if i not in found]
        if missing:
            raise Problem(404, f"no job {missing[0]!r}")
        return found

    first = await run_in_threadpool(load)
    watch = request.app.state.watch

    async def stream():
        subs = [watch.subscribe(i, first[i]) for i in ids]
        try:
            views = {i: watch.latest.get(i, first[i]) for i in ids}
            pending = set(ids)
            changed = list(ids)
            while True:
                for job_id in changed:
                    view = views[job_id] = watch.latest.get(job_id, views[job_id])
                    yield f"event: job\ndata: {json.dumps(view)}\n\n"
                    if view["status"] in FINISHED:
                        pending.discard(job_id)
                if not pending:
                    return
                changed = await _changed([s for s in subs if s.job_id in pending], KEEPALIVE_S)
                if not changed:
                    yield ": keep-alive\n\n"
        finally:
            for sub in subs:
                sub.close()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
