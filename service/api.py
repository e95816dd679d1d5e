"""The REST API (docs/api.md). It stores requests and answers questions; it never trains.

``create_app(settings)`` builds the app: it migrates the database, and (unless disabled) runs the
reconciler in a background thread. Handlers are plain functions over a SQLAlchemy session; every
query is scoped to the caller's owner, so other owners' objects answer 404.
"""

import asyncio
import hashlib
import json
import logging
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import auth, metrics, storage
from service.db import (
    ACTIVE, CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, SUCCEEDED, Batch, Dataset, Generator, Job,
    as_utc, make_engine, make_sessionmaker, migrate, now,
)
from service.queue import broker_reachable, dispatch, make_celery
from service.schemas import (
    ArtifactList, BatchCreate, BatchOut, CatalogItem, DatasetOut, GeneratorOut, JobCreate, JobList,
    JobOut, Source, SummaryRow,
)
from service.settings import Settings, get_settings

log = logging.getLogger("w1.api")
ARTIFACTS = {"curve.json": "application/json", "curve.png": "image/png",
             "critic.onnx": "application/octet-stream", "critic.pt": "application/octet-stream"}


# -- serialisation ---------------------------------------------------------------------------

def job_out(job: Job) -> dict:
    return JobOut(
        id=job.id, status=job.status, label=job.label, batch_id=job.batch_id, spec=job.spec,
        attempts=job.attempts, progress=job.progress, result=job.result, error=job.error,
        created_at=as_utc(job.created_at), started_at=as_utc(job.started_at),
        finished_at=as_utc(job.finished_at),
    ).model_dump(mode="json")


def dataset_out(d: Dataset) -> dict:
    return DatasetOut(id=d.id, name=d.name, sha256=d.sha256, format=d.format, count=d.count,
                      shape=d.shape, size_bytes=d.size_bytes,
                      created_at=as_utc(d.created_at)).model_dump(mode="json")


def generator_out(g: Generator) -> dict:
    return GeneratorOut(id=g.id, name=g.name, format=g.format, latent_shape=g.latent_shape,
                        latent_distribution=g.latent_distribution, output_range=g.output_range,
                        output_shape=g.output_shape, sha256=g.sha256,
                        created_at=as_utc(g.created_at)).model_dump(mode="json")


def batch_status(jobs: list[Job]) -> str:
    states = {j.status for j in jobs}
    if states & set(ACTIVE):
        return RUNNING if (states - {QUEUED}) else QUEUED
    if states == {SUCCEEDED}:
        return SUCCEEDED
    if states == {CANCELLED}:
        return CANCELLED
    return FAILED


def summary_row(job: Job) -> dict:
    r = job.result or {}
    ci = r.get("ci") or [None, None]
    return SummaryRow(label=job.label, status=job.status, estimate=r.get("estimate"), ci_low=ci[0],
                      ci_high=ci[1], certified_lower_bound=r.get("certified_lower_bound"),
                      lipschitz_bound=r.get("lipschitz_bound")).model_dump(mode="json")


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        msg = err.get("msg", "invalid")
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx", {}).get("error", "")
            msg = f"malformed JSON body ({ctx})" if ctx else "malformed JSON body"
            loc = ""
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


# -- the app ---------------------------------------------------------------------------------

