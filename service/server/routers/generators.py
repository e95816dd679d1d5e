"""Generators: an ONNX model (TorchScript only when the operator allows it) with its latent specification."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.contracts import GeneratorOut
from service.server.db import Generator
from service.server.deps import CtxDep, OwnerDep
from service.server.openapi import errors, links
from service.server.uploads import records
from service.server.views import generator_out, respond

router = APIRouter(prefix="/v1/generators", tags=["generators"], responses=errors(401, 422, 503))

UPLOAD_BODY = {"requestBody": {"content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "latent_shape"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   "name": {"type": "string"}, "latent_shape": {"type": "string"},
                   "latent_distribution": {"type": "string", "enum": ["normal", "uniform"]},
                   "output_range": {"type": "string"}}}}}, "required": True}}


@router.post("", status_code=201, openapi_extra=UPLOAD_BODY, name="upload", responses={
    201: {"links": links("generator_id", "generators_get")},
    200: {"model": GeneratorOut, "description": "This owner uploaded the same model and latent specification before"},
    **errors(413, 422)})
async def upload_generator(request: Request, response: Response, ctx: CtxDep, who: OwnerDep) -> GeneratorOut:
    """Upload a generator: ONNX (TorchScript only when the operator allows it); 200 with the
    existing one when the same model and latent specification were uploaded before."""
    generator, created = await records.accept(request, ctx, who, records.register_generator)
    response.status_code = 201 if created else 200
    return generator_out(generator)


@router.get("", response_model=list[GeneratorOut], name="list")
def list_generators(ctx: CtxDep, who: OwnerDep) -> Response:
    return respond([generator_out(g) for g in records.list_owned(ctx, Generator, who)])


@router.get("/{generator_id}", response_model=GeneratorOut, name="get", responses=errors(404))
def get_generator(generator_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    return respond(generator_out(records.get_owned(ctx, Generator, generator_id, who)))
