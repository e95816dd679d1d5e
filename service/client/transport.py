"""The client's HTTP plumbing, on maintained libraries: one httpx connection pool; retries through
tenacity (a ``503`` is retried after the server's own ``Retry-After``; an unreachable server only
where a caller rides out restarts); Server-Sent Events read by httpx-sse; every failure a one-line
:class:`W1Error` naming the server (or the local file) and the problem."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import tenacity
from httpx_sse import connect_sse

MAX_RETRY_AFTER_S = 60.0  # a longer Retry-After is waited this long at most before asking again


class W1Error(Exception):
    """A failure worth one line to the user; `status` is the HTTP status when there was one, and
    `retry_after` the seconds the server asked to wait (503, 429)."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


def detail_of(response: httpx.Response) -> str:
    """The server's error message on one line (FastAPI validation errors are lists)."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text.strip() or response.reason_phrase
    if isinstance(detail, list):
        parts = []
        for err in detail:
            if isinstance(err, dict):
                loc = ".".join(str(p) for p in err.get("loc", ())[1:])
                parts.append(f"{loc}: {err.get('msg', err)}" if loc else str(err.get("msg", err)))
            else:
                parts.append(str(err))
        detail = "; ".join(parts)
    return " ".join(str(detail).split())


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: the backoff decides


class ServerWait(tenacity.wait.wait_base):
    """How long before the next try: the server's Retry-After when it sent one, else exponential
    backoff with jitter (an unreachable server says nothing)."""

    backoff = tenacity.wait_random_exponential(multiplier=0.5, max=10)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        after = getattr(retry_state.outcome.exception(), "retry_after", None)
        return min(after, MAX_RETRY_AFTER_S) if after is not None else self.backoff(retry_state)


def retrying(busy_s: float, outage_s: float = 0.0) -> tenacity.Retrying:
    """Retry a call that raised W1Error: a 503 for up to ``busy_s`` seconds; with ``outage_s``, an
    unreachable server (no status) for up to that long. Other errors are raised at once."""
    def retry(exc: BaseException) -> bool:
        return isinstance(exc, W1Error) and (exc.status == 503 or (outage_s > 0 and exc.status is None))

    return tenacity.Retrying(retry=tenacity.retry_if_exception(retry), wait=ServerWait(),
                             stop=tenacity.stop_after_delay(max(busy_s, outage_s)), reraise=True)


class Transport:
    """One httpx pool to one server, with the token; requests that raise W1Error."""

    def __init__(self, server: str, token: str | None, timeout: float, busy_s: float):
        self.server = server
        self.busy_s = busy_s  # how long a request waits out a busy server (503 + Retry-After)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=server, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def unreachable(self, exc: Exception) -> W1Error:
        return W1Error(f"cannot reach the w1 server at {self.server}: {exc or type(exc).__name__}")

    def check(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        status, detail = response.status_code, detail_of(response)
        if status in (401, 403):
            raise W1Error(f"{self.server} rejected the API token (HTTP {status}: {detail}); "
                          "pass --token or set W1_TOKEN", status)
        raise W1Error(f"{self.server}: {detail} (HTTP {status} on {response.request.method} "
                      f"{response.request.url.path})", status, _retry_after(response))

    def _once(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from None
        return self.check(response)

    def request(self, method: str, path: str, *, outage_s: float = 0.0, **kwargs) -> httpx.Response:
        """One request, retried while the server is busy (and, with ``outage_s``, unreachable).
        Every request the client makes is safe to repeat: jobs carry an Idempotency-Key, uploads
        are deduplicated by content, and a 503 is answered before anything is stored."""
        return retrying(self.busy_s, outage_s)(self._once, method, path, **kwargs)

    def events(self, path: str, read_timeout: float) -> Iterator[tuple[str, Any]]:
        """A Server-Sent Events stream as (event, data) pairs, data decoded from JSON."""
        timeout = httpx.Timeout(self.http.timeout.connect, read=read_timeout)
        try:
            with connect_sse(self.http, "GET", path, timeout=timeout) as source:
                if not source.response.is_success:
                    source.response.read()
                    self.check(source.response)
                for event in source.iter_sse():
                    yield event.event, _decode(event.data)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from None

    def download(self, path: str, dest: Path, timeout: float) -> Path:
        """Stream a file to ``dest`` (through ``dest.part``, so a broken download leaves nothing)."""
        tmp = dest.with_name(dest.name + ".part")
        try:
            with self.http.stream("GET", path, timeout=timeout) as response:
                if not response.is_success:
                    response.read()
                    self.check(response)
                with tmp.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
        except httpx.TransportError as exc:
            tmp.unlink(missing_ok=True)
            raise self.unreachable(exc) from None
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise W1Error(f"{dest}: cannot write ({exc.strerror})") from None
        tmp.replace(dest)
        return dest


def _decode(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data


class Progress:
    """A file wrapper for httpx's multipart body that reports bytes read (= sent); a retried upload
    rewinds it (httpx seeks to 0) and the count starts again."""

    def __init__(self, handle, name: str, report: Callable[[str, int, int], None] | None):
        self.handle, self.name, self.report = handle, name, report
        self.total = os.fstat(handle.fileno()).st_size
        self.sent = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.sent += len(chunk)
        if self.report is not None:
            self.report(self.name, self.sent, self.total)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self.handle.seek(offset, whence)
        self.sent = position
        return position

    def tell(self) -> int:
        return self.handle.tell()

    def fileno(self) -> int:
        return self.handle.fileno()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()
