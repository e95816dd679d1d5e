"""An upload opened as the worker will open it, after its sizes (``sizes``) and, for archives, its
safety (``archives``) were checked: a data set's count and shape (its values read through with
bounded memory), a generator's output shape (the model run once on a batch of two). Errors (422)
name the file as uploaded, never its path on the server."""
from __future__ import annotations

import math
import shutil
import uuid
import zipfile
import zlib
from pathlib import Path

from service.server.errors import Invalid, refuse
from service.server.uploads.archives import check_archive
from service.server.uploads.sizes import check_dataset_size, check_latent, check_onnx_shapes

_VALIDATE_CHUNK = 64 * 1024**2  # bytes of decoded pixels the API holds while validating a set


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
        raise Invalid(_scrubbed(exc, target, label)) from None
    except Exception as exc:
        raise Invalid(f"{shown}: cannot be read as a sample set: {_scrubbed(exc, target, label)}") from None
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
        raise Invalid(_scrubbed(exc, path, shown)) from None
    except Exception as exc:
        raise Invalid(f"{shown}: cannot be run as a generator: {_scrubbed(exc, path, shown)}") from None
