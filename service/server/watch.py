"""One poller per API process behind every open event stream (``/v1/jobs/{id}/events`` and the
dashboard's ``/ui/api/events``).

A stream does not poll the database itself: it watches some job ids, and a single task reads all
watched jobs in one query every ``interval`` seconds (in a worker thread, with a session closed
before the next poll) and wakes the streams whose jobs changed. So 100 open streams cost one query
per interval and hold no pooled connection between polls. The job table is the only truth: several
API processes each run their own poller, and a stream sees every change whichever process (or
worker) made it.
"""
from __future__ import annotations

import asyncio
import logging

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from service.server.db import Job
from service.server.views import job_out

log = logging.getLogger("w1.watch")


class Watching:
    """What one stream watches: the latest view of each of its jobs, and which changed since it
    last asked. Use it as a context manager (``with watch.watching(first) as w:``)."""

    def __init__(self, watch: JobWatch, first: dict[str, dict]):
        self.watch, self.views = watch, dict(first)
        self._changed: set[str] = set()
        self._event = asyncio.Event()

    def __enter__(self) -> Watching:
        self.watch._add(self)
        return self

    def __exit__(self, *exc) -> None:
        self.watch._remove(self)

    def notify(self, job_id: str, view: dict) -> None:
        self.views[job_id] = view
        self._changed.add(job_id)
        self._event.set()

    async def changed(self, among: set[str] | None = None) -> list[str]:
        """Wait until one of the jobs (of ``among``, when given) changes; their ids, in watch order."""
        while True:
            await self._event.wait()
            self._event.clear()
            ids = [i for i in self.views if i in self._changed and (among is None or i in among)]
            self._changed.clear()
            if ids:
                return ids


class JobWatch:
    def __init__(self, sessions, interval: float = 0.5):
        self.sessions, self.interval = sessions, interval
        self.watchers: dict[str, set[Watching]] = {}
        self.latest: dict[str, dict] = {}

    def watching(self, first: dict[str, dict]) -> Watching:
        """Watch these jobs, starting from their views ``first`` (job id -> view)."""
        return Watching(self, first)

    def _add(self, w: Watching) -> None:
        for job_id, view in w.views.items():
            self.watchers.setdefault(job_id, set()).add(w)
            self.latest.setdefault(job_id, view)

    def _remove(self, w: Watching) -> None:
        for job_id in w.views:
            watchers = self.watchers.get(job_id)
            if watchers is not None:
                watchers.discard(w)
                if not watchers:
                    del self.watchers[job_id]
                    self.latest.pop(job_id, None)

    def _load(self, ids: list[str]) -> dict[str, dict]:
        with self.sessions() as s:
            return {j.id: job_out(j).model_dump(mode="json") for j in s.scalars(select(Job).where(Job.id.in_(ids)))}

    async def poll_once(self) -> None:
        ids = list(self.watchers)
        if not ids:
            return
        for job_id, view in (await run_in_threadpool(self._load, ids)).items():
            if job_id in self.watchers and view != self.latest.get(job_id):
                self.latest[job_id] = view
                for w in self.watchers[job_id]:
                    w.notify(job_id, view)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll_once()
            except Exception:  # a database hiccup: streams wait for the next poll
                log.exception("event poll failed")
