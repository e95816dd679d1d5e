"""The job table and its neighbours (SQLAlchemy 2). The database is the system of record:
Celery only carries job ids, so everything a restart must keep lives here.

Schema changes go through Alembic (service/migrations); ``migrate(url)`` brings a database
to the newest revision and is safe to call from several processes at once.
"""
from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from service.contracts import JobStatus

# Plain strings for SQL (the column holds the enum's values).
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (JobStatus.QUEUED.value, JobStatus.RUNNING.value,
                                                 JobStatus.SUCCEEDED.value, JobStatus.FAILED.value,
                                                 JobStatus.CANCELLED.value)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING)


def now() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("key"))
    owner: Mapped[str] = mapped_column(String(200), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell keys apart in lists
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("owner", "sha256", name="uq_dataset_owner_sha"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("ds"))
    owner: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    count: Mapped[int] = mapped_column(Integer)
    shape: Mapped[list] = mapped_column(JSON)
    size_bytes: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Generator(Base):
    __tablename__ = "generators"
    __table_args__ = (UniqueConstraint("owner", "sha256", "latent_shape_key", "latent_distribution",
                                       "output_range_key", name="uq_generator"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("gen"))
    owner: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(300))
    format: Mapped[str] = mapped_column(String(16))
    latent_shape: Mapped[list] = mapped_column(JSON)
    latent_shape_key: Mapped[str] = mapped_column(String(100))
    latent_distribution: Mapped[str] = mapped_column(String(16))
    output_range: Mapped[list] = mapped_column(JSON)
    output_range_key: Mapped[str] = mapped_column(String(100))
    output_shape: Mapped[list] = mapped_column(JSON)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Batch(Base):
    __tablename__ = "batches"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("batch"))
    owner: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_job_idempotency"),
        Index("ix_jobs_owner_seq", "owner", "seq"),
        Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
    )
    # seq orders jobs (newest first) and is the pagination cursor; id is the public name.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, default=lambda: new_id("job"))
    owner: Mapped[str] = mapped_column(String(200))
    label: Mapped[str | None] = mapped_column(String(300), nullable=True, index=True)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), nullable=True, index=True)
    spec: Mapped[dict] = mapped_column(JSON)  # {"real": SOURCE, "fake": SOURCE, "options": {...}}
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Fencing token: bumped by every claim; each write of an attempt is guarded by its own value,
    # so a zombie attempt (its worker presumed dead and replaced) cannot overwrite a newer one.
    fence: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    body_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    run_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # summed over attempts


def as_utc(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


def make_engine(url: str, pool_size: int = 5, pool_timeout: float = 30.0) -> Engine:
    """An engine fit for several processes sharing the database (SQLite: WAL + busy timeout).

    ``pool_size``: the API passes its thread count plus a margin, so a thread never waits for a
    connection (each connection is used by one thread at a time); ``pool_timeout`` bounds the
    wait should one still happen (the API then answers 503 instead of stalling)."""
    pool = {"pool_size": pool_size, "max_overflow": 0 if pool_size > 5 else 10, "pool_timeout": pool_timeout}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **pool)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def make_sessionmaker(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (Alembic ``upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    here = Path(__file__).parent
    cfg = Config(str(here / "alembic.ini"))
    cfg.set_main_option("script_location", str(here / "migrations"))
    cfg.attributes["url"] = url
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(cfg, "head")


def new_token() -> str:
    return "w1_" + secrets.token_urlsafe(32)
