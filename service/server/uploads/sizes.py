"""What an upload decodes to, read from its headers and checked against the limits before a byte is
decompressed or a pixel decoded: a small upload can decode to gigabytes (a zip of zeros, blank
8000x8000 PNGs). Every size comes from a header (the npy header, the zip directory, an image's
header, the ONNX graph) and each refusal (422) names the file as uploaded, the value, the limit and
its setting."""
from __future__ import annotations

import gzip
import io
import math
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from service.server.errors import refuse
from training.sources.formats import is_image, unreadable_image

RATIO_FLOOR = 64 * 1024**2  # decoded bytes below which the compression ratio is not checked
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
        refuse(unreadable_image(f"{where}: {first_name}", exc))
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
