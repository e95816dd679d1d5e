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
| port | W1_PORT | ``8000`` (1 to 65535) |
| max_upload_bytes | W1_MAX_UPLOAD_BYTES | ``2147483648`` (2 GiB); larger uploads answer 413 |
| catalog | W1_CATALOG | ``{}``: name -> {source: source spec string, description} |
| allow_torchscript | W1_ALLOW_TORCHSCRIPT | ``false`` (TorchScript generators can run arbitrary ops) |
| job_time_limit_s | W1_JOB_TIME_LIMIT_S | ``21600`` (6 h); a job running longer fails |
| max_queued_per_owner | W1_MAX_QUEUED_PER_OWNER | ``100`` queued+running jobs; more answer 429 |
| max_attempts | W1_MAX_ATTEMPTS | ``3``; after that a job whose worker died fails |
| heartbeat_interval_s | W1_HEARTBEAT_INTERVAL_S | ``5`` |
| stale_after_s | W1_STALE_AFTER_S | ``60``; a running job without heartbeat this long is re-dispatched |
| reconcile_interval_s | W1_RECONCILE_INTERVAL_S | ``10`` |
| workers | W1_WORKERS | unset: one worker per visible GPU, or one CPU worker when none (``w1 serve``); ``0``: API only |
| broker_poll_interval_s | W1_BROKER_POLL_INTERVAL_S | ``0.1`` (filesystem:// polling) |
| fid_weights | W1_FID_WEIGHTS | unset: pytorch-fid's Inception weights in the worker's torch hub cache; the only way a job finds them (a job's own ``fid_weights`` is refused) |
| run_reconciler | W1_RUN_RECONCILER | ``true``: this API process stands for the reconciler's election (one of them runs it, service/server/leader.py); ``false``: it never does |
| api_workers | W1_API_WORKERS | ``1``: API processes ``w1 serve`` runs on its port (each with its own thread pool and event poller) |
| api_threads | W1_API_THREADS | ``24`` worker threads of the API (database work, upload checks); its database pool holds as many connections plus a margin (more threads only contend for the GIL) |
| max_requests_in_flight | W1_MAX_REQUESTS_IN_FLIGHT | ``1000``; beyond it requests answer 503 with ``Retry-After`` at once |
| auth_cache_s | W1_AUTH_CACHE_S | ``5``: an API key's check is remembered this long (a revoked key stops within it); 0: off |
| db_wait_s | W1_DB_WAIT_S | ``5``: longest wait for a database connection before answering 503 with ``Retry-After`` |
| redispatch_after_s | W1_REDISPATCH_AFTER_S | ``60``; a queued job unclaimed this long whose message is not in the broker is sent again |
| worker_devices | W1_WORKER_DEVICES | unset: ``cpu`` plus the local GPUs (filesystem broker), else any; e.g. ``cpu,cuda:0,cuda:1`` |

Limits, checked before anything is allocated (docs/configuration.md; beyond them: 413 or 422):

| setting | env | default |
|---|---|---|
| max_json_bytes | W1_MAX_JSON_BYTES | ``1048576`` (1 MiB): a larger JSON request body answers 413 |
| max_decoded_bytes | W1_MAX_DECODED_BYTES | ``4294967296`` (4 GiB): decoded size of one data set (arrays, images) |
| max_compression_ratio | W1_MAX_COMPRESSION_RATIO | ``100``: decoded / stored size of an archive (beyond 64 MiB decoded) |
| max_archive_members | W1_MAX_ARCHIVE_MEMBERS | ``300000`` files in one zip/tar/npz |
| max_image_pixels | W1_MAX_IMAGE_PIXELS | ``4194304`` (2048 x 2048): one image or generator output |
| max_latent_elements | W1_MAX_LATENT_ELEMENTS | ``1048576``: elements of one generator latent (at most 8 axes) |
| max_batch_size | W1_MAX_BATCH_SIZE | ``4096`` (option batch_size) |
| max_steps | W1_MAX_STEPS | ``1000000`` (option steps) |
| max_eval_samples | W1_MAX_EVAL_SAMPLES | ``1000000`` (options eval_samples, a generator's samples) |
| max_validation_samples | W1_MAX_VALIDATION_SAMPLES | ``100000`` (option validation_samples) |
| max_space_pixels | W1_MAX_SPACE_PIXELS | ``1048576`` (1024 x 1024): option space.size |
| max_batch_bytes | W1_MAX_BATCH_BYTES | ``1073741824`` (1 GiB): one float32 training batch (batch_size x C x H x W x 4) |
| max_critic_parameters | W1_MAX_CRITIC_PARAMETERS | ``100000000``: parameters of the critic (width, critic_options) |

A value that does not parse raises :class:`SettingsInvalid`, one line naming where it came from
(``W1_PORT``, a key of the W1_CONFIG file, or the command-line option that overrode it).
"""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)


class SettingsInvalid(ValueError):
    """A setting that does not parse or is out of range; the message is one line for the operator."""


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
    port: int = Field(8000, ge=1, le=65535)
    max_upload_bytes: int = 2 * 1024**3
    catalog: dict[str, CatalogEntry] = Field(default_factory=dict)
    allow_torchscript: bool = False
    job_time_limit_s: float = 6 * 3600
    max_queued_per_owner: int = 100
    max_attempts: int = 3
    heartbeat_interval_s: float = 5.0
    stale_after_s: float = 60.0
    reconcile_interval_s: float = 10.0
    workers: int | None = Field(None, ge=0)
    broker_poll_interval_s: float = 0.1
    run_reconciler: bool = True
    api_workers: int = Field(1, ge=1, le=64)
    fid_weights: str | None = None
    api_threads: int = Field(24, ge=1, le=1000)
    max_requests_in_flight: int = Field(1000, ge=1)
    db_wait_s: float = Field(5.0, gt=0)
    auth_cache_s: float = Field(5.0, ge=0)
    redispatch_after_s: float = 60.0
    worker_devices: str | None = None
    # limits (see the table above): every request is checked against them before allocating
    max_json_bytes: int = 1024**2
    max_decoded_bytes: int = 4 * 1024**3
    max_compression_ratio: float = 100.0
    max_archive_members: int = 300_000
    max_image_pixels: int = 2048 * 2048
    max_latent_elements: int = 1 << 20
    max_batch_size: int = 4096
    max_steps: int = 1_000_000
    max_eval_samples: int = 1_000_000
    max_validation_samples: int = 100_000
    max_space_pixels: int = 1024 * 1024
    max_batch_bytes: int = 1024**3
    max_critic_parameters: int = 100_000_000

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get("W1_CONFIG")
        if path:
            if not Path(path).is_file():
                raise SettingsInvalid(f"W1_CONFIG names {path!r}, which is not a file")
            if path.endswith(".toml"):
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            elif path.endswith((".yaml", ".yml")):
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            else:
                raise SettingsInvalid(f"W1_CONFIG={path!r}: use a .yaml, .yml or .toml file")
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


def _origin(field: str, overrides: dict) -> str:
    """Where a setting's value came from, as the operator wrote it: the command-line option that
    overrode it, its environment variable, else its key in the W1_CONFIG file."""
    if field in overrides:
        return "--" + field.replace("_", "-")
    env, config = f"W1_{field.upper()}", os.environ.get("W1_CONFIG")
    # the environment wins over the file; pydantic-settings reads variables case-insensitively
    if config and not any(k.upper() == env for k in os.environ):
        return f"{field!r} in {config}"
    return env


def get_settings(**overrides) -> Settings:
    """Fresh settings from the environment (and W1_CONFIG file); overrides win over both.

    Raises :class:`SettingsInvalid` (one line) instead of pydantic's multi-line report, so
    `w1 serve` can say which variable is wrong without a traceback."""
    config = os.environ.get("W1_CONFIG")
    try:
        s = Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            field, rest = str(e["loc"][0]), ".".join(str(p) for p in e["loc"][1:])
            what = "unknown setting" if e["type"] == "extra_forbidden" else e["msg"]
            got = "" if e["type"] in ("missing", "extra_forbidden") or rest else f" (got {e['input']!r})"
            problems.append(f"{_origin(field, overrides)}{': ' + rest if rest else ''}: {what}{got}")
        raise SettingsInvalid("; ".join(problems)) from None
    except SettingsError as exc:  # a nested value (the catalog) in the environment that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        if field is None or exc.__cause__ is None:
            raise SettingsInvalid(str(exc)) from None
        raise SettingsInvalid(f"W1_{field[1].upper()} is not valid JSON ({exc.__cause__})") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise SettingsInvalid(f"W1_CONFIG file {config} does not parse: {' '.join(str(exc).split())}") from None
    s.data_dir = s.data_dir.expanduser().resolve()
    return s
