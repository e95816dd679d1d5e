"""Request dependencies, as annotated types: the app's :class:`~service.ops.Context`, the settings,
the session factory and the caller's owner.

Why a session *factory* and not a request-long session: a request hops between the event loop and
worker threads (dependencies, handler, serialisation). A session held across those hops keeps a
pooled connection while its request waits for a thread, and ~50 requests in flight then deadlock
the pool (threads wait for connections held by requests waiting for threads). So every unit of
work opens a session and closes it in the same thread: ``with sessions() as s: ...``.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import sessionmaker

from service import auth
from service.ops import Context
from service.settings import Settings

# Declares the bearer scheme in the OpenAPI document (Swagger's Authorize button); the token itself
# is checked by auth.authenticate, which also serves keyless loopback mode.
bearer = HTTPBearer(auto_error=False, description="An API key from `w1 keys create` (none in local mode)")


async def get_ctx(request: Request) -> Context:
    return request.app.state.ctx


CtxDep = Annotated[Context, Depends(get_ctx)]


async def get_settings(ctx: CtxDep) -> Settings:
    return ctx.settings


async def get_sessions(ctx: CtxDep) -> sessionmaker:
    return ctx.sessions


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionsDep = Annotated[sessionmaker, Depends(get_sessions)]


def current_owner(request: Request, ctx: CtxDep,
                  _token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The owner behind the request's API key (401 otherwise); its session closes before it returns."""
    with ctx.sessions() as s:
        return auth.authenticate(request, s)


OwnerDep = Annotated[str, Depends(current_owner)]
