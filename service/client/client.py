"""A small typed client for the w1 REST API v1 (docs/api.md).

Used by the `w1 submit|jobs|batch` commands and from training scripts::

    from service.client import W1Client
    with W1Client("http://gpu-box:8000", token="...") as w1:
        job = w1.submit_job("catalog:cifar10", "samples/epoch10.npz", options={"steps": 2000})
        job = w1.wait_job(job["id"])
        print(job["result"])

Every failure is a `W1Error` with a one-line message naming the server (or the local file) and
the problem, so callers can print it as is.
"""
from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from service.client import sources
from service.client.sources import LocalDataset, LocalGenerator
from service.client.transport import Progress, Transport, W1Error, retrying
from service.contracts import FINAL_STATUSES, GeneratorForm

DEFAULT_SERVER = "http://127.0.0.1:8000"
# Samples drawn from a generator when neither `generator:ID:N` nor options.eval_samples say.
DEFAULT_GENERATOR_SAMPLES = 6400

Job = dict[str, Any]
Source = dict[str, Any]


def parse_source(text: str) -> Source | LocalDataset | LocalGenerator:
    """A SOURCE object (`catalog:NAME`, `dataset:ID`, `generator:ID[:samples]`, `torchvision:NAME`),
    or a LocalDataset / LocalGenerator to upload first: every form `w1 estimate` accepts
    (service.client.sources)."""
    try:
        return sources.parse(str(text))
    except sources.SourceProblem as exc:
        raise W1Error(str(exc)) from None


