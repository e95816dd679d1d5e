"""The reconciler: the job table's janitor, run by exactly one API process (elected: see
service.server.leader; every API process stands, one leads, another takes over when it dies).

Each pass:
- a running job whose heartbeat is older than ``stale_after_s`` lost its worker (SIGKILL, OOM,
  host gone; the filesystem broker drops such a message, Redis returns it only after its
  visibility timeout). It goes back to ``queued`` with a bumped fence (the old attempt, should it
  still be alive, can no longer write) and is dispatched again; after ``max_attempts`` it fails.
  A stale job whose cancellation was requested is marked cancelled instead.
- a running job past ``job_time_limit_s`` (plus the stale window) fails, fenced the same way.
- a queued job never dispatched (the API died between commit and send, or the send failed) is
  dispatched; a queued job sent more than ``redispatch_after_s`` ago and still unclaimed is sent
  again when its message is not in the broker (Redis restarted empty, a lost file), or when the
  broker cannot be inspected; a series' items wait for their predecessors (service/server/series.py).
  ``dispatched_at`` is set only after a send succeeded, so a failed
  send is retried on the next pass; a duplicate message is a no-op at claim time.
Every change is a guarded UPDATE, so two passes overlapping during a takeover are redundant, not harmful.
"""
from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta

from sqlalchemy import and_, or_, select, update

from service.server.db import CANCELLED, FAILED, QUEUED, RUNNING, Job, now
from service.server.domain import Context, send
from service.server.leader import lead_for
from service.server.queue import messages_in_broker
from service.server.series import waiting
from service.server.settings import Settings

log = logging.getLogger("w1.reconciler")


def reconcile(settings: Settings, sessions, celery) -> dict[str, int]:
    """One pass; returns how many jobs it requeued, failed, cancelled and dispatched."""
    t = now()
    stale = t - timedelta(seconds=settings.stale_after_s)
    counts = {"requeued": 0, "failed": 0, "cancelled": 0, "dispatched": 0}
    with sessions() as s:
        # Past the time limit while still "running" (alive or not): fail it.
        overdue = t - timedelta(seconds=settings.job_time_limit_s + settings.stale_after_s)
        for job in s.scalars(select(Job).where(Job.status == RUNNING, Job.started_at < overdue)):
            counts["failed"] += s.execute(update(Job).where(Job.id == job.id, Job.fence == job.fence, Job.status == RUNNING)
                                          .values(status=FAILED, fence=Job.fence + 1, finished_at=t,
                                                  error=f"time limit of {settings.job_time_limit_s:g} s exceeded")).rowcount
        for job in s.scalars(select(Job).where(Job.status == RUNNING, Job.heartbeat_at < stale)):
            guard = and_(Job.id == job.id, Job.fence == job.fence, Job.status == RUNNING)
            if job.cancel_requested:
                n = s.execute(update(Job).where(guard).values(
                    status=CANCELLED, fence=Job.fence + 1, finished_at=t,
                    error="cancelled by request (its worker stopped responding)")).rowcount
                counts["cancelled"] += n
            elif job.attempts >= settings.max_attempts:
                n = s.execute(update(Job).where(guard).values(
                    status=FAILED, fence=Job.fence + 1, finished_at=t,
                    error=f"worker lost {job.attempts} times (no heartbeat for {settings.stale_after_s:g} s); "
                          f"gave up after max_attempts={settings.max_attempts}")).rowcount
                counts["failed"] += n
            else:
                n = s.execute(update(Job).where(guard).values(
                    status=QUEUED, fence=Job.fence + 1, dispatched_at=None, worker=None,
                    error=f"attempt {job.attempts} lost its worker; requeued")).rowcount
                counts["requeued"] += n
        s.commit()
        # Queued and never sent (give the API a few seconds to finish its own send; a requeued job
        # is older than that), or sent long ago and still unclaimed.
        grace = t - timedelta(seconds=max(5.0, settings.reconcile_interval_s))
        overdue_send = t - timedelta(seconds=settings.redispatch_after_s)
        unsent = s.scalars(select(Job.id).where(Job.status == QUEUED, Job.dispatched_at.is_(None),
                                                or_(Job.created_at < grace, Job.attempts > 0))).all()
        unclaimed = s.scalars(select(Job.id).where(Job.status == QUEUED,
                                                   Job.dispatched_at < overdue_send)).all()
        held = waiting(s, [*unsent, *unclaimed])  # a series' later items: its worker claims them in turn
        unsent, unclaimed = [j for j in unsent if j not in held], [j for j in unclaimed if j not in held]
    if unclaimed:
        present = messages_in_broker(celery, settings)
        if present is not None:
            unclaimed = [j for j in unclaimed if j not in present]
    # domain.send marks dispatched_at only after a send succeeded: a failed one is retried next pass
    counts["dispatched"] = len(send(Context(settings, sessions, celery), [*unsent, *unclaimed]))
    if any(counts.values()):
        log.warning("reconciler: %s", counts)
    return counts


def run_forever(settings: Settings, sessions, celery, stop: threading.Event) -> None:
    """Every ``reconcile_interval_s``: reconcile if this process leads (service.server.leader), else
    ask for the lead again; hand it back when stopped."""
    lead = lead_for(settings)
    leading = False
    try:
        while not stop.wait(settings.reconcile_interval_s):
            try:
                if lead.holds() != leading:
                    leading = not leading
                    log.info("reconciler: %s in this API process (pid %d)", "running" if leading else "stopped",
                             os.getpid())
                if leading:
                    reconcile(settings, sessions, celery)
            except Exception:  # keep reconciling: a database outage is temporary
                log.exception("reconciler pass failed")
    finally:
        lead.close()
