"""Domain operations on the job table: submit, cancel, dispatch, quota. Called by the routes, the
reconciler and tests alike; nothing here knows about HTTP: a refusal is a
:class:`~service.server.errors.Problem` of its kind, which the app answers.

Every operation opens its own session(s) and closes them before it returns (a unit of work), and
never talks to the broker while a database transaction is open: a connection is only ever held
by a thread that is using it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.server.db import ACTIVE, CANCELLED, FINISHED, QUEUED, RUNNING, Batch, Job, now
from service.server.errors import Conflict, Invalid, NotFound, TooMany
from service.server.limits import check_options
from service.server.queue import dispatch
from service.server.settings import Settings
from service.server.sources import Catalog, UnknownSource, resolve

log = logging.getLogger("w1.domain")


@dataclass
class Context:
    """What operations need: settings, the session factory, the Celery app, and (in the API)
    the catalog cache and the metrics registry."""

    settings: Settings
    sessions: sessionmaker
    celery: object
    catalog: Catalog | None = None
    metrics: object | None = None
    engine: object | None = field(default=None, repr=False)


def owned(s: Session, model, object_id: str, who: str):
    """The owner's object with this id; 404 for a missing id and another owner's object alike."""
    obj = s.scalar(select(model).where(model.id == object_id, model.owner == who))
    if obj is None:
        raise NotFound(f"no {model.__name__.lower()} {object_id!r}")
    return obj


# -- specs and quota -----------------------------------------------------------------------------

def build_spec(ctx: Context, s: Session, who: str, real, fake, options) -> dict:
    """The stored spec of a job: both references checked and in one space, options resolved."""
    from training.space import SpaceMismatch

    shapes, counts, latents = [], {}, {}
    for side, ref in (("real", real), ("fake", fake)):
        try:
            found = resolve(s, ctx.settings, who, ref.model_dump(exclude_none=True), ctx.catalog)
        except UnknownSource as exc:
            raise Invalid(f"{side}: {exc}") from None
        shapes.append(found.shape)
        counts[side] = None if ref.generator is not None else found.count
        latents[side] = getattr(found.spec, "latent", None) if ref.generator is not None else None
        if ref.generator is not None and ref.samples is None:
            raise Invalid(f"{side}: a generator source needs 'samples' (how many to draw)")
    try:
        space = options.space.resolve(*shapes)
    except SpaceMismatch as exc:
        raise Invalid(f"real and fake are in different spaces: {exc}") from None
    drawn = [ref.samples for ref in (real, fake) if ref.generator is not None]
    if drawn and options.eval_samples is None:  # a generator's `samples`: its held-out draw
        options = options.model_copy(update={"eval_samples": max(drawn)})
    resolved = options.resolved()
    # everything the worker would refuse (or choke on), refused now: bounds, splits, critic, device
    check_options(resolved, (space.channels, *space.size), counts, ctx.settings, latents)
    return {"real": real.model_dump(exclude_none=True), "fake": fake.model_dump(exclude_none=True),
            "options": resolved.model_dump(mode="json")}


def _owner_lock_key(who: str) -> int:
    return int.from_bytes(hashlib.sha256(b"w1-quota:" + who.encode()).digest()[:8], "big", signed=True)


def lock_owner(s: Session, who: str) -> None:
    """Serialise this owner's submissions until the transaction ends, so count-then-insert is atomic.

    PostgreSQL: a transaction-scoped advisory lock per owner (other owners do not wait).
    SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock (SQLite has one writer anyway);
    it must be the transaction's first statement, which it is: reads before it opened none."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _owner_lock_key(who)})
    elif dialect == "sqlite":
        s.execute(text("BEGIN IMMEDIATE"))


def check_quota(ctx: Context, s: Session, who: str, adding: int) -> None:
    """429 when ``adding`` more jobs would exceed the owner's unfinished-job limit. Call it under
    :func:`lock_owner` and insert in the same transaction."""
    limit = ctx.settings.max_queued_per_owner
    active = s.scalar(select(func.count()).select_from(Job).where(Job.owner == who, Job.status.in_(ACTIVE)))
    if active + adding > limit:
        raise TooMany(f"too many unfinished jobs: {active} queued or running, limit {limit} per owner; "
                      "wait for some to finish", retry_after=10)


def body_hash(body) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


# -- operations ----------------------------------------------------------------------------------

