"""Sample sets: upload (streamed, validated, content-hashed, deduplicated per owner), list, read, delete."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.contracts import DatasetOut
from service.server.db import Dataset
from service.server.deps import CtxDep, OwnerDep
from service.server.openapi import errors, links
from service.server.uploads import records
from service.server.views import dataset_out, respond

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
    dataset, created = await records.accept(request, ctx, who, records.register_dataset)
    response.status_code = 201 if created else 200
    return dataset_out(dataset)


@router.get("", response_model=list[DatasetOut], name="list")
def list_datasets(ctx: CtxDep, who: OwnerDep) -> Response:
    return respond([dataset_out(d) for d in records.list_owned(ctx, Dataset, who)])


@router.get("/{dataset_id}", response_model=DatasetOut, name="get", responses=errors(404))
def get_dataset(dataset_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    return respond(dataset_out(records.get_owned(ctx, Dataset, dataset_id, who)))


@router.delete("/{dataset_id}", status_code=204, name="delete", response_class=Response, responses=errors(404, 409))
def delete_dataset(dataset_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    """Delete a set (and its file once no other owner's record shares it); 409 while a queued or
    running job uses it."""
    records.delete_dataset(ctx, who, dataset_id)
    return Response(status_code=204)
