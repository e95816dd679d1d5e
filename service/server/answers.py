"""Problems as HTTP answers: the one place that maps each kind of :mod:`service.server.errors` to a
status and headers. The app's exception handler and the middleware (which answers before any
route) both answer through :func:`answer`, so every error is ``{"detail": "..."}`` with its status."""
from __future__ import annotations

import math

from starlette.responses import JSONResponse

from service.server.errors import (Conflict, Forbidden, Invalid, NotFound, Problem, TooLarge, TooMany,
                                   Unauthenticated, Unavailable)

STATUS: dict[type[Problem], int] = {
    Invalid: 422, Unauthenticated: 401, Forbidden: 403, NotFound: 404, Conflict: 409, TooLarge: 413,
    TooMany: 429, Unavailable: 503,
}


def status_of(problem: Problem) -> int:
    return next(STATUS[kind] for kind in type(problem).__mro__ if kind in STATUS)


def answer(problem: Problem) -> JSONResponse:
    """The HTTP answer to ``problem``: its status, ``Retry-After`` when it says when to retry, and the
    bearer challenge when a token would help."""
    headers = {}
    if problem.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(problem.retry_after)))
    if isinstance(problem, Unauthenticated) and problem.bearer:
        headers["WWW-Authenticate"] = "Bearer"
    return error(status_of(problem), problem.detail, headers)


def error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    """An error body as every answer has it (also for the framework's own errors: 404 route, 405)."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)
