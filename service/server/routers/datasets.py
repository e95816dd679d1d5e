"""Sample sets: upload (streamed, validated, content-hashed, deduplicated per owner), list, read, delete."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from service.server import storage
from service.server.db import ACTIVE, Dataset, Job
from service.server.deps import CtxDep, OwnerDep
from service.server.domain import Context, Problem, owned
from service.contracts import DatasetOut
from service.server.openapi import errors, links
from service.server.views import dataset_out, respond
from training.sources.formats import UPLOAD_SUFFIXES

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=errors(401, 422, 503))

UPLOAD_BODY = {"requestBody": {"content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary"}, "name": {"type": "string"}}}}},
    "required": True}}


@router.post("", status_code=201, openapi_extra=UPLOAD_BODY, name="upload", responses={
    201: {"links": links("dataset_id", "datasets_get", "datasets_delete")},
    200: {"model": DatasetOut, "description": "This owner uploaded the same content before: that set"},
    **errors(413, 422)})
async def upload_dataset(request: Request, response: Response, ctx: CtxDep, who: OwnerDep) -> DatasetOut:
    """Upload a sample set (.npz/.npy arrays, or a zip/tar of PNG/JPEG images); 200 with the
    existing set when this owner uploaded the same content before."""
    settings = ctx.settings
    up = await storage.receive_upload(request, settings.data_dir / "tmp", settings.max_upload_bytes)
    try:
        return await run_in_threadpool(register_dataset, ctx, up, who, response)
    finally:
        up.discard()


def register_dataset(ctx: Context, up: storage.Upload, who: str, response: Response) -> DatasetOut:
    """Check a received upload, store it by content and record it (in a worker thread)."""
    settings = ctx.settings
    suffix = storage.suffix_of(up.filename, UPLOAD_SUFFIXES)
    name = up.fields.get("name") or up.filename
    with ctx.sessions() as s:
        existing = s.scalar(select(Dataset).where(Dataset.owner == who, Dataset.sha256 == up.sha256))
    if existing is not None:
        response.status_code = 200
        return dataset_out(existing)
    checked = up.path.with_name(up.path.name + suffix)  # open_source goes by the suffix
    up.path.rename(checked)
    up.path = checked
    count, shape = storage.open_dataset(checked, suffix, up.filename, settings)  # limits first, then values
    path = storage.store(up, settings.uploads_dir, suffix)
    with ctx.sessions() as s:
        d = Dataset(owner=who, name=name[:300], sha256=up.sha256, format=suffix.lstrip("."),
                    count=count, shape=shape, size_bytes=up.size, path=str(path))
        s.add(d)
        try:
            s.commit()
        except IntegrityError:  # the same content uploaded concurrently
            s.rollback()
            response.status_code = 200
            d = s.scalar(select(Dataset).where(Dataset.owner == who, Dataset.sha256 == up.sha256))
        except BaseException:  # not recorded: the stored file must not outlive the failure
            s.rollback()
            storage.drop_unreferenced(s, Dataset, path)
            raise
    if ctx.metrics is not None:
        ctx.metrics.uploaded.inc(up.size)
    return dataset_out(d)


@router.get("", response_model=list[DatasetOut], name="list")
def list_datasets(ctx: CtxDep, who: OwnerDep) -> Response:
    with ctx.sessions() as s:
        rows = s.scalars(select(Dataset).where(Dataset.owner == who).order_by(Dataset.created_at.desc())).all()
    return respond([dataset_out(d) for d in rows])


@router.get("/{dataset_id}", response_model=DatasetOut, name="get", responses=errors(404))
def get_dataset(dataset_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    with ctx.sessions() as s:
        return respond(dataset_out(owned(s, Dataset, dataset_id, who)))


@router.delete("/{dataset_id}", status_code=204, name="delete", response_class=Response, responses=errors(404, 409))
def delete_dataset(dataset_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    """Delete a set (and its file once no other owner's record shares it); 409 while a queued or
    running job uses it."""
    with ctx.sessions() as s:
        d = owned(s, Dataset, dataset_id, who)
        active = s.scalars(select(Job).where(Job.owner == who, Job.status.in_(ACTIVE)))
        users = [j.id for j in active
                 if dataset_id in (j.spec["real"].get("dataset"), j.spec["fake"].get("dataset"))]
        if users:
            raise Problem(409, f"dataset {dataset_id!r} is used by unfinished job(s) {', '.join(users[:5])}")
        path = d.path
        s.delete(d)
        s.commit()
        shared = s.scalar(select(func.count()).select_from(Dataset).where(Dataset.path == path))
    if shared == 0:
        Path(path).unlink(missing_ok=True)
    return Response(status_code=204)
