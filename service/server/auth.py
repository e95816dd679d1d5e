"""API keys: random bearer tokens, stored only as their sha256, each bound to an owner.

With no key ever created the server is in local mode: requests (from loopback only) act as the
owner ``local``, and ``w1 serve`` refuses a non-loopback host. Once any key exists (even revoked)
every request needs a valid token, so revoking the last key never opens the server.
"""
from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging

from fastapi import Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.server.db import ApiKey, new_token, now
from service.server.errors import Unauthenticated

LOCAL_OWNER = "local"
LOCAL_MODE_ENDS = ("From now on every request needs a token (Authorization: Bearer ..., or W1_TOKEN / --token for "
                   "the w1 client): a running server answers requests without one with 401 within a few seconds "
                   "(W1_AUTH_CACHE_S).")
log = logging.getLogger("w1.auth")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(session: Session, owner: str) -> tuple[ApiKey, str]:
    """Store a new key for ``owner``; the plain token is returned once and never stored."""
    if not owner.strip():
        raise ValueError("owner must not be empty")
    token = new_token()
    key = ApiKey(owner=owner.strip(), token_hash=hash_token(token), prefix=token[:10])
    session.add(key)
    session.commit()
    return key, token


def revoke_key(session: Session, key_id: str) -> ApiKey | None:
    key = session.get(ApiKey, key_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = now()
        session.commit()
    return key


def any_keys(session: Session) -> bool:
    return session.scalar(select(func.count()).select_from(ApiKey)) > 0


def active_keys(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None)))


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except (TypeError, ValueError):
        return False


def host_name(host_header: str) -> str:
    """The name in a Host header, without its port (``[::1]:8000`` -> ``::1``)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def loopback_request(request: Request) -> bool:
    """A loopback client that addressed the server by a loopback name. The name matters against DNS
    rebinding: a page of ``evil.example`` whose name now resolves to 127.0.0.1 is same-origin to the
    browser, but its requests still say ``Host: evil.example``."""
    client = request.client.host if request.client else None
    return is_loopback(client) and is_loopback(host_name(request.headers.get("host", "")))


@functools.cache  # once per process: the first request refused for want of a token
def _say_tokens_are_required() -> None:
    log.warning("API keys exist (`w1 keys create`), so requests without a token answer 401: this server no "
                "longer serves tokenless loopback clients as %r", LOCAL_OWNER)


def authenticate(request: Request, session: Session) -> str:
    """The owner behind this request, or :class:`Unauthenticated`."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if header:
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Authorization header must be 'Bearer <token>'")
        key = session.scalar(select(ApiKey).where(ApiKey.token_hash == hash_token(token.strip())))
        if key is None or key.revoked_at is not None:
            raise Unauthenticated("invalid or revoked API key")
        return key.owner
    if any_keys(session):
        _say_tokens_are_required()
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <token>'")
    if not loopback_request(request):
        raise Unauthenticated("no API keys configured: only loopback clients addressing this server as localhost, "
                              "127.0.0.1 or [::1] are served", bearer=False)
    return LOCAL_OWNER