def submit_job(ctx: Context, who: str, body, idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Store and dispatch one job; returns (job, created). A repeated Idempotency-Key with the
    same body returns the earlier job (created False); with another body it is a 422."""
    digest = body_hash(body)
    key = idempotency_key or None
    with ctx.sessions() as s:
        if key:
            prior = s.scalar(select(Job).where(Job.owner == who, Job.idempotency_key == key))
            if prior is not None:
                return _replay(prior, digest), False
        spec = build_spec(ctx, s, who, body.real, body.fake, body.options)
        lock_owner(s, who)
        check_quota(ctx, s, who, 1)
        job = Job(owner=who, label=body.label, spec=spec, idempotency_key=key, body_hash=digest)
        s.add(job)
        try:
            s.commit()
        except IntegrityError:  # a concurrent request with the same key won
            s.rollback()
            prior = s.scalar(select(Job).where(Job.owner == who, Job.idempotency_key == key))
            if prior is None:
                raise
            return _replay(prior, digest), False
    _count_submitted(ctx, 1)
    _log_accepted([job])
    send(ctx, [job.id])
    return job, True


def _replay(prior: Job, digest: str) -> Job:
    if prior.body_hash != digest:
        raise Invalid("Idempotency-Key was already used with a different request body")
    return prior


def submit_batch(ctx: Context, who: str, body) -> tuple[Batch, list[Job]]:
    """Many fakes against one real set: one job each, accepted together or not at all (quota). An
    independent batch sends every job; a series sends its first item only, and the worker that runs it
    claims the next items itself, in order (service/server/series.py)."""
    with ctx.sessions() as s:
        specs = [(f, build_spec(ctx, s, who, body.real, f.fake, body.options)) for f in body.fakes]
        if body.mode == "series" and len({json.dumps(spec["options"], sort_keys=True) for _, spec in specs}) > 1:
            raise Invalid("a series runs every item with the same options; its generator fakes must draw the "
                          "same number of samples (or set options.eval_samples)")
        lock_owner(s, who)
        check_quota(ctx, s, who, len(specs))
        batch = Batch(owner=who, mode=body.mode)
        s.add(batch)
        s.flush()
        jobs = [Job(owner=who, label=f.label, spec={**spec, **({"step": f.step} if f.step is not None else {})},
                    batch_id=batch.id) for f, spec in specs]
        s.add_all(jobs)
        s.commit()
    _count_submitted(ctx, len(jobs))
    _log_accepted(jobs)
    send(ctx, [j.id for j in jobs] if body.mode == "independent" else [jobs[0].id])
    return batch, jobs


def cancel_batch(ctx: Context, who: str, batch_id: str) -> list[Job]:
    """Cancel every unfinished job of a batch (queued ones at once, running ones within a few steps);
    finished jobs keep their results. A series stops its chain."""
    with ctx.sessions() as s:
        batch = owned(s, Batch, batch_id, who)
        s.execute(update(Job).where(Job.batch_id == batch.id, Job.status == QUEUED)
                  .values(status=CANCELLED, cancel_requested=True, finished_at=now(), error="cancelled"))
        s.execute(update(Job).where(Job.batch_id == batch.id, Job.status == RUNNING).values(cancel_requested=True))
        s.commit()
        return list(s.scalars(select(Job).where(Job.batch_id == batch.id).order_by(Job.seq)))


def cancel_job(ctx: Context, who: str, job_id: str) -> Job:
    """Best effort: a queued job is cancelled at once, a running one within a few steps; 409 when
    it already finished."""
    with ctx.sessions() as s:
        job = owned(s, Job, job_id, who)
        if job.status in FINISHED:
            raise Conflict(f"job {job_id} already finished ({job.status})")
        s.execute(update(Job).where(Job.id == job.id, Job.status == QUEUED)
                  .values(status=CANCELLED, cancel_requested=True, finished_at=now(), error="cancelled"))
        s.execute(update(Job).where(Job.id == job.id, Job.status == RUNNING).values(cancel_requested=True))
        s.commit()
        s.refresh(job)
        return job


def send(ctx: Context, job_ids: list[str]) -> list[str]:
    """Send ``run_job`` for each id (no transaction open meanwhile), then mark the ones sent with
    ``dispatched_at``; a failed send is logged and left to the reconciler. Returns the ids sent."""
    sent = []
    for job_id in job_ids:
        try:
            dispatch(ctx.celery, job_id)
        except Exception as exc:  # broker down: the job is stored; the reconciler sends it later
            log.warning("dispatch of %s failed (%s); the reconciler will retry", job_id, exc)
            continue
        sent.append(job_id)
    if sent:
        try:
            _mark_dispatched(ctx, sent)
        except Exception as exc:  # the jobs are stored and sent: a lost mark costs a duplicate send at most
            log.warning("marking %d job(s) dispatched failed (%s); the reconciler may send them again", len(sent), exc)
    return sent


def _mark_dispatched(ctx: Context, job_ids: list[str]) -> None:
    """Record the sends. The mark is a hint (a lost one costs a duplicate send, which the claim
    guard makes a no-op), so on SQLite it skips the fsync the job's own insert paid for."""
    with ctx.sessions.kw["bind"].connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
        try:
            conn.execute(update(Job).where(Job.id.in_(job_ids), Job.status == QUEUED).values(dispatched_at=now()))
            conn.commit()
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA synchronous=FULL")


def _log_accepted(jobs: list[Job]) -> None:
    for job in jobs:  # `w1 serve` logs one line per accepted, started and finished job
        log.info("job %s accepted%s", job.id, f" ({job.label})" if job.label else "")


def _count_submitted(ctx: Context, n: int) -> None:
    if ctx.metrics is not None:
        ctx.metrics.submitted.inc(n)
