"""Prometheus metrics of the API. Job counts by status are read from the job table at scrape time
(the table is the truth; workers on other hosts need no metrics endpoint of their own).

Counters (requests, submissions, upload bytes) live in the process that counted them. When
``w1 serve --api-workers N`` runs several API processes on one port, ``PROMETHEUS_MULTIPROC_DIR``
is set for them (prometheus_client's multiprocess mode): each process writes its counters there and
a scrape, whichever process answers it, adds them all up. Replicas on other hosts are scraped one
by one, as usual."""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from service.server.db import ACTIVE, FINISHED, RUNNING, Job, as_utc, now

MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"


class JobTable:
    """Gauges read from the job table when scraped."""

    def __init__(self, sessions):
        self.sessions = sessions

    def collect(self):
        with self.sessions() as s:
            counts = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            oldest = s.scalar(select(func.min(Job.heartbeat_at)).where(Job.status == RUNNING))
        jobs = GaugeMetricFamily("w1_jobs", "Jobs in the table by status", labels=["status"])
        for status in (*ACTIVE, *FINISHED):
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily("w1_running_heartbeat_age_seconds", "Age of the stalest heartbeat among running jobs",
                                value=(now() - as_utc(oldest)).total_seconds() if oldest else 0)


class Metrics:
    def __init__(self, sessions):
        shared = bool(os.environ.get(MULTIPROCESS))
        own = None if shared else CollectorRegistry()  # shared: counted in files, added up at scrape
        self.requests = Counter("w1_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=own)
        self.submitted = Counter("w1_jobs_submitted_total", "Jobs submitted", registry=own)
        self.uploaded = Counter("w1_upload_bytes_total", "Bytes of accepted uploads", registry=own)
        self.registry = own or CollectorRegistry()
        if shared:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry)
        self.registry.register(JobTable(sessions))

    def request(self, method: str, route: str, status: int) -> None:
        self.requests.labels(method, route, str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
