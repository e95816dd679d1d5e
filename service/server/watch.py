"""One poller behind every open ``/events`` stream.

A stream does not poll the database itself: it subscribes to a job id, and a single task reads all
watched jobs in one query every ``interval`` seconds (in a worker thread, with a session closed
before the next poll) and wakes the streams whose job changed. So 100 open streams cost one query
per interval and hold no pooled connection between polls.
"""
from __future__ import annotations

import asyncio
import logging

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from service.server.db import Job
from service.server.views import job_out

log = logging.getLogger("w1.watch")


class Subscription:
    def __init__(self, watch: "JobWatch", job_id: str):
        self.watch, self.job_id, self.changed = watch, job_id, asyncio.Event()

    async def next(self, timeout: float) -> dict | None:
        """The job's latest view after a change, or None when nothing changed within ``timeout``."""
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        self.changed.clear()
        return self.watch.latest.get(self.job_id)

    def close(self) -> None:
        self.watch._unsubscribe(self)


class JobWatch:
    def __init__(self, sessions, interval: float = 0.5):
        self.sessions, self.interval = sessions, interval
        self.subscribers: dict[str, set[Subscription]] = {}
        self.latest: dict[str, dict] = {}

    def subscribe(self, job_id: str, first: dict) -> Subscription:
        sub = Subscription(self, job_id)
        self.subscribers.setdefault(job_id, set()).add(sub)
        self.latest.setdefault(job_id, first)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self.subscribers.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.subscribers[sub.job_id]
                self.latest.pop(sub.job_id, None)

    def _load(self, ids: list[str]) -> dict[str, dict]:
        with self.sessions() as s:
            return {j.id: job_out(j).model_dump(mode="json") for j in s.scalars(select(Job).where(Job.id.in_(ids)))}

    async def poll_once(self) -> None:
        ids = list(self.subscribers)
        if not ids:
            return
        for job_id, view in (await run_in_threadpool(self._load, ids)).items():
            if job_id in self.subscribers and view != self.latest.get(job_id):
                self.latest[job_id] = view
                for sub in self.subscribers[job_id]:
                    sub.changed.set()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll_once()
            except Exception:  # a database hiccup: streams wait for the next poll
                log.exception("event poll failed")
