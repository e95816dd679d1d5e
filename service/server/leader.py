"""Which API process runs the reconciler: each one asks every reconcile interval, exactly one leads.

API processes are interchangeable (``w1 serve --api-workers N``, or replicas behind a load balancer
against one PostgreSQL): each serves requests and runs its own event poller, and the reconciler runs
in whichever holds the lead. A lead is a lock that the operating system or the database releases
when its holder dies, so another process takes over at its next try:

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) held by a connection of its
  own, outside the request pool and with no transaction open. The lock ends with that connection:
  when the process exits or dies its socket closes (TCP keepalives find a vanished host). The
  connection's ``application_name`` names the process (``w1-reconciler-<pid>``), so
  ``pg_stat_activity`` joined with ``pg_locks`` says who leads.
- SQLite (the embedded default, one machine): an exclusive ``flock`` on
  ``<data_dir>/reconciler.lock``; the kernel releases it when the process dies. The file holds the
  leader's pid.

Every change the reconciler makes is a guarded UPDATE, so the moment two passes overlap during a
takeover is redundant, not harmful.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from service.server.settings import Settings

log = logging.getLogger("w1.reconciler")
LOCK_KEY = int.from_bytes(hashlib.sha256(b"w1-reconciler").digest()[:8], "big", signed=True)


class PostgresLead:
    """The advisory lock ``LOCK_KEY``, on a connection of its own."""

    def __init__(self, url: str):
        self.engine = create_engine(url, poolclass=NullPool, connect_args={
            "application_name": f"w1-reconciler-{os.getpid()}", "connect_timeout": 10,
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3})
        self.conn = None
        self.leading = False

    def holds(self) -> bool:
        """True when this process leads now: it still holds the lock, or it just took it."""
        try:
            if self.conn is None:
                self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if self.leading:
                self.conn.execute(text("SELECT 1"))  # the session, and with it the lock, is alive
            else:
                self.leading = bool(self.conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}))
        except Exception as exc:  # the connection is gone, and the lock with it
            log.warning("reconciler lead: database connection lost (%s)", exc)
            self.release()
        return self.leading

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()  # ends the session: PostgreSQL releases the lock
            except Exception:
                pass
        self.conn, self.leading = None, False

    def close(self) -> None:
        self.release()
        self.engine.dispose()


class FileLead:
    """An exclusive ``flock`` on ``path``."""

    def __init__(self, path: Path):
        self.path, self.fd = path, None

    def holds(self) -> bool:
        if self.fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the file releases the lock
            self.fd = None

    close = release


def lead_for(settings: Settings) -> PostgresLead | FileLead:
    """The lead this server's database allows: an advisory lock on PostgreSQL, a file lock beside
    the SQLite file."""
    url = settings.db_url
    if url.startswith("postgresql"):
        return PostgresLead(url)
    if url.startswith("sqlite"):
        return FileLead(settings.data_dir / "reconciler.lock")
    raise ValueError(f"W1_DATABASE_URL: no reconciler election for {url.split(':', 1)[0]!r}; use PostgreSQL or SQLite")
