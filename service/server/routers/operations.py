"""Operations and the catalog: liveness, readiness, Prometheus metrics, operator-configured sets."""
from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from service.server.deps import CtxDep, OwnerDep
from service.server.queue import broker_reachable
from service.contracts import CatalogItem, Health, Readiness
from service.server.openapi import errors
from service.server.views import respond

router = APIRouter()


@router.get("/healthz", tags=["operations"], name="healthz")
async def healthz() -> Health:
    """The process is alive (answers on the event loop, without a thread or a connection)."""
    return Health(status="ok")


@router.get("/readyz", tags=["operations"], name="readyz", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "The database or the broker is unreachable, "
                                                             "or the server is busy"}})
def readyz(ctx: CtxDep) -> JSONResponse:
    """The database and the broker are reachable."""
    problems = []
    try:
        with ctx.sessions() as s:
            s.execute(text("SELECT 1"))
    except Exception as exc:
        problems.append(f"database: {exc}")
    if not broker_reachable(ctx.celery):
        problems.append("broker unreachable")
    if problems:
        return JSONResponse({"status": "unavailable", "detail": "; ".join(problems)}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=PlainTextResponse, tags=["operations"], name="metrics",
            responses={200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
                       **errors(503, json_content=True)})
def prometheus(ctx: CtxDep) -> Response:
    body, ctype = ctx.metrics.render()
    return Response(body, media_type=ctype)


@router.get("/v1/catalog", tags=["catalog"], response_model=list[CatalogItem], name="list",
            responses=errors(401, 422, 503))
def catalog(ctx: CtxDep, who: OwnerDep) -> Response:
    """Operator-configured reference sets, by name (clients never pass server paths)."""
    items = []
    for name, entry in sorted(ctx.settings.catalog.items()):
        info = ctx.catalog.info(name)
        items.append(CatalogItem(name=name, description=entry.description, count=info.get("count"),
                                 shape=info.get("shape")))
    return respond(items)
