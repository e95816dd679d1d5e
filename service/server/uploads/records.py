"""The records of uploads (datasets, generators): the register-and-store flow both upload routes
share, and every query their routes need, so no route touches the database.

Register: this owner's record of the same content answers at once (200); otherwise the file is
checked as the worker will open it, stored by content and recorded (201). A record that cannot be
written leaves no stored file behind; a concurrent identical upload gets the record that won.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request

from service.contracts import GeneratorForm
from service.server.db import ACTIVE, Dataset, Generator, Job
from service.server.domain import Context, owned
from service.server.errors import Conflict, Invalid
from service.server.uploads.receive import Upload, receive_upload
from service.server.uploads.sizes import check_latent
from service.server.uploads.store import GENERATOR_SUFFIXES, address, store, suffix_of, with_suffix
from service.server.uploads.validate import open_dataset, open_generator
from training.sources.formats import UPLOAD_SUFFIXES

Register = Callable[[Context, Upload, str], tuple[object, bool]]


async def accept(request: Request, ctx: Context, who: str, register: Register) -> tuple[object, bool]:
    """An upload route's whole flow: receive the body, then check, store and record the file in a
    worker thread. Returns (record, created); the temporary file never outlives the request."""
    settings = ctx.settings
    up = await receive_upload(request, settings.data_dir / "tmp", settings.max_upload_bytes)
    try:
        return await run_in_threadpool(register, ctx, up, who)
    finally:
        up.discard()


MAX_NAME = 300  # characters of a dataset's or generator's name, as of a job's label (service.contracts)


def upload_name(up: Upload) -> str:
    """The name given in the form (refused when longer than MAX_NAME: it would be stored cut), else the
    file's name (cut to MAX_NAME)."""
    name = up.fields.get("name")
    if name and len(name) > MAX_NAME:
        raise Invalid(f"name is {len(name)} characters long; at most {MAX_NAME}")
    return (name or up.filename)[:MAX_NAME]


def register_dataset(ctx: Context, up: Upload, who: str) -> tuple[Dataset, bool]:
    """A sample set: its count and shape read as the worker will read them."""
    suffix = suffix_of(up.filename, UPLOAD_SUFFIXES)
    name = upload_name(up)

    def record(path: Path) -> Dataset:
        count, shape = open_dataset(up.path, suffix, up.filename, ctx.settings)  # limits first, then values
        return Dataset(owner=who, name=name, sha256=up.sha256,
                       format=suffix.lstrip("."), count=count, shape=shape, size_bytes=up.size, path=str(path))

    return _register(ctx, up, who, Dataset, suffix, [Dataset.sha256 == up.sha256], record)


def register_generator(ctx: Context, up: Upload, who: str) -> tuple[Generator, bool]:
    """A generator with its latent specification: run once on a batch of two (ONNX; TorchScript
    only when the operator allows it)."""
    settings = ctx.settings
    suffix = suffix_of(up.filename, GENERATOR_SUFFIXES)
    name = upload_name(up)
    fmt = GENERATOR_SUFFIXES[suffix]
    if fmt == "torchscript" and not settings.allow_torchscript:
        raise Invalid("TorchScript generators are disabled on this server (W1_ALLOW_TORCHSCRIPT); upload an ONNX model")
    try:
        form = GeneratorForm.parse(up.fields)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    latent, dist, out_range = list(form.latent_shape), form.latent_distribution, list(form.output_range)
    check_latent(latent, settings)
    latent_key, range_key = ",".join(map(str, latent)), ",".join(map(str, out_range))

    def record(path: Path) -> Generator:
        out_shape = open_generator(up.path, fmt, latent, dist, out_range, up.filename, settings)
        return Generator(owner=who, name=name, format=fmt,
                         latent_shape=latent, latent_shape_key=latent_key, latent_distribution=dist,
                         output_range=out_range, output_range_key=range_key, output_shape=out_shape,
                         sha256=up.sha256, size_bytes=up.size, path=str(path))

    same = [Generator.sha256 == up.sha256, Generator.latent_shape_key == latent_key,
            Generator.latent_distribution == dist, Generator.output_range_key == range_key]
    return _register(ctx, up, who, Generator, suffix, same, record)


def _register(ctx: Context, up: Upload, who: str, model, suffix: str, same: list,
              record: Callable[[Path], object]) -> tuple[object, bool]:
    """The shared flow (see the module): ``same`` selects this owner's record of the same content;
    ``record(stored_path)`` checks the upload (at ``up.path``) and builds the new record."""
    def existing(s):
        return s.scalar(select(model).where(model.owner == who, *same))

    with ctx.sessions() as s:
        prior = existing(s)
    if prior is not None:
        return prior, False
    with_suffix(up, suffix)
    row = record(address(ctx.settings.uploads_dir, up, suffix))  # checks the received file; nothing stored yet
    path = store(up, ctx.settings.uploads_dir, suffix)
    with ctx.sessions() as s:
        s.add(row)
        try:
            s.commit()
        except IntegrityError:  # the same content uploaded concurrently: that record answers
            s.rollback()
            prior = existing(s)
            if prior is None:
                release(s, model, path)
                raise
            return prior, False
        except BaseException:  # not recorded: the stored file must not outlive the failure
            s.rollback()
            release(s, model, path)
            raise
    if ctx.metrics is not None:
        ctx.metrics.uploaded.inc(up.size)
    return row, True


def release(session, model, path: Path | str) -> None:
    """Delete a stored file that no record of ``model`` names (after a failed insert or a delete)."""
    try:
        if session.scalar(select(func.count()).select_from(model).where(model.path == str(path))) == 0:
            Path(path).unlink(missing_ok=True)
    except Exception:  # the database is what failed: keep the file rather than guess
        pass


# -- the queries of the routes -------------------------------------------------------------------

def list_owned(ctx: Context, model, who: str) -> list:
    """This owner's records, newest first."""
    with ctx.sessions() as s:
        return list(s.scalars(select(model).where(model.owner == who).order_by(model.created_at.desc())))


def get_owned(ctx: Context, model, object_id: str, who: str):
    with ctx.sessions() as s:
        return owned(s, model, object_id, who)


def delete_dataset(ctx: Context, who: str, dataset_id: str) -> None:
    """Delete a set (and its file once no other owner's record shares it); 409 while a queued or
    running job uses it."""
    with ctx.sessions() as s:
        d = owned(s, Dataset, dataset_id, who)
        active = s.scalars(select(Job).where(Job.owner == who, Job.status.in_(ACTIVE)))
        users = [j.id for j in active if dataset_id in (j.spec["real"].get("dataset"), j.spec["fake"].get("dataset"))]
        if users:
            raise Conflict(f"dataset {dataset_id!r} is used by unfinished job(s) {', '.join(users[:5])}")
        path = d.path
        s.delete(d)
        s.commit()
        release(s, Dataset, path)
