"""Server settings: environment variables prefixed ``W1_``, optionally a settings file.

``W1_CONFIG=/path/settings.yaml`` (or ``.toml``) names a file with the same keys in lower case
(``data_dir: /srv/w1``); environment variables override the file. Nested values (the catalog)
are JSON in the environment: ``W1_CATALOG='{"mnist": {"source": "...", "description": "..."}}'``.

| setting | env | default |
|---|---|---|
| data_dir | W1_DATA_DIR | ``~/.w1`` (uploads, checkpoints, artifacts, SQLite file, broker folders) |
| database_url | W1_DATABASE_URL | ``sqlite:///<data_dir>/w1.db`` |
| broker_url | W1_BROKER_URL | ``filesystem://`` with folders under ``<data_dir>/broker`` |
| host | W1_HOST | ``127.0.0.1`` |
| port | W1_PORT | ``8000`` |
| max_upload_bytes | W1_MAX_UPLOAD_BYTES | ``2147483648`` (2 GiB); larger uploads answer 413 |
| catalog | W1_CATALOG | ``{}``: name -> {source: source spec string, description} |
| allow_torchscript | W1_ALLOW_TORCHSCRIPT | ``false`` (TorchScript generators can run arbitrary ops) |
| job_time_limit_s | W1_JOB_TIME_LIMIT_S | ``21600`` (6 h); a job running longer fails |
| max_queued_per_owner | W1_MAX_QUEUED_PER_OWNER | ``100`` queued+running jobs; more answer 429 |
| max_attempts | W1_MAX_ATTEMPTS | ``3``; after that a job whose worker died fails |
| heartbeat_interval_s | W1_HEARTBEAT_INTERVAL_S | ``5`` |
| stale_after_s | W1_STALE_AFTER_S | ``60``; a running job without heartbeat this long is re-dispatched |
| reconcile_interval_s | W1_RECONCILE_INTERVAL_S | ``10`` |
| workers | W1_WORKERS | unset: one worker per visible GPU, or one CPU worker when none (``w1 serve``) |
| broker_poll_interval_s | W1_BROKER_POLL_INTERVAL_S | ``0.1`` (filesystem:// polling) |
| fid_weights | W1_FID_WEIGHTS | unset: pytorch-fid's Inception weights in the worker's torch hub cache; the only way a job finds them (a job's own ``fid_weights`` is refused) |
| run_reconciler | W1_RUN_RECONCILER | ``true``: the API process runs the reconciler; set false on all API replicas but one |
"""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)


class CatalogEntry(BaseModel):
    """An operator-configured reference set: a training source spec string and a description."""

    source: str
    description: str = ""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="W1_", extra="forbid")

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".w1")
    database_url: str | None = None
    broker_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 2 * 1024**3
    catalog: dict[str, CatalogEntry] = Field(default_factory=dict)
    allow_torchscript: bool = False
    job_time_limit_s: float = 6 * 3600
    max_queued_per_owner: int = 100
    max_attempts: int = 3
    heartbeat_interval_s: float = 5.0
    stale_after_s: float = 60.0
    reconcile_interval_s: float = 10.0
    workers: int | None = None
    broker_poll_interval_s: float = 0.1
    run_reconciler: bool = True
    fid_weights: str | None = None

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get("W1_CONFIG")
        if path:
            if not Path(path).is_file():
                raise FileNotFoundError(f"W1_CONFIG names {path!r}, which is not a file")
            if path.endswith(".toml"):
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            elif path.endswith((".yaml", ".yml")):
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            else:
                raise ValueError(f"W1_CONFIG={path!r}: use a .yaml, .yml or .toml file")
        return tuple(sources)

    # Derived locations: one obvious place for each kind of file under the data dir.
    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'w1.db'}"

    @property
    def broker(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def artifacts_dir(self, job_id: str, fence: int) -> Path:
        """Each attempt writes its own folder; the API serves the one of the attempt that won."""
        return self.job_dir(job_id) / f"attempt-{fence}" / "artifacts"

    def ensure_dirs(self) -> None:
        for d in (self.data_dir, self.uploads_dir, self.jobs_dir, self.broker_dir / "queue",
                  self.broker_dir / "processed", self.data_dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)


def get_settings(**overrides) -> Settings:
    """Fresh settings from the environment (and W1_CONFIG file); overrides win over both."""
    s = Settings(**overrides)
    s.data_dir = s.data_dir.expanduser().resolve()
    return s
