"""The Alembic migrations produce exactly the models' schema; queue settings that recovery
relies on (late acks, prefetch 1, Redis visibility timeout beyond the job time limit)."""


def test_migrations_match_models(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from service.db import Base, make_engine, migrate

    url = f"sqlite:///{tmp_path / 'w1.db'}"
    migrate(url)
    migrate(url)  # idempotent
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_queue_settings(tmp_path):
    from service.queue import make_celery
    from service.settings import get_settings

    app = make_celery(get_settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0", job_time_limit_s=7200))
    conf = app.conf
    assert conf.task_acks_late and conf.worker_prefetch_multiplier == 1 and conf.worker_concurrency == 1
    assert conf.broker_transport_options["visibility_timeout"] > 7200
    fs = make_celery(get_settings(data_dir=tmp_path)).conf
    assert fs.broker_url == "filesystem://"
    assert fs.broker_transport_options["data_folder_in"].startswith(str(tmp_path))
