"""The Celery app. It only carries ``run_job(job_id)``; the job table holds everything else.

Broker: ``W1_BROKER_URL`` (e.g. ``redis://host:6379/0``) or, by default, kombu's ``filesystem://``
transport in ``<data_dir>/broker`` (measured: ~0.12 s dispatch at a 0.1 s poll, no duplicate
executions under racing workers). A worker SIGKILLed mid-job loses its filesystem message, and
Redis only redelivers after its visibility timeout: the reconciler covers both through heartbeats.
Workers take one job at a time (concurrency 1, prefetch 1) and acknowledge late.
"""
from __future__ import annotations

import os
import uuid
from time import monotonic

from celery import Celery
from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

from service.server.settings import Settings

TASK_NAME = "w1.run_job"
QUEUE = "w1"


class _AtomicFilesystemChannel(filesystem.Channel):
    """kombu's filesystem channel creates a message file and then writes into it, so a consumer polling
    in between moves away an empty file and its worker dies on the JSON error (seen in our tests).
    Write under a name consumers skip (they only take ``*.<queue>.msg``), then rename it into place:
    a rename within one folder is atomic, so a consumer sees a complete message or none."""

    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + ".part"
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class AtomicFilesystemTransport(filesystem.Transport):
    Channel = _AtomicFilesystemChannel


# every filesystem:// broker in our processes (API and workers import this module) writes atomically
TRANSPORT_ALIASES["filesystem"] = f"{__name__}:AtomicFilesystemTransport"


def make_celery(settings: Settings) -> Celery:
    app = Celery("w1")
    transport_options: dict = {}
    broker = settings.broker
    if broker.startswith("filesystem://"):
        folder = str(settings.broker_dir / "queue")
        transport_options = {
            "data_folder_in": folder,
            "data_folder_out": folder,
            "processed_folder": str(settings.broker_dir / "processed"),
            # broadcast (ping, revoke) exchanges; kombu's default is ./control in the working directory
            "control_folder": str(settings.broker_dir / "control"),
            "store_processed": False,
            "polling_interval": settings.broker_poll_interval_s,
        }
    elif broker.startswith(("redis://", "rediss://")):
        # Redis redelivers an unacknowledged message after this; it must exceed the longest job,
        # or a healthy long job runs twice (the claim guard would then turn the copy into a no-op).
        transport_options = {"visibility_timeout": int(settings.job_time_limit_s + 3600)}
    app.conf.update(
        broker_url=broker,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


def dispatch(app: Celery, job_id: str) -> None:
    """Send ``run_job(job_id)``; safe to repeat (a duplicate delivery is a no-op at claim time)."""
    app.send_task(TASK_NAME, args=[job_id], queue=QUEUE)


def messages_in_broker(app: Celery, settings: Settings) -> set[str] | None:
    """Job ids with a message waiting in (or taken but unacknowledged from) the broker, or None
    when this broker cannot be inspected (or is unreachable): the reconciler then resends on its
    deadline alone. Reads the filesystem queue folder, or Redis's queue lists and unacked hash."""
    import re

    texts: list[str] = []
    try:
        broker = settings.broker
        if broker.startswith("filesystem://"):
            folder = settings.broker_dir / "queue"
            for p in folder.glob(f"*.{QUEUE}.msg"):
                try:
                    texts.append(p.read_text(errors="replace"))
                except OSError:  # consumed meanwhile
                    continue
        elif broker.startswith(("redis://", "rediss://")) and hasattr(app, "connection_for_read"):
            with app.connection_for_read() as conn:
                client = conn.default_channel.client
                for key in client.scan_iter(match=f"{QUEUE}*"):
                    if client.type(key) == b"list":
                        texts.extend(m.decode(errors="replace") for m in client.lrange(key, 0, -1))
                texts.extend(v.decode(errors="replace") for v in client.hvals("unacked"))
        else:
            return None
    except Exception:
        return None
    return set(re.findall(r"job_[0-9a-f]+", "\n".join(texts)))


def broker_reachable(app: Celery, timeout: float = 2.0) -> bool:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False
