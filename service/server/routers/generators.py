"""Generators: an ONNX model (TorchScript only when the operator allows it) with its latent specification."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from service.server import storage
from service.server.db import Generator
from service.server.deps import CtxDep, OwnerDep
from service.server.domain import Context, Problem, owned
from service.contracts import GeneratorForm, GeneratorOut
from service.server.openapi import errors, links
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
    settings = ctx.settings
    up = await storage.receive_upload(request, settings.data_dir / "tmp", settings.max_upload_bytes)
    try:
        return await run_in_threadpool(register_generator, ctx, up, who, response)
    finally:
        up.discard()


def register_generator(ctx: Context, up: storage.Upload, who: str, response: Response) -> GeneratorOut:
    """Check a received model by running it once, store it by content and record it (in a worker thread)."""
    settings = ctx.settings
    suffix = storage.suffix_of(up.filename, storage.GENERATOR_SUFFIXES)
    fmt = storage.GENERATOR_SUFFIXES[suffix]
    if fmt == "torchscript" and not settings.allow_torchscript:
        raise Problem(422, "TorchScript generators are disabled on this server "
                           "(W1_ALLOW_TORCHSCRIPT); upload an ONNX model")
    try:
        form = GeneratorForm.parse(up.fields)
    except ValueError as exc:
        raise Problem(422, str(exc)) from None
    latent, dist, out_range = list(form.latent_shape), form.latent_distribution, list(form.output_range)
    storage.check_latent(latent, settings)
    latent_key, range_key = ",".join(map(str, latent)), ",".join(map(str, out_range))
    with ctx.sessions() as s:
        existing = s.scalar(select(Generator).where(
            Generator.owner == who, Generator.sha256 == up.sha256, Generator.latent_shape_key == latent_key,
            Generator.latent_distribution == dist, Generator.output_range_key == range_key))
    if existing is not None:
        response.status_code = 200
        return generator_out(existing)
    checked = up.path.with_name(up.path.name + suffix)
    up.path.rename(checked)
    up.path = checked
    out_shape = storage.open_generator(checked, fmt, latent, dist, out_range, up.filename, settings)
    path = storage.store(up, settings.uploads_dir, suffix)
    with ctx.sessions() as s:
        g = Generator(owner=who, name=(up.fields.get("name") or up.filename)[:300], format=fmt,
                      latent_shape=latent, latent_shape_key=latent_key, latent_distribution=dist,
                      output_range=out_range, output_range_key=range_key, output_shape=out_shape,
                      sha256=up.sha256, size_bytes=up.size, path=str(path))
        s.add(g)
        try:
            s.commit()
        except BaseException:  # not recorded: the stored file must not outlive the failure
            s.rollback()
            storage.drop_unreferenced(s, Generator, path)
            raise
    return generator_out(g)


@router.get("", response_model=list[GeneratorOut], name="list")
def list_generators(ctx: CtxDep, who: OwnerDep) -> Response:
    with ctx.sessions() as s:
        rows = s.scalars(select(Generator).where(Generator.owner == who).order_by(Generator.created_at.desc())).all()
    return respond([generator_out(g) for g in rows])


@router.get("/{generator_id}", response_model=GeneratorOut, name="get", responses=errors(404))
def get_generator(generator_id: str, ctx: CtxDep, who: OwnerDep) -> Response:
    with ctx.sessions() as s:
        return respond(generator_out(owned(s, Generator, generator_id, who)))
