"""The app factory (docs/api.md). The API stores requests and answers questions; it never trains.

``create_app(settings)`` migrates the database, builds the :class:`~service.server.domain.Context` (engine,
sessions, Celery, catalog, metrics), mounts one router per resource (service/routers) and, unless
disabled, runs the reconciler in a background thread. Routes are thin: domain operations live in
server/domain.py, dependencies in server/deps.py. Every refusal is a ``service.server.errors.Problem``,
answered by one handler here through ``server/answers.py``.

Concurrency: the thread pool has ``api_threads`` threads and the database pool as many connections
plus a margin, and a connection is only held inside one thread's unit of work, so no request waits
for a connection. Past ``max_requests_in_flight`` a request answers 503 with ``Retry-After`` at
once; so does one that still waits ``db_wait_s`` for a connection, or finds SQLite locked.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.server import metrics
from service.server.answers import answer, error
from service.server.db import make_engine, make_sessionmaker, migrate
from service.server.deps import OwnerCache
from service.server.domain import Context
from service.server.errors import Problem, Unavailable
from service.server.middleware import Admission, RequestGuard
from service.server.queue import make_celery
from service.server.routers import batches, datasets, generators, jobs, operations
from service.server.settings import Settings, get_settings
from service.server.sources import Catalog
from service.server.ui import CrossSiteGuard
from service.server.ui import router as ui_router
from service.server.watch import JobWatch

log = logging.getLogger("w1.api")
POOL_MARGIN = 4  # connections beyond the thread pool: the reconciler thread and slack


DESCRIPTION = """Wasserstein-1 estimates with certified 1-Lipschitz critics, as jobs (docs/api.md).

Every error answers `{"detail": "<what is wrong>"}`. Authenticate with `Authorization: Bearer <API key>`
(`w1 keys create`); a server without keys serves loopback clients only, as the owner `local`."""


def operation_id(route) -> str:
    """Readable operation ids, ``<tag>_<name>`` (jobs_get, datasets_upload), for generated clients."""
    return f"{route.tags[0]}_{route.name}" if route.tags else route.name


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one line: ``where: what; ...``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        msg = err.get("msg", "invalid")
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx", {}).get("error", "")
            msg = f"malformed JSON body ({ctx})" if ctx else "malformed JSON body"
            loc = ""
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def create_app(settings: Settings | None = None, on_shutdown=()) -> FastAPI:
    """The app; ``on_shutdown`` callables run when the server stops (``w1 serve`` stops its workers)."""
    settings = settings or get_settings()
    settings.ensure_dirs()
    migrate(settings.db_url)
    engine = make_engine(settings.db_url, pool_size=settings.api_threads + POOL_MARGIN,
                         pool_timeout=settings.db_wait_s)
    sessions = make_sessionmaker(engine)
    ctx = Context(settings=settings, sessions=sessions, celery=make_celery(settings),
                  catalog=Catalog(settings), metrics=metrics.Metrics(sessions), engine=engine)
    watch = JobWatch(sessions)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        stop = threading.Event()
        thread = None
        if settings.run_reconciler:
            from service.server.reconciler import run_forever

            thread = threading.Thread(target=run_forever, args=(settings, sessions, ctx.celery, stop),
                                      name="w1-reconciler", daemon=True)
            thread.start()
        poller = asyncio.create_task(watch.run())
        yield
        poller.cancel()
        stop.set()
        for hook in on_shutdown:
            hook()
        if thread is not None:
            thread.join(timeout=5)
        engine.dispose()

    # Swagger UI and ReDoc from files shipped in the fastapi-offline package: /docs works offline
    app = FastAPIOffline(title="w1 job service", version="1", description=DESCRIPTION, lifespan=lifespan,
                         generate_unique_id_function=operation_id, favicon_url=None)
    app.state.settings = settings
    app.state.ctx = ctx
    app.state.watch = watch
    app.state.owner_cache = OwnerCache(settings.auth_cache_s)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error(422, validation_message(exc))

    @app.exception_handler(Problem)  # the one mapping of the server's refusals to HTTP (answers.py)
    async def _problem(request: Request, exc: Problem):
        return answer(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):  # the framework's own: no route, 405
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (e.g. not UTF-8): docs/api.md says 422
            return error(422, f"malformed request body: {exc.detail}")
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(request: Request, exc: PoolTimeout):
        log.warning("no database connection within %g s: answered 503", settings.db_wait_s)
        return answer(Unavailable("server busy: no database connection available; retry shortly", retry_after=2))

    @app.exception_handler(OperationalError)
    async def _database_unavailable(request: Request, exc: OperationalError):
        log.warning("database unavailable: %s", exc.orig)
        return answer(Unavailable("database unavailable or busy; retry shortly", retry_after=2))

    for module in (datasets, generators, jobs, batches, operations):
        app.include_router(module.router)
    app.include_router(ui_router)  # the dashboard at /ui (service/server/ui), outside the OpenAPI contract
    app.add_middleware(RequestGuard, max_json_bytes=settings.max_json_bytes)  # body size, NUL bytes
    app.add_middleware(Admission, registry=ctx.metrics, limit=settings.max_requests_in_flight)
    app.add_middleware(CrossSiteGuard)  # no state-changing request from another site's page (CSRF)
    return app
