"""Prometheus metrics of the API process. Job counts by status are read from the job table at
scrape time (the table is the truth; workers on other hosts need no metrics endpoint of their own)."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from sqlalchemy import func, select

from service.server.db import ACTIVE, FINISHED, RUNNING, Job, as_utc, now


class Metrics:
    def __init__(self, sessions):
        self.sessions = sessions
        self.registry = CollectorRegistry()
        self.requests = Counter("w1_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.submitted = Counter("w1_jobs_submitted_total", "Jobs submitted", registry=self.registry)
        self.uploaded = Counter("w1_upload_bytes_total", "Bytes of accepted uploads", registry=self.registry)
        self.jobs = Gauge("w1_jobs", "Jobs in the table by status", ["status"], registry=self.registry)
        self.oldest_heartbeat = Gauge("w1_running_heartbeat_age_seconds",
                                      "Age of the stalest heartbeat among running jobs", registry=self.registry)

    def request(self, method: str, route: str, status: int) -> None:
        self.requests.labels(method, route, str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        with self.sessions() as s:
            counts = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            oldest = s.scalar(select(func.min(Job.heartbeat_at)).where(Job.status == RUNNING))
        for status in (*ACTIVE, *FINISHED):
            self.jobs.labels(status).set(counts.get(status, 0))
        self.oldest_heartbeat.set((now() - as_utc(oldest)).total_seconds() if oldest else 0)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