class W1Client:
    """The v1 API over one httpx connection pool. Server and token default to W1_SERVER / W1_TOKEN."""

    def __init__(self, server: str | None = None, token: str | None = None, *,
                 timeout: float = 30.0, upload_timeout: float = 600.0, reconnect_s: float = 120.0,
                 busy_s: float = 60.0, on_upload: Callable[[str, int, int], None] | None = None):
        self.server = (server or os.environ.get("W1_SERVER") or DEFAULT_SERVER).rstrip("/")
        token = token if token is not None else os.environ.get("W1_TOKEN")
        self.upload_timeout = upload_timeout
        self.reconnect_s = reconnect_s  # how long waits ride out an unreachable server (restarts)
        self.on_upload = on_upload  # on_upload(name, bytes_sent, total) while a file is sent
        # busy_s: how long any request waits out a busy server (503, after its Retry-After)
        self._http = Transport(self.server, token, timeout, busy_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> W1Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs):
        return self._http.request(method, path, **kwargs)

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self._http.request(method, path, **kwargs).json()

    # -- operations ----------------------------------------------------------------------------

    def health(self) -> dict:
        return self._json("GET", "/healthz")

    def ready(self) -> dict:
        return self._json("GET", "/readyz")

    def catalog(self) -> list[dict]:
        return self._json("GET", "/v1/catalog")

    # -- sample sets and generators --------------------------------------------------------------

    def upload_dataset(self, path: str | Path, name: str | None = None, *, reuse: bool = True) -> dict:
        """Upload a sample file. With `reuse`, a dataset of the same sha256 already on the server is
        returned without sending the file (the server deduplicates by content anyway)."""
        path = Path(path)
        if reuse:
            digest = self._sha256(path)
            for item in self.list_datasets():
                if item.get("sha256") == digest:
                    return item
        return self._upload("/v1/datasets", path, {"name": name or path.name})

    def _sha256(self, path: Path) -> str:
        try:
            return sources.sha256_of(path)
        except OSError as exc:
            raise W1Error(f"{path}: cannot read ({exc.strerror})") from None

    def _upload(self, endpoint: str, path: Path, form: dict) -> dict:
        """POST a file as multipart, reporting progress to `on_upload(name, sent, total)`; errors name
        the file."""
        try:
            handle = Progress(path.open("rb"), path.name, self.on_upload)
        except OSError as exc:
            raise W1Error(f"{path}: cannot read ({exc.strerror})") from None
        with handle:
            try:
                return self._json("POST", endpoint, files={"file": (path.name, handle)},
                                  data=form, timeout=self.upload_timeout)
            except W1Error as exc:
                raise W1Error(f"{path}: upload refused: {exc}", exc.status) from None

    def list_datasets(self) -> list[dict]:
        data = self._json("GET", "/v1/datasets")
        return data["items"] if isinstance(data, dict) and "items" in data else data

    def get_dataset(self, dataset_id: str) -> dict:
        return self._json("GET", f"/v1/datasets/{dataset_id}")

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    def list_generators(self) -> list[dict]:
        data = self._json("GET", "/v1/generators")
        return data["items"] if isinstance(data, dict) and "items" in data else data

    def get_generator(self, generator_id: str) -> dict:
        return self._json("GET", f"/v1/generators/{generator_id}")

    def upload_generator(self, path: str | Path, latent_shape: str | tuple[int, ...],
                         latent_distribution: str = "normal",
                         output_range: str | tuple[float, float] = "-1,1", *,
                         name: str | None = None, reuse: bool = True) -> dict:
        """Upload an ONNX generator with its latent specification; with `reuse`, the server's
        generator of the same sha256 and specification is returned without sending the file."""
        path = Path(path)
        text = lambda v: v if isinstance(v, str) else ",".join(map(str, v))  # noqa: E731
        try:
            spec = GeneratorForm.parse({"latent_shape": text(latent_shape), "latent_distribution": latent_distribution,
                                        "output_range": text(output_range)})
        except ValueError as exc:
            raise W1Error(f"{path}: {exc}") from None
        if reuse:
            digest = self._sha256(path)
            for item in self.list_generators():
                if (item.get("sha256") == digest and tuple(item.get("latent_shape", ())) == spec.latent_shape
                        and item.get("latent_distribution") == spec.latent_distribution
                        and tuple(map(float, item.get("output_range", ()))) == spec.output_range):
                    return item
        form = spec.form()
        if name:
            form["name"] = name
        return self._upload("/v1/generators", path, form)

    def resolve_source(self, source: str | Path | Mapping[str, Any], *, samples: int | None = None) -> Source:
        """A SOURCE object for the API. Local samples (files, folders, builtin:) are uploaded unless
        the server already has them; an ONNX generator is uploaded with its latent spec and drawn
        `samples` times (default: DEFAULT_GENERATOR_SAMPLES)."""
        if isinstance(source, Mapping):
            return dict(source)
        parsed = parse_source(str(source))
        if isinstance(parsed, dict):
            if "generator" in parsed and "samples" not in parsed:
                parsed["samples"] = samples or DEFAULT_GENERATOR_SAMPLES
            return parsed
        if isinstance(parsed, LocalGenerator):
            try:
                latent = parsed.latent or sources.onnx_latent(parsed.path)
            except sources.SourceProblem as exc:
                raise W1Error(str(exc)) from None
            gen = self.upload_generator(parsed.path, latent, parsed.dist, parsed.output_range)
            return {"generator": gen["id"], "samples": samples or DEFAULT_GENERATOR_SAMPLES}
        with tempfile.TemporaryDirectory(prefix="w1-upload-") as tmp:
            try:
                path = sources.prepare(parsed, Path(tmp))
            except sources.SourceProblem as exc:
                raise W1Error(str(exc)) from None
            except OSError as exc:
                raise W1Error(f"{parsed.text}: cannot read ({exc.strerror or exc})") from None
            try:
                return {"dataset": self.upload_dataset(path, name=parsed.name)["id"]}
            except W1Error as exc:  # name the user's folder, not the archive written for it
                raise W1Error(str(exc).replace(str(path), parsed.text, 1), exc.status) from None

    # -- jobs ----------------------------------------------------------------------------------

    def submit_job(self, real: str | Path | Mapping, fake: str | Path | Mapping, *,
                   options: Mapping[str, Any] | None = None, label: str | None = None,
                   idempotency_key: str | None = None) -> Job:
        """Submit one estimate. A fresh Idempotency-Key makes a retried call return the same job."""
        samples = generator_samples(options)
        body: dict[str, Any] = {"real": self.resolve_source(real, samples=samples),
                                "fake": self.resolve_source(fake, samples=samples),
                                "options": dict(options or {})}
        if label is not None:
            body["label"] = label
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return self._json("POST", "/v1/jobs", json=body, headers=headers)

    def get_job(self, job_id: str) -> Job:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def list_jobs(self, *, status: str | None = None, batch_id: str | None = None,
                  label: str | None = None, limit: int | None = None,
                  cursor: str | None = None) -> dict:
        """One page: `{items, next_cursor}`, newest first."""
        params = {k: v for k, v in dict(status=status, batch_id=batch_id, label=label,
                                        limit=limit, cursor=cursor).items() if v is not None}
        return self._json("GET", "/v1/jobs", params=params)

    def iter_jobs(self, **filters) -> Iterator[Job]:
        """Every job matching the filters, following the cursor."""
        cursor = None
        while True:
            page = self.list_jobs(cursor=cursor, **filters)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel_job(self, job_id: str) -> Job:
        try:
            return self._json("POST", f"/v1/jobs/{job_id}/cancel")
        except W1Error as exc:
            if exc.status == 409:
                raise W1Error(f"{self.server}: job {job_id} has already finished, nothing to cancel",
                              409) from None
            raise

    def events(self, job_id: str, read_timeout: float = 60.0) -> Iterator[tuple[str, Any]]:
        """The job's Server-Sent Events as (event, data) pairs until the server ends the stream."""
        return self._http.events(f"/v1/jobs/{job_id}/events", read_timeout)

    def wait_job(self, job_id: str, *, on_update: Callable[[str, Any], None] | None = None,
                 timeout: float | None = None, poll_interval: float = 1.0,
                 use_events: bool = True) -> Job:
        """Block until the job is final and return it. Follows the SSE stream when the server offers
        one, otherwise (or when it breaks) polls, riding out a server restart of up to
        `reconnect_s`. `on_update(event, data)` sees `progress` events (the progress dict) and
        `status` events (the job)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        notify = on_update or (lambda event, data: None)
        if use_events:
            try:
                for event, data in self.events(job_id):
                    notify(event, data)
                    if event == "status" and isinstance(data, dict) \
                            and data.get("status") in FINAL_STATUSES:
                        return data
                    if deadline is not None and time.monotonic() > deadline:
                        break
            except W1Error as exc:
                if exc.status in (401, 403, 404):
                    raise
                # Streaming is a convenience: a proxy or server without SSE falls back to polling.
        while True:
            job = self._riding_out_restarts(self.get_job, job_id)
            notify("status", job)
            if job["status"] in FINAL_STATUSES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise W1Error(f"{self.server}: job {job_id} not finished after {timeout:g} s")
            time.sleep(poll_interval)

    def _riding_out_restarts(self, fetch, *args):
        """``fetch(*args)``, retried while the server is unreachable for up to ``reconnect_s``
        (a restart) or busy (503, after its Retry-After)."""
        return retrying(self._http.busy_s, self.reconnect_s)(fetch, *args)

    # -- batches -------------------------------------------------------------------------------

    def submit_batch(self, real: str | Path | Mapping, fakes: list[tuple[str, str | Path | Mapping]],
                     *, options: Mapping[str, Any] | None = None, mode: str = "independent",
                     steps: list[int | None] | None = None) -> dict:
        """Many fakes (label, source) against one real set; returns `{id, mode, jobs}`. `mode="series"`: the
        fakes are checkpoints in training order, run in that order with warm-started critics; `steps`: their
        training steps (the x axis of the series plot)."""
        samples = generator_samples(options)
        steps = list(steps) if steps is not None else [None] * len(fakes)
        body = {"real": self.resolve_source(real, samples=samples),
                "fakes": [{"label": label, "fake": self.resolve_source(src, samples=samples),
                           **({"step": step} if step is not None else {})}
                          for (label, src), step in zip(fakes, steps)],
                "options": dict(options or {}), "mode": mode}
        return self._json("POST", "/v1/batches", json=body)

    def cancel_batch(self, batch_id: str) -> dict:
        """Cancel the batch's unfinished jobs (a series stops; finished items keep their results)."""
        return self._json("POST", f"/v1/batches/{batch_id}/cancel")

    def get_batch(self, batch_id: str) -> dict:
        return self._json("GET", f"/v1/batches/{batch_id}")

    def wait_batch(self, batch_id: str, *, on_update: Callable[[dict], None] | None = None,
                   timeout: float | None = None, poll_interval: float = 1.0) -> dict:
        """Poll the batch until every job in it is final; returns the batch with its summary."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = self._riding_out_restarts(self.get_batch, batch_id)
            if on_update:
                on_update(batch)
            if all(job["status"] in FINAL_STATUSES for job in batch["jobs"]):
                return batch
            if deadline is not None and time.monotonic() > deadline:
                raise W1Error(f"{self.server}: batch {batch_id} not finished after {timeout:g} s")
            time.sleep(poll_interval)

    # -- artifacts -----------------------------------------------------------------------------

    def list_artifacts(self, job_id: str) -> list:
        data = self._json("GET", f"/v1/jobs/{job_id}/artifacts")
        return data["items"] if isinstance(data, dict) and "items" in data else data

    def download_artifact(self, job_id: str, name: str, dest: str | Path) -> Path:
        """Stream one artifact (e.g. `curve.json`, `critic.onnx`) to `dest` (a file or a folder)."""
        dest = Path(dest)
        return self._http.download(f"/v1/jobs/{job_id}/artifacts/{name}", dest / name if dest.is_dir() else dest,
                                   self.upload_timeout)

    def get_series(self, batch_id: str) -> dict | None:
        """A series batch's SeriesResult so far (its series.json), or None before its first item finished."""
        try:
            return self._json("GET", f"/v1/batches/{batch_id}/artifacts/series.json")
        except W1Error as exc:
            if exc.status == 404:
                return None
            raise

    def download_batch_artifact(self, batch_id: str, name: str, dest: str | Path) -> Path:
        """A series' artifact (`series.json`, `series.csv`, `series.png`) to `dest` (a file or a folder)."""
        dest = Path(dest)
        return self._http.download(f"/v1/batches/{batch_id}/artifacts/{name}", dest / name if dest.is_dir() else dest,
                                   self.upload_timeout)


def generator_samples(options: Mapping[str, Any] | None) -> int | None:
    """How many samples a generator source draws: options' eval_samples when set."""
    value = (options or {}).get("eval_samples")
    return int(value) if isinstance(value, int) and value > 0 else None
