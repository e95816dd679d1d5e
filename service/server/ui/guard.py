"""Cross-site request refusal (CSRF) for state-changing requests.

With API keys, every state-changing request needs ``Authorization: Bearer``: a browser never adds
that header by itself, and another site's page cannot add it without a CORS preflight this server
never grants. In the keyless local mode there is no token, so a page on any site could make the
user's browser POST a form to ``http://127.0.0.1:8000`` (a multipart upload or a cancel is a
"simple" request that needs no preflight). Browsers say where a request comes from
(``Sec-Fetch-Site``, else ``Origin``); this middleware refuses POST/PUT/PATCH/DELETE from another
site. Clients that are not browsers (the CLI, httpx, curl) send neither header and pass.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from service.server.answers import answer
from service.server.errors import Forbidden

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def cross_site(headers: dict[bytes, bytes]) -> bool:
    """True when the browser marks the request as coming from another site or origin."""
    site = headers.get(b"sec-fetch-site")
    if site is not None:
        return site not in (b"same-origin", b"none")  # "none": the user typed it or a bookmark
    origin = headers.get(b"origin")
    if origin is None:
        return False
    hosts = {headers.get(b"host", b"").decode("latin-1").lower()}
    forwarded = headers.get(b"x-forwarded-host")
    if forwarded:
        hosts.add(forwarded.decode("latin-1").split(",")[0].strip().lower())
    return urlsplit(origin.decode("latin-1")).netloc.lower() not in hosts


class CrossSiteGuard:
    """Pure ASGI middleware: 403 for a state-changing request from another site (see the module)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in UNSAFE and cross_site(dict(scope.get("headers") or [])):
            refused = Forbidden("cross-site request refused: state-changing requests must come from this "
                                "server's own pages or a non-browser client")
            return await answer(refused)(scope, receive, send)
        return await self.app(scope, receive, send)
