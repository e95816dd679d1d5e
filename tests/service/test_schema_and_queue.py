"""The Alembic migrations produce exactly the models' schema; queue settings that recovery
relies on (late acks, prefetch 1, Redis visibility timeout beyond the job time limit)."""


def test_migrations_match_models(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from service.server.db import Base, make_engine, migrate

    url = f"sqlite:///{tmp_path / 'w1.db'}"
    migrate(url)
    migrate(url)  # idempotent
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_queue_settings(tmp_path):
    from service.server.queue import make_celery
    from service.server.settings import get_settings

    app = make_celery(get_settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0", job_time_limit_s=7200))
    conf = app.conf
    assert conf.task_acks_late and conf.worker_prefetch_multiplier == 1 and conf.worker_concurrency == 1
    assert conf.broker_transport_options["visibility_timeout"] > 7200
    fs = make_celery(get_settings(data_dir=tmp_path)).conf
    assert fs.broker_url == "filesystem://"
    assert fs.broker_transport_options["data_folder_in"].startswith(str(tmp_path))
    assert fs.broker_transport_options["control_folder"].startswith(str(tmp_path))


def _race_publisher_and_consumer(transport, folder, count=400):
    """Publish `count` messages from one thread while another drains the same folder as fast as it can;
    returns the payloads the consumer got and the errors it hit."""
    import threading

    from kombu import Connection

    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "polling_interval": 0,
               "control_folder": str(folder / "control")}
    got, errors = [], []

    def consume():
        with Connection(transport=transport, transport_options=options) as conn:
            channel = conn.default_channel
            channel.queue_declare("w1")
            while len(got) + len(errors) < count:
                try:
                    message = channel.basic_get("w1", no_ack=True)
                except Exception as exc:  # the stock transport: JSONDecodeError on an empty file
                    errors.append(exc)
                    continue
                if message is not None:
                    got.append(message.payload)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    with Connection(transport=transport, transport_options=options) as conn:
        queue = conn.SimpleQueue("w1")
        for i in range(count):
            queue.put({"job": i}, serializer="json")
    consumer.join(timeout=60)
    return got, errors


def test_filesystem_broker_never_hands_out_a_half_written_message(tmp_path):
    """kombu's stock filesystem channel creates a message file before writing it; a worker polling in
    between read an empty file and died (it hung a batch in CI). Ours renames complete files into place."""
    import service.server.queue  # noqa: F401  (registers the atomic transport for filesystem://)
    from kombu.transport import resolve_transport

    assert resolve_transport("filesystem").__name__ == "AtomicFilesystemTransport"
    got, errors = _race_publisher_and_consumer("filesystem", tmp_path)
    assert errors == []
    assert sorted(p["job"] for p in got) == list(range(400))
