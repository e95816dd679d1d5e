"""The one error vocabulary of the server: what a caller did wrong (or what the server cannot do
now), said in domain words. Domain code, request checks, uploads and auth raise these and know
nothing of HTTP; ``service.server.app`` maps each kind to its status and headers in one place.

Every kind carries a one-line ``detail`` for the caller (naming the value, the limit and its
setting where there is one, never a server path).
"""
from __future__ import annotations


class Problem(Exception):
    """A request the service refuses; subclasses say which kind of refusal it is."""

    def __init__(self, detail: str, *, retry_after: float | None = None):
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after  # seconds after which the same request may succeed


class Invalid(Problem):
    """The request's content, a reference in it or a parameter is wrong (or over a limit)."""


class Unauthenticated(Problem):
    """No usable API key: missing, malformed or revoked, or a client local mode does not serve."""

    def __init__(self, detail: str, *, bearer: bool = True):
        super().__init__(detail)
        self.bearer = bearer  # a bearer token would help (not so for a non-loopback client in local mode)


class Forbidden(Problem):
    """Refused whatever the key: a state-changing request from another site's page (CSRF)."""


class NotFound(Problem):
    """No such object for this owner (another owner's object is not found either)."""


class Conflict(Problem):
    """The object's state does not allow it (a finished job cancelled, a set still in use deleted)."""


class TooLarge(Problem):
    """A body over its size limit."""


class TooMany(Problem):
    """Too many unfinished jobs for this owner; ``retry_after`` says when to try again."""


class Unavailable(Problem):
    """The server cannot serve it now (busy, database unavailable); ``retry_after`` says when to retry."""

    def __init__(self, detail: str, *, retry_after: float):
        super().__init__(detail, retry_after=retry_after)


def refuse(message: str) -> None:
    """Refuse a request's content: what every check of a request (limits, uploads) answers."""
    raise Invalid(message)