def create_app(settings: Settings | None = None, on_shutdown=()) -> FastAPI:
    """The app; ``on_shutdown`` callables run when the server stops (``w1 serve`` stops its workers)."""
    settings = settings or get_settings()
    settings.ensure_dirs()
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    Sessions = make_sessionmaker(engine)
    celery = make_celery(settings)
    registry = metrics.Metrics(Sessions)
    catalog_cache: dict[str, dict] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = threading.Event()
        thread = None
        if settings.run_reconciler:
            from service.reconciler import run_forever

            thread = threading.Thread(target=run_forever, args=(settings, Sessions, celery, stop),
                                      name="w1-reconciler", daemon=True)
            thread.start()
        yield
        stop.set()
        for hook in on_shutdown:
            hook()
        if thread is not None:
            thread.join(timeout=5)
        engine.dispose()

    app = FastAPI(title="w1 job service", version="1",
                  description="Wasserstein-1 estimates with certified 1-Lipschitz critics, as jobs.",
                  lifespan=lifespan)
    app.state.settings = settings

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": validation_message(exc)}, status_code=422)

    @app.middleware("http")
    async def _count(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        registry.request(request.method, getattr(route, "path", "unmatched"), response.status_code)
        return response

    def session():
        with Sessions() as s:
            yield s

    def owner(request: Request, s: Annotated[Session, Depends(session)]) -> str:
        return auth.authenticate(request, s)

    DB = Annotated[Session, Depends(session)]
    Owner = Annotated[str, Depends(owner)]

    def owned(s: Session, model, object_id: str, who: str):
        """The owner's object with this id; 404 for a missing id and for another owner's object alike."""
        obj = s.scalar(select(model).where(model.id == object_id, model.owner == who))
        if obj is None:
            raise HTTPException(404, f"no {model.__name__.lower()} {object_id!r}")
        return obj

    def get_job(s: Session, who: str, job_id: str) -> Job:
        return owned(s, Job, job_id, who)

    # -- sources -----------------------------------------------------------------------------

    def catalog_info(name: str) -> dict:
        """Count and shape of a catalog entry, opened once and remembered."""
        if name not in catalog_cache:
            from training.sources import open_source

            entry = settings.catalog[name]
            try:
                src = open_source(entry.source)
                catalog_cache[name] = {"count": len(src) if not src.is_generator else None,
                                       "shape": list(src.shape)}
            except Exception as exc:  # a misconfigured entry is reported, not fatal
                return {"count": None, "shape": None, "error": str(exc)}
        return catalog_cache[name]

    def source_shape(s: Session, who: str, ref: Source, side: str) -> tuple[int, int, int]:
        if ref.dataset is not None:
            d = s.scalar(select(Dataset).where(Dataset.id == ref.dataset, Dataset.owner == who))
            if d is None:
                raise HTTPException(422, f"{side}: no dataset {ref.dataset!r}")
            return tuple(d.shape)
        if ref.generator is not None:
            g = s.scalar(select(Generator).where(Generator.id == ref.generator, Generator.owner == who))
            if g is None:
                raise HTTPException(422, f"{side}: no generator {ref.generator!r}")
            if ref.samples is None:
                raise HTTPException(422, f"{side}: a generator source needs 'samples' (how many to draw)")
            return tuple(g.output_shape)
        if ref.catalog not in settings.catalog:
            known = ", ".join(sorted(settings.catalog)) or "none configured"
            raise HTTPException(422, f"{side}: unknown catalog name {ref.catalog!r} (known: {known})")
        info = catalog_info(ref.catalog)
        if info.get("shape") is None:
            raise HTTPException(422, f"{side}: catalog entry {ref.catalog!r} cannot be opened: {info.get('error')}")
        return tuple(info["shape"])

    def build_spec(s: Session, who: str, real: Source, fake: Source, options) -> dict:
        from training.space import SpaceMismatch

        shapes = source_shape(s, who, real, "real"), source_shape(s, who, fake, "fake")
        try:
            options.space.resolve(*shapes)
        except SpaceMismatch as exc:
            raise HTTPException(422, f"real and fake are in different spaces: {exc}") from None
        drawn = [ref.samples for ref in (real, fake) if ref.generator is not None]
        if drawn and options.eval_samples is None:  # a generator's `samples`: its held-out draw
            options = options.model_copy(update={"eval_samples": max(drawn)})
        return {"real": real.model_dump(exclude_none=True), "fake": fake.model_dump(exclude_none=True),
                "options": options.resolved().model_dump(mode="json")}

    def check_quota(s: Session, who: str, adding: int) -> None:
        active = s.scalar(select(func.count()).select_from(Job)
                          .where(Job.owner == who, Job.status.in_(ACTIVE)))
        if active + adding > settings.max_queued_per_owner:
            raise HTTPException(429, f"too many unfinished jobs: {active} queued or running, limit "
                                     f"{settings.max_queued_per_owner} per owner; wait for some to finish")

    def send(s: Session, jobs: list[Job]) -> None:
        """Dispatch after commit; dispatched_at marks success (the reconciler resends the rest)."""
        for job in jobs:
            try:
                dispatch(celery, job.id)
            except Exception as exc:  # broker down: the job is stored; the reconciler sends it later
                log.warning("dispatch of %s failed (%s); the reconciler will retry", job.id, exc)
                continue
            s.execute(update(Job).where(Job.id == job.id, Job.status == QUEUED).values(dispatched_at=now()))
        s.commit()
        for job in jobs:
            log.info("job %s accepted%s", job.id, f" ({job.label})" if job.label else "")
        registry.submitted.inc(len(jobs))

    # -- datasets ----------------------------------------------------------------------------

    @app.post("/v1/datasets", status_code=201, tags=["datasets"],
              openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["file"],
                  "properties": {"file": {"type": "string", "format": "binary"},
                                 "name": {"type": "string"}}}}}, "required": True}})
    async def upload_dataset(request: Request, response: Response, who: Owner) -> dict:
        """Upload a sample set (.npz/.npy arrays, or a zip/tar of PNG/JPEG images)."""
        up = await storage.receive_upload(request, settings.data_dir / "tmp", settings.max_upload_bytes)
        try:
            return await run_in_threadpool(register_dataset, up, who, response)
        finally:
            up.discard()

    def register_dataset(up: storage.Upload, who: str, response: Response) -> dict:
        suffix = storage.suffix_of(up.filename, storage.DATASET_SUFFIXES)
        name = up.fields.get("name") or up.filename
        with Sessions() as s:
            existing = s.scalar(select(Dataset).where(Dataset.owner == who, Dataset.sha256 == up.sha256))
            if existing is not None:
                response.status_code = 200
                return dataset_out(existing)
        storage.check_archive(up.path, suffix)
        from training.sources import SourceError, SourceSpec, open_source

        checked = up.path.with_name(up.path.name + suffix)  # open_source goes by the suffix
        up.path.rename(checked)
        up.path = checked
        try:
            src = open_source(SourceSpec(kind="file", path=str(checked)))
            count, shape = len(src), list(src.shape)
        except SourceError as exc:
            raise HTTPException(422, f"{up.filename}: {exc}".replace(str(checked), up.filename).replace(checked.name, up.filename)) from None
        except Exception as exc:
            raise HTTPException(422, f"{up.filename}: cannot be read as a sample set: {exc}") from None
        path = storage.store(up, settings.uploads_dir, suffix)
        with Sessions() as s:
            d = Dataset(owner=who, name=name[:300], sha256=up.sha256, format=suffix.lstrip("."),
                        count=count, shape=shape, size_bytes=up.size, path=str(path))
            s.add(d)
            try:
                s.commit()
            except IntegrityError:  # the same content uploaded concurrently
                s.rollback()
                response.status_code = 200
                d = s.scalar(select(Dataset).where(Dataset.owner == who, Dataset.sha256 == up.sha256))
            registry.uploaded.inc(up.size)
            return dataset_out(d)

    @app.get("/v1/datasets", tags=["datasets"])
    def list_datasets(s: DB, who: Owner) -> list[DatasetOut]:
        return [dataset_out(d) for d in s.scalars(select(Dataset).where(Dataset.owner == who)
                                                  .order_by(Dataset.created_at.desc()))]

    @app.get("/v1/datasets/{dataset_id}", tags=["datasets"])
    def get_dataset(dataset_id: str, s: DB, who: Owner) -> DatasetOut:
        d = owned(s, Dataset, dataset_id, who)
        return dataset_out(d)

    @app.delete("/v1/datasets/{dataset_id}", status_code=204, tags=["datasets"])
    def delete_dataset(dataset_id: str, s: DB, who: Owner) -> Response:
        d = owned(s, Dataset, dataset_id, who)
        active = s.scalars(select(Job).where(Job.owner == who, Job.status.in_(ACTIVE)))
        users = [j.id for j in active if dataset_id in (j.spec["real"].get("dataset"), j.spec["fake"].get("dataset"))]
        if users:
            raise HTTPException(409, f"dataset {dataset_id!r} is used by unfinished job(s) {', '.join(users[:5])}")
        path = d.path
        s.delete(d)
        s.commit()
        if s.scalar(select(func.count()).select_from(Dataset).where(Dataset.path == path)) == 0:
            Path(path).unlink(missing_ok=True)
        return Response(status_code=204)

    # -- generators --------------------------------------------------------------------------

    @app.post("/v1/generators", status_code=201, tags=["generators"],
              openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["file", "latent_shape"],
                  "properties": {"file": {"type": "string", "format": "binary"},
                                 "name": {"type": "string"}, "latent_shape": {"type": "string"},
                                 "latent_distribution": {"type": "string", "enum": ["normal", "uniform"]},
                                 "output_range": {"type": "string"}}}}}, "required": True}})
    async def upload_generator(request: Request, response: Response, who: Owner) -> dict:
        """Upload a generator: ONNX (TorchScript only when the operator allows it)."""
        up = await storage.receive_upload(request, settings.data_dir / "tmp", settings.max_upload_bytes)
        try:
            return await run_in_threadpool(register_generator, up, who, response)
        finally:
            up.discard()

    def parse_numbers(text_: str, what: str, cast):
        try:
            values = [cast(p) for p in text_.replace(" ", "").split(",") if p]
        except ValueError:
            raise HTTPException(422, f"{what}: expected comma-separated numbers, got {text_!r}") from None
        if not values:
            raise HTTPException(422, f"{what} is required (e.g. '62' or '100,1,1')")
        return values

    def register_generator(up: storage.Upload, who: str, response: Response) -> dict:
        suffix = storage.suffix_of(up.filename, storage.GENERATOR_SUFFIXES)
        fmt = storage.GENERATOR_SUFFIXES[suffix]
        if fmt == "torchscript" and not settings.allow_torchscript:
            raise HTTPException(422, "TorchScript generators are disabled on this server "
                                     "(W1_ALLOW_TORCHSCRIPT); upload an ONNX model")
        latent = parse_numbers(up.fields.get("latent_shape", ""), "latent_shape", int)
        dist = up.fields.get("latent_distribution") or "normal"
        if dist not in ("normal", "uniform"):
            raise HTTPException(422, f"latent_distribution must be 'normal' or 'uniform', got {dist!r}")
        out_range = parse_numbers(up.fields.get("output_range") or "-1,1", "output_range", float)
        if len(out_range) != 2 or not out_range[0] < out_range[1]:
            raise HTTPException(422, f"output_range must be 'low,high' with low < high, got {out_range}")
        latent_key, range_key = ",".join(map(str, latent)), ",".join(map(str, out_range))
        with Sessions() as s:
            existing = s.scalar(select(Generator).where(
                Generator.owner == who, Generator.sha256 == up.sha256, Generator.latent_shape_key == latent_key,
                Generator.latent_distribution == dist, Generator.output_range_key == range_key))
            if existing is not None:
                response.status_code = 200
                return generator_out(existing)
        from training.sources import SourceError, SourceSpec, open_source

        checked = up.path.with_name(up.path.name + suffix)
        up.path.rename(checked)
        up.path = checked
        try:
            spec = SourceSpec(kind=fmt, path=str(checked), latent=tuple(latent), dist=dist,
                              output_range=tuple(out_range))
            src = open_source(spec, allow_torchscript=settings.allow_torchscript)
            out_shape = list(src.shape)
        except (SourceError, ValueError) as exc:
            raise HTTPException(422, f"{up.filename}: {exc}".replace(str(checked), up.filename).replace(checked.name, up.filename)) from None
        except Exception as exc:
            raise HTTPException(422, f"{up.filename}: cannot be run as a generator: {exc}") from None
        path = storage.store(up, settings.uploads_dir, suffix)
        with Sessions() as s:
            g = Generator(owner=who, name=(up.fields.get("name") or up.filename)[:300], format=fmt,
                          latent_shape=latent, latent_shape_key=latent_key, latent_distribution=dist,
                          output_range=out_range, output_range_key=range_key, output_shape=out_shape,
                          sha256=up.sha256, size_bytes=up.size, path=str(path))
            s.add(g)
            s.commit()
            return generator_out(g)

    @app.get("/v1/generators", tags=["generators"])
    def list_generators(s: DB, who: Owner) -> list[GeneratorOut]:
        return [generator_out(g) for g in s.scalars(select(Generator).where(Generator.owner == who)
                                                    .order_by(Generator.created_at.desc()))]

    @app.get("/v1/generators/{generator_id}", tags=["generators"])
    def get_generator(generator_id: str, s: DB, who: Owner) -> GeneratorOut:
        g = owned(s, Generator, generator_id, who)
        return generator_out(g)

    @app.get("/v1/catalog", tags=["datasets"])
    def catalog(who: Owner) -> list[CatalogItem]:
        items = []
        for name, entry in sorted(settings.catalog.items()):
            info = catalog_info(name)
            items.append(CatalogItem(name=name, description=entry.description, count=info.get("count"),
                                     shape=info.get("shape")))
        return items

    # -- jobs --------------------------------------------------------------------------------

    @app.post("/v1/jobs", status_code=202, tags=["jobs"])
    def submit_job(body: JobCreate, response: Response, s: DB, who: Owner,
                   idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> JobOut:
        """Submit a job: 202 + Location. Same Idempotency-Key and body: the same job (200)."""
        body_hash = hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
        if idempotency_key:
            prior = s.scalar(select(Job).where(Job.owner == who, Job.idempotency_key == idempotency_key))
            if prior is not None:
                return replay(prior, body_hash, response)
        spec = build_spec(s, who, body.real, body.fake, body.options)
        check_quota(s, who, 1)
        job = Job(owner=who, label=body.label, spec=spec, idempotency_key=idempotency_key or None,
                  body_hash=body_hash)
        s.add(job)
        try:
            s.commit()
        except IntegrityError:  # a concurrent request with the same key won
            s.rollback()
            prior = s.scalar(select(Job).where(Job.owner == who, Job.idempotency_key == idempotency_key))
            return replay(prior, body_hash, response)
        send(s, [job])
        response.headers["Location"] = f"/v1/jobs/{job.id}"
        return job_out(job)

    def replay(prior: Job, body_hash: str, response: Response) -> dict:
        if prior.body_hash != body_hash:
            raise HTTPException(422, "Idempotency-Key was already used with a different request body")
        response.status_code = 200
        response.headers["Location"] = f"/v1/jobs/{prior.id}"
        return job_out(prior)

    @app.get("/v1/jobs", tags=["jobs"])
    def list_jobs(s: DB, who: Owner, status: str | None = None, batch_id: str | None = None,
                  label: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                  cursor: str | None = None) -> JobList:
        """Jobs, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
        q = select(Job).where(Job.owner == who)
        if status:
            wanted = status.split(",")
            bad = [w for w in wanted if w not in (*ACTIVE, *FINISHED)]
            if bad:
                raise HTTPException(422, f"unknown status {bad[0]!r}; use one of {', '.join((*ACTIVE, *FINISHED))}")
            q = q.where(Job.status.in_(wanted))
        if batch_id:
            q = q.where(Job.batch_id == batch_id)
        if label:
            q = q.where(Job.label == label)
        if cursor:
            if not cursor.isdigit():
                raise HTTPException(422, f"invalid cursor {cursor!r}: pass back a next_cursor value")
            q = q.where(Job.seq < int(cursor))
        rows = list(s.scalars(q.order_by(Job.seq.desc()).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return {"items": [job_out(j) for j in rows], "next_cursor": str(rows[-1].seq) if more else None}

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def read_job(job_id: str, s: DB, who: Owner) -> JobOut:
        return job_out(get_job(s, who, job_id))

    @app.post("/v1/jobs/{job_id}/cancel", status_code=202, tags=["jobs"])
    def cancel_job(job_id: str, s: DB, who: Owner) -> JobOut:
        """Best effort: a queued job is cancelled at once, a running one within a few steps."""
        job = get_job(s, who, job_id)
        if job.status in FINISHED:
            raise HTTPException(409, f"job {job_id} already finished ({job.status})")
        s.execute(update(Job).where(Job.id == job.id, Job.status == QUEUED)
                  .values(status=CANCELLED, cancel_requested=True, finished_at=now(), error="cancelled"))
        s.execute(update(Job).where(Job.id == job.id, Job.status == RUNNING).values(cancel_requested=True))
        s.commit()
        s.refresh(job)
        return job_out(job)

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"],
             responses={200: {"content": {"text/event-stream": {}}}})
    async def job_events(job_id: str, request: Request, who: Owner) -> StreamingResponse:
        """Server-Sent Events: ``progress`` while it runs, ``status`` on every change; ends when done."""
        def load():
            with Sessions() as s:
                return job_out(get_job(s, who, job_id))

        first = await run_in_threadpool(load)

        async def stream():
            last_status, last_progress, job = None, None, first
            while True:
                if job["progress"] is not None and job["progress"] != last_progress:
                    last_progress = job["progress"]
                    yield f"event: progress\ndata: {json.dumps(job['progress'])}\n\n"
                if job["status"] != last_status:  # after progress: the final status ends the stream
                    last_status = job["status"]
                    yield f"event: status\ndata: {json.dumps(job)}\n\n"
                if job["status"] in FINISHED or await request.is_disconnected():
                    return
                await asyncio.sleep(0.5)
                job = await run_in_threadpool(load)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/jobs/{job_id}/artifacts", tags=["jobs"])
    def list_artifacts(job_id: str, s: DB, who: Owner) -> ArtifactList:
        job = get_job(s, who, job_id)
        folder = settings.artifacts_dir(job.id, job.fence)
        return {"items": [n for n in ARTIFACTS if (folder / n).is_file()]}

    @app.get("/v1/jobs/{job_id}/artifacts/{name}", tags=["jobs"])
    def get_artifact(job_id: str, name: str, s: DB, who: Owner) -> FileResponse:
        job = get_job(s, who, job_id)
        if name not in ARTIFACTS:
            raise HTTPException(404, f"no artifact {name!r}; artifacts are {', '.join(ARTIFACTS)}")
        path = settings.artifacts_dir(job.id, job.fence) / name
        if not path.is_file():
            raise HTTPException(404, f"job {job.id} has no {name} (status {job.status})")
        return FileResponse(path, media_type=ARTIFACTS[name], filename=name)

    # -- batches -----------------------------------------------------------------------------

    @app.post("/v1/batches", status_code=202, tags=["batches"])
    def submit_batch(body: BatchCreate, response: Response, s: DB, who: Owner) -> dict:
        """Many fakes against one real set (e.g. checkpoints of one model): one job each."""
        specs = [(f.label, build_spec(s, who, body.real, f.fake, body.options)) for f in body.fakes]
        check_quota(s, who, len(specs))
        batch = Batch(owner=who)
        s.add(batch)
        s.flush()
        jobs = [Job(owner=who, label=label, spec=spec, batch_id=batch.id) for label, spec in specs]
        s.add_all(jobs)
        s.commit()
        send(s, jobs)
        response.headers["Location"] = f"/v1/batches/{batch.id}"
        return {"id": batch.id, "jobs": [job_out(j) for j in jobs]}

    @app.get("/v1/batches/{batch_id}", tags=["batches"])
    def read_batch(batch_id: str, s: DB, who: Owner) -> BatchOut:
        batch = owned(s, Batch, batch_id, who)
        jobs = list(s.scalars(select(Job).where(Job.batch_id == batch.id).order_by(Job.seq)))
        return {"id": batch.id, "status": batch_status(jobs), "jobs": [job_out(j) for j in jobs],
                "summary": [summary_row(j) for j in jobs]}

    # -- operations --------------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz(s: DB) -> JSONResponse:
        problems = []
        try:
            s.execute(text("SELECT 1"))
        except Exception as exc:
            problems.append(f"database: {exc}")
        if not broker_reachable(celery):
            problems.append("broker unreachable")
        if problems:
            return JSONResponse({"status": "unavailable", "detail": "; ".join(problems)}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def prometheus() -> Response:
        body, ctype = registry.render()
        return Response(body, media_type=ctype)

    return app
