"""Uploaded files: streamed to disk while hashed, size-limited, checked, then stored by content.

The multipart body is parsed as it arrives (python-multipart's streaming parser), so a large
upload never sits in memory and an oversized one is cut off at the limit (413) without ever
being complete on disk. Files live at ``<data_dir>/uploads/<sha256><suffix>``: identical content
is stored once; the database deduplicates per owner.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import shutil
import tarfile
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from service.server.limits import refuse
from training.sources.formats import is_image

GENERATOR_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript"}
MAX_FIELD_BYTES = 10_000


@dataclass
class Upload:
    """A received file (in the temp area) plus the small form fields that came with it."""

    path: Path
    filename: str
    sha256: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def suffix_of(filename: str, allowed) -> str:
    """The recognised suffix of ``filename`` (``.tar.gz`` counts as one), else 422."""
    name = filename.lower()
    for s in sorted(allowed, key=len, reverse=True):
        if name.endswith(s):
            return s
    raise HTTPException(422, f"file {filename!r}: unsupported type; expected one of {', '.join(allowed)}")


async def receive_upload(request: Request, tmp_dir: Path, limit: int) -> Upload:
    """Stream the multipart body's ``file`` part into ``tmp_dir``; 413 beyond ``limit`` bytes."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise HTTPException(422, "expected a multipart/form-data body with a 'file' field")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise HTTPException(413, f"upload of {int(declared)} bytes exceeds the limit of {limit} bytes")

    tmp_dir.mkdir(parents=True, exist_ok=True)
    state: dict = {"headers": {}, "field": b"", "value": b"", "name": None, "filename": None}
    fields: dict[str, str] = {}
    digest = hashlib.sha256()
    out_path = tmp_dir / f"upload-{uuid.uuid4().hex}"
    out = None
    size = 0
    filename = None
    too_big = False

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        nonlocal out, filename
        _, disp = parse_options_header(state["headers"].get("content-disposition", b""))
        state["name"] = disp.get(b"name", b"").decode("utf-8", "replace")
        fname = disp.get(b"filename")
        state["filename"] = fname.decode("utf-8", "replace") if fname is not None else None
        state["buf"] = b""
        if state["name"] == "file" and state["filename"] is not None and out is None:
            filename = state["filename"]
            out = open(out_path, "wb")

    def on_part_data(data, start, end):
        nonlocal size, too_big
        chunk = data[start:end]
        if state["name"] == "file" and state["filename"] is not None:
            if out is None or out.closed or too_big:
                return
            size += len(chunk)
            if size > limit:
                too_big = True
                return
            digest.update(chunk)
            out.write(chunk)
        elif len(state["buf"]) < MAX_FIELD_BYTES:
            state["buf"] += chunk

    def on_part_end():
        if state["name"] == "file" and out is not None:
            out.close()
        elif state["name"] and state["filename"] is None:
            fields[state["name"]] = state["buf"].decode("utf-8", "replace")
        state["headers"] = {}

    parser = MultipartParser(params[b"boundary"], {
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if too_big:
                break
        parser.finalize()
        if not too_big and parser.state != MultipartState.END:
            raise ValueError("the body ends without its closing boundary (truncated upload?)")
    except HTTPException:
        raise
    except Exception as exc:  # a malformed body: nothing is kept
        if out is not None:
            out.close()
        out_path.unlink(missing_ok=True)
        if too_big:
            raise HTTPException(413, f"upload exceeds the limit of {limit} bytes") from None
        raise HTTPException(422, f"malformed multipart body: {exc}") from None
    finally:
        if out is not None and not out.closed:
            out.close()
    if too_big:
        out_path.unlink(missing_ok=True)
        raise HTTPException(413, f"upload exceeds the limit of {limit} bytes")
    if filename is None:
        out_path.unlink(missing_ok=True)
        raise HTTPException(422, "missing multipart field 'file' (with a filename)")
    for key, value in [("filename", filename), *fields.items()]:
        if "\x00" in value or "\x00" in key:  # PostgreSQL cannot store NUL; nothing legitimate has one
            out_path.unlink(missing_ok=True)
            raise HTTPException(422, f"multipart field {key.replace(chr(0), '?')!r} contains a NUL byte")
    return Upload(out_path, os.path.basename(filename) or "upload", digest.hexdigest(), size, fields)


def check_archive(path: Path, suffix: str) -> None:
    """Reject archives that are unreadable or whose members could escape their folder.

    open_source reads members by name only, but the service refuses such archives outright:
    they are never legitimate sample sets.
    """
    def bad_name(name: str) -> bool:
        p = PurePosixPath(name.replace("\\", "/"))
        return p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":")

    try:
        if suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                bad = zf.testzip()
                if bad is not None:
                    raise ValueError(f"member {bad!r} is corrupt (CRC mismatch)")
            links = []
        elif suffix in (".tar", ".tar.gz", ".tgz"):
            with tarfile.open(path) as tf:
                members = tf.getmembers()
            names = [m.name for m in members]
            links = [m.name for m in members if not (m.isfile() or m.isdir())]
        else:
            return
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise HTTPException(422, f"archive is corrupt or truncated: {exc}") from None
    escaping = [n for n in names if bad_name(n)]
    if escaping:
        raise HTTPException(422, f"archive member {escaping[0]!r} escapes the archive's folder")
    if links:
        raise HTTPException(422, f"archive member {links[0]!r} is a link or special file; only "
                                 "regular files are accepted")


def drop_unreferenced(session, model, path: Path) -> None:
    """Delete a stored file that no record of ``model`` names (after a failed insert)."""
    from sqlalchemy import func, select

    try:
        if session.scalar(select(func.count()).select_from(model).where(model.path == str(path))) == 0:
            Path(path).unlink(missing_ok=True)
    except Exception:  # the database is what failed: keep the file rather than guess
        pass


def store(upload: Upload, uploads_dir: Path, suffix: str) -> Path:
    """Move a checked upload to its content address (keeping an identical existing file)."""
    uploads_dir.mkdir(parents=True, exist_ok=True)
    dest = uploads_dir / f"{upload.sha256}{suffix}"
    if dest.exists():
        upload.discard()
    else:
        os.replace(upload.path, dest)
    return dest


# -- sizes, from headers, before anything is decoded ---------------------------------------------
# A small upload can decode to gigabytes (a zip of zeros, blank 8000x8000 PNGs): every size is read
# from headers (the npy header, the zip directory, an image's header) and checked against the
# settings before a byte is decompressed or a pixel decoded. Messages name the file as uploaded.

RATIO_FLOOR = 64 * 1024**2  # decoded bytes below which the compression ratio is not checked
_VALIDATE_CHUNK = 64 * 1024**2  # bytes of decoded pixels the API holds while validating a set
_IMAGE_HEADER_BYTES = 4 * 1024**2


def _npy_header(f, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an open .npy stream's header (nothing else is read)."""
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    except Exception as exc:
        refuse(f"{where}: not a readable .npy array header ({exc})")
    if dtype.hasobject:
        refuse(f"{where}: holds Python objects, which are never unpickled; save plain numeric arrays")
    return tuple(int(d) for d in shape), dtype


def _decoded(shape, dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def _check_total(where: str, decoded: int, stored: int, settings, archive: bool) -> None:
    if decoded > settings.max_decoded_bytes:
        refuse(f"{where}: decodes to {decoded:,} bytes, over this server's limit of "
                f"{settings.max_decoded_bytes:,} (W1_MAX_DECODED_BYTES)")
    if archive and decoded > RATIO_FLOOR and decoded > settings.max_compression_ratio * max(stored, 1):
        refuse(f"{where}: decompresses {decoded / max(stored, 1):,.0f}-fold ({stored:,} -> {decoded:,} bytes), over "
                f"this server's limit of {settings.max_compression_ratio:g} (W1_MAX_COMPRESSION_RATIO)")


def _zip_infos(path: Path, where: str, settings) -> list[zipfile.ZipInfo]:
    """The members of a zip, after checking their number (from the end record) and declared sizes.

    zipfile never inflates a member past its declared size, so the declared sizes bound the work."""
    try:
        with open(path, "rb") as f:
            end = zipfile._EndRecData(f)  # the end-of-directory record: entry count before parsing
        if end is None:
            raise zipfile.BadZipFile("no end-of-central-directory record")
        if end[zipfile._ECD_ENTRIES_TOTAL] > settings.max_archive_members:
            refuse(f"{where}: holds {end[zipfile._ECD_ENTRIES_TOTAL]:,} files, over this server's limit of "
                    f"{settings.max_archive_members:,} (W1_MAX_ARCHIVE_MEMBERS)")
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        refuse(f"{where}: archive is corrupt or truncated: {exc}")
    _check_total(where, sum(i.file_size for i in infos), path.stat().st_size, settings, archive=True)
    return infos


def _check_images(where: str, count: int, first: bytes | None, first_name: str, settings) -> None:
    """count images of the first one's size: pixels of one, and of the whole set decoded."""
    if not count or first is None:
        return  # open_source explains what is missing
    from PIL import Image

    try:
        with Image.open(io.BytesIO(first)) as img:  # lazy: only the header is parsed
            (w, h), channels = img.size, len(img.getbands())
    except Exception as exc:  # PIL's own bomb check (> 2 x 89 M pixels) lands here too
        refuse(f"{where}: {first_name}: not a readable PNG/JPEG image ({exc})")
    if w * h > settings.max_image_pixels:
        refuse(f"{where}: {first_name} is {w}x{h} = {w * h:,} pixels, over this server's limit of "
                f"{settings.max_image_pixels:,} per image (W1_MAX_IMAGE_PIXELS)")
    decoded = count * w * h * channels
    if decoded > settings.max_decoded_bytes:
        refuse(f"{where}: {count:,} images of {w}x{h}x{channels} decode to {decoded:,} bytes, over this "
                f"server's limit of {settings.max_decoded_bytes:,} (W1_MAX_DECODED_BYTES)")


def _check_tar(path: Path, where: str, settings) -> None:
    size = path.stat().st_size
    if path.name.endswith(("gz", "tgz")):  # a compressed stream: decompress with a cap first
        cap = min(settings.max_decoded_bytes, max(RATIO_FLOOR, int(settings.max_compression_ratio * size)))
        total = 0
        try:
            with gzip.open(path) as g:
                while chunk := g.read(1 << 20):
                    total += len(chunk)
                    if total > cap:
                        refuse(f"{where}: decompresses to more than {cap:,} bytes ({size:,} stored), over this "
                                f"server's limits (W1_MAX_DECODED_BYTES, W1_MAX_COMPRESSION_RATIO)")
        except (OSError, EOFError, zlib.error) as exc:
            refuse(f"{where}: archive is corrupt or truncated: {exc}")
    count, first, first_name = 0, None, ""
    try:
        with tarfile.open(path) as tf:
            for n, m in enumerate(tf, 1):
                if n > settings.max_archive_members:
                    refuse(f"{where}: holds more than {settings.max_archive_members:,} files, this server's limit "
                            f"(W1_MAX_ARCHIVE_MEMBERS)")
                if m.isfile() and is_image(m.name):
                    count += 1
                    if first is None:
                        first, first_name = tf.extractfile(m).read(_IMAGE_HEADER_BYTES), m.name
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        refuse(f"{where}: archive is corrupt or truncated: {exc}")
    _check_images(where, count, first, first_name, settings)


def check_dataset_size(path: Path, suffix: str, where: str, settings) -> None:
    """Refuse (422) a data set whose decoded size, file count or compression ratio is over the limits.

    Reads headers only: the npy header, the zip directory, one image's header (all images of a
    set must match, which open_source checks header by header)."""
    if suffix == ".npy":
        with open(path, "rb") as f:
            shape, dtype = _npy_header(f, where)
            decoded, room = _decoded(shape, dtype), path.stat().st_size - f.tell()
        _check_total(where, decoded, room, settings, archive=False)
        if room < decoded:
            refuse(f"{where}: truncated: its header says {shape} {dtype} ({decoded:,} bytes), the file holds {room:,}")
    elif suffix == ".npz":
        infos = _zip_infos(path, where, settings)
        total = 0
        with zipfile.ZipFile(path) as zf:
            for info in infos:
                member = f"{where}#{info.filename.removesuffix('.npy')}"
                try:
                    with zf.open(info) as f:
                        shape, dtype = _npy_header(f, member)
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                    refuse(f"{where}: archive is corrupt or truncated: {exc}")
                decoded = _decoded(shape, dtype)
                if decoded > info.file_size:
                    refuse(f"{member}: truncated: its header says {shape} {dtype} ({decoded:,} bytes), the member "
                            f"holds {info.file_size:,}")
                total += decoded
        _check_total(where, total, path.stat().st_size, settings, archive=True)
    elif suffix == ".zip":
        infos = _zip_infos(path, where, settings)
        images = [i for i in infos if is_image(i.filename)]
        first = None
        if images:
            try:
                with zipfile.ZipFile(path) as zf, zf.open(images[0]) as f:
                    first = f.read(_IMAGE_HEADER_BYTES)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                refuse(f"{where}: archive is corrupt or truncated: {exc}")
        _check_images(where, len(images), first, images[0].filename if images else "", settings)
    elif suffix in (".tar", ".tar.gz", ".tgz"):
        _check_tar(path, where, settings)


def extract_single_npz(path: Path, tmp_dir: Path) -> tuple[Path, str] | None:
    """The only array of an .npz, extracted to a temporary .npy (sizes already checked), so the API
    validates it memory-mapped instead of loading it; None when the .npz holds another number."""
    with zipfile.ZipFile(path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) != 1 or not infos[0].filename.endswith(".npy"):
            return None
        out = tmp_dir / f"npz-{uuid.uuid4().hex}.npy"
        try:
            with zf.open(infos[0]) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            out.unlink(missing_ok=True)
            refuse(f"archive is corrupt or truncated: {exc}")
    return out, infos[0].filename.removesuffix(".npy")


def read_through(src, where: str) -> None:
    """Decode every sample of a lazily opened set once, a bounded chunk at a time (corrupt or
    truncated images are found here, without the API holding the decoded set)."""
    per = max(1, math.prod(src.shape) * 4)
    step = max(1, _VALIDATE_CHUNK // per)
    for start in range(0, len(src), step):
        src.read(range(start, min(len(src), start + step)))


def check_latent(latent: list[int], settings) -> None:
    if len(latent) > 8 or any(d < 1 for d in latent):
        refuse(f"latent_shape must be 1 to 8 positive sizes, got {latent[:9]}")
    if math.prod(latent) > settings.max_latent_elements:
        refuse(f"latent_shape {latent} has {math.prod(latent):,} elements, over this server's limit of "
                f"{settings.max_latent_elements:,} (W1_MAX_LATENT_ELEMENTS)")


def check_onnx_shapes(path: Path, latent: list[int], where: str, settings) -> None:
    """A generator's output (N, C, H, W) from the ONNX graph, before the model is run: C, H, W must
    be static and within max_image_pixels, and a fixed batch within max_batch_bytes."""
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        refuse(f"{where}: cannot load ONNX model ({exc})")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        return  # open_source explains the expected signature
    dims = list(outputs[0].shape or [])
    if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        dims = _inferred_output(path, latent) or dims
    if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        refuse(f"{where}: the output shape {dims} is not (N, C, H, W) with static C, H and W; "
                "export the generator with only the batch axis dynamic")
    c, h, w = dims[1:]
    if h * w > settings.max_image_pixels:
        refuse(f"{where}: outputs {c}x{h}x{w} images = {h * w:,} pixels, over this server's limit of "
                f"{settings.max_image_pixels:,} per image (W1_MAX_IMAGE_PIXELS)")
    batch = inputs[0].shape[0] if inputs[0].shape and isinstance(inputs[0].shape[0], int) else 2
    if batch * c * h * w * 4 > settings.max_batch_bytes:
        refuse(f"{where}: its fixed batch of {batch} outputs {batch * c * h * w * 4:,} bytes, over this "
                f"server's limit of {settings.max_batch_bytes:,} (W1_MAX_BATCH_BYTES)")


def _inferred_output(path: Path, latent: list[int]) -> list | None:
    """ONNX shape inference with the latent fixed, for a model that does not declare its output."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        inits = {i.name for i in model.graph.initializer}
        inp = next(i for i in model.graph.input if i.name not in inits)
        shape = inp.type.tensor_type.shape
        if len(shape.dim) != 1 + len(latent):
            return None
        for dim, value in zip(shape.dim, [2, *latent]):
            dim.Clear()
            dim.dim_value = value
        out = onnx.shape_inference.infer_shapes(model, data_prop=True).graph.output[0]
        return [d.dim_value if d.HasField("dim_value") else None for d in out.type.tensor_type.shape.dim]
    except Exception:
        return None


# -- opening an upload as the worker will, with the limits above first --------------------------

def _scrubbed(exc: Exception, path: Path, shown: str) -> str:
    return str(exc).replace(str(path), shown).replace(path.name, shown)


def open_dataset(path: Path, suffix: str, shown: str, settings) -> tuple[int, list[int]]:
    """Count and shape of an uploaded set (``path`` ends in ``suffix``), checked as the worker
    will open it; sizes first, then the values, with bounded memory (an .npz's array is
    extracted and memory-mapped, images are decoded a chunk at a time). 422 names ``shown``."""
    from training.sources import SourceError, SourceSpec, open_source

    check_dataset_size(path, suffix, shown, settings)
    check_archive(path, suffix)
    target, label, extracted = path, shown, None
    if suffix == ".npz":
        got = extract_single_npz(path, path.parent)
        if got is not None:
            extracted, key = got
            target, label = extracted, f"{shown}#{key}"
    try:
        src = open_source(SourceSpec(kind="file", path=str(target)), cache_limit_bytes=0)
        if src.describe().get("cached") is False:
            read_through(src, label)
        return len(src), list(src.shape)
    except SourceError as exc:
        raise HTTPException(422, _scrubbed(exc, target, label)) from None
    except Exception as exc:
        raise HTTPException(422, f"{shown}: cannot be read as a sample set: {_scrubbed(exc, target, label)}") from None
    finally:
        if extracted is not None:
            extracted.unlink(missing_ok=True)


def open_generator(path: Path, fmt: str, latent: list[int], dist: str, output_range: list[float], shown: str,
                   settings) -> list[int]:
    """Output shape (C, H, W) of an uploaded generator: latent and graph shapes checked against the
    limits before the model runs once on a batch of two. 422 names ``shown``."""
    from training.sources import SourceError, SourceSpec, open_source

    check_latent(latent, settings)
    if fmt == "onnx":
        check_onnx_shapes(path, latent, shown, settings)
    try:
        spec = SourceSpec(kind=fmt, path=str(path), latent=tuple(latent), dist=dist, output_range=tuple(output_range))
        return list(open_source(spec, allow_torchscript=settings.allow_torchscript).shape)
    except (SourceError, ValueError) as exc:
        raise HTTPException(422, _scrubbed(exc, path, shown)) from None
    except Exception as exc:
        raise HTTPException(422, f"{shown}: cannot be run as a generator: {_scrubbed(exc, path, shown)}") from None
