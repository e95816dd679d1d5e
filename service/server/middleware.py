"""The API's pure ASGI middleware, which answers before any route runs: load shedding
(:class:`Admission`) and the request-body guard (:class:`RequestGuard`). Both answer with
:func:`service.server.answers.answer`, like every route."""
from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from service.server import metrics
from service.server.answers import answer
from service.server.errors import Invalid, TooLarge, Unavailable

# A JSON string escape \u0000 (after an even number of backslashes, so not the text "\\u0000").
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)
UPLOAD_PATHS = ("/v1/datasets", "/v1/generators")
PROBES = ("/healthz", "/readyz")


class Admission:
    """Counts requests by route and status, and sheds load past the limit with an immediate
    503 + Retry-After (a queue that only grows helps nobody). Probes are never shed."""

    def __init__(self, app, registry: metrics.Metrics, limit: int):
        self.app, self.registry, self.limit, self.in_flight = app, registry, limit, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in PROBES:
            return await self.app(scope, receive, send)
        status = 500
        if self.in_flight >= self.limit:
            busy = Unavailable(f"server busy: {self.in_flight} requests in flight; retry shortly", retry_after=1)
            await answer(busy)(scope, receive, send)
            self.registry.request(scope["method"], "shed", 503)
            return

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.in_flight += 1
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.in_flight -= 1
            route = scope.get("route")
            self.registry.request(scope["method"], getattr(route, "path", "unmatched"), status)


class RequestGuard:
    """A request body over ``max_json_bytes`` answers 413 before it is read whole; a NUL byte in the
    path, the query or a JSON string answers 422 (PostgreSQL cannot store one, and no legitimate id,
    label or name has one). Only uploads (multipart to ``upload_paths``) pass unread: they stream to
    the upload routes, which enforce their own limit while streaming."""

    def __init__(self, app, max_json_bytes: int, upload_paths: tuple[str, ...] = UPLOAD_PATHS):
        self.app, self.limit, self.upload_paths = app, max_json_bytes, upload_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if b"\x00" in unquote_to_bytes(scope.get("raw_path") or scope["path"].encode()) or \
                b"\x00" in unquote_to_bytes(scope.get("query_string", b"").replace(b"+", b" ")):
            return await answer(Invalid("the URL contains a NUL byte"))(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        upload = scope["path"].rstrip("/") in self.upload_paths and \
            headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data")
        if scope["method"] not in ("POST", "PUT", "PATCH", "DELETE") or upload:
            return await self.app(scope, receive, send)
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await answer(TooLarge(f"request body of {int(declared):,} bytes exceeds the limit of "
                                         f"{self.limit:,} bytes for JSON bodies"))(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await answer(TooLarge(f"request body exceeds the limit of {self.limit:,} bytes for "
                                             "JSON bodies"))(scope, receive, send)
        if b"\x00" in body or _JSON_NUL.search(body):
            return await answer(Invalid("the request body contains a NUL character (\\u0000)"))(scope, receive, send)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
