"""Request dependencies, as annotated types: the app's :class:`~service.server.domain.Context`
(settings, session factory, Celery, catalog, metrics) and the caller's owner.

Why a session *factory* and not a request-long session: a request hops between the event loop and
worker threads (dependencies, handler, serialisation). A session held across those hops keeps a
pooled connection while its request waits for a thread, and ~50 requests in flight then deadlock
the pool (threads wait for connections held by requests waiting for threads). So every unit of
work opens a session and closes it in the same thread: ``with sessions() as s: ...``.
"""
from __future__ import annotations

import hashlib
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.server import auth
from service.server.domain import Context
from service.server.errors import Unauthenticated

# Declares the bearer scheme in the OpenAPI document (Swagger's Authorize button); the token itself
# is checked by auth.authenticate, which also serves keyless loopback mode.
bearer = HTTPBearer(auto_error=False, description="An API key from `w1 keys create` (none in local mode)")


async def get_ctx(request: Request) -> Context:
    return request.app.state.ctx


CtxDep = Annotated[Context, Depends(get_ctx)]


class OwnerCache:
    """Recent answers of auth.authenticate by Authorization header (hashed) and loopback-ness (of the
    client and of the Host it addressed), for ``ttl`` seconds: most requests then need no database
    query and no thread for auth. A revoked key stops working within ``ttl`` (W1_AUTH_CACHE_S; 0
    turns the cache off)."""

    def __init__(self, ttl: float, size: int = 10_000):
        self.ttl, self.size, self._answers = ttl, size, {}

    def get(self, key):
        hit = self._answers.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    def put(self, key, answer) -> None:
        if self.ttl <= 0:
            return
        if len(self._answers) >= self.size:
            self._answers.clear()
        self._answers[key] = (answer, time.monotonic() + self.ttl)


def _authenticate(request: Request, ctx: Context):
    with ctx.sessions() as s:
        try:
            return auth.authenticate(request, s)
        except Unauthenticated as exc:
            return exc


async def current_owner(request: Request, ctx: CtxDep,
                        _token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The owner behind the request's API key (401 otherwise); its session closes before it returns."""
    header = request.headers.get("authorization", "")
    key = (hashlib.sha256(header.encode()).digest(), auth.loopback_request(request))
    cache: OwnerCache = request.app.state.owner_cache
    answer = cache.get(key)
    if answer is None:
        answer = await run_in_threadpool(_authenticate, request, ctx)
        cache.put(key, answer)
    if isinstance(answer, Unauthenticated):
        raise answer.with_traceback(None)  # a cached refusal: no traceback piling up across requests
    return answer


OwnerDep = Annotated[str, Depends(current_owner)]
