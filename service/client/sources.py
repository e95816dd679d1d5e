"""The `w1 estimate` source vocabulary on the client side, without torch.

`w1 submit`/`w1 batch` accept every source `w1 estimate` accepts; each becomes something the
server knows (docs/api.md SOURCE objects):

| written                                   | sent as                                              |
|-------------------------------------------|------------------------------------------------------|
| catalog:NAME, dataset:ID, generator:ID[:N] | as is                                               |
| a .npz/.npy/.zip/.tar/.tar.gz/.tgz file    | an uploaded dataset                                  |
| real.npz#KEY                               | that array alone, as an .npz, uploaded               |
| a folder of PNG/JPEG images                | a tar archived on the fly, uploaded                  |
| builtin:NAME?...                           | the same samples as a local estimate, as an .npz     |
| torchvision:NAME                           | the server's catalog entry of that name              |
| onnx:PATH?latent=&dist=&output_range=, .onnx | an uploaded generator + the number of samples      |

Archives and .npz files are written deterministically (sorted members, fixed times), so the same
folder or builtin set has the same sha256 every time and the server's copy is reused.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.contracts import SERVER_KINDS, Source
from training.sources.formats import UPLOAD_SUFFIXES, is_image, skipped



class SourceProblem(ValueError):
    """A source string that cannot be sent; the message names it."""


@dataclass(frozen=True)
class LocalDataset:
    """Samples on this machine to upload: a file, a folder (archived) or a builtin set (saved)."""

    text: str
    path: Path | None = None  # a file or folder
    builtin: Any = None  # a training SourceSpec of kind "builtin"
    key: str | None = None  # one array of an .npz

    @property
    def name(self) -> str:
        if self.builtin is not None:
            return str(self.builtin)
        if self.key is not None:
            return f"{self.path.name}#{self.key}"
        return self.path.name + (".tar" if self.path.is_dir() else "")


@dataclass(frozen=True)
class LocalGenerator:
    """An ONNX generator to upload with its latent specification."""

    text: str
    path: Path
    latent: tuple[int, ...] | None
    dist: str
    output_range: tuple[float, float]


def parse(text: str) -> dict | LocalDataset | LocalGenerator:
    """A server SOURCE object, or what has to be uploaded first. Raises SourceProblem."""
    from training.sources.errors import SourceError
    from training.sources.spec import SourceSpec

    if text.partition(":")[0] in SERVER_KINDS:
        try:
            return Source.parse(text).model_dump()
        except ValueError as exc:
            raise SourceProblem(str(exc)) from None
    try:
        spec = SourceSpec.parse(text)
    except SourceError as exc:
        raise SourceProblem(str(exc)) from None
    if spec.kind == "file":
        path = Path(spec.path).expanduser()
        if not path.exists():
            raise SourceProblem(f"{path}: no such file or folder (expected samples (.npz, .npy, .zip, .tar, "
                                ".tgz, a folder of images), builtin:NAME, onnx:PATH, catalog:NAME, dataset:ID "
                                "or generator:ID[:samples])")
        if spec.value_range is not None:
            raise SourceProblem(f"{text!r}: value_range is not sent to the server; upload an array "
                                "stored in [0, 1], 0..255 or [-1, 1]")
        if spec.key is not None:
            return LocalDataset(text, path=path, key=spec.key)
        if path.is_dir():
            return LocalDataset(text, path=path)
        low = path.name.lower()
        if low.endswith(".onnx"):
            return LocalGenerator(text, path, None, "normal", (-1.0, 1.0))
        if not low.endswith(UPLOAD_SUFFIXES):
            raise SourceProblem(f"{path}: unsupported file type (expected one of {', '.join(UPLOAD_SUFFIXES)}, "
                                "a folder of PNG/JPEG images or an .onnx generator)")
        return LocalDataset(text, path=path)
    if spec.kind == "builtin":
        return LocalDataset(text, builtin=spec)
    if spec.kind == "torchvision":
        return {"catalog": spec.name}
    if spec.kind == "onnx":
        path = Path(spec.path).expanduser()
        if not path.is_file():
            raise SourceProblem(f"{path}: no such ONNX file")
        return LocalGenerator(text, path, spec.latent, spec.dist or "normal",
                              tuple(spec.output_range or (-1.0, 1.0)))
    raise SourceProblem(f"{text!r}: TorchScript generators are not uploaded by the client; export the "
                        "generator to ONNX (torch.onnx.export) and use onnx:PATH?latent=...")


# -- preparing uploads ---------------------------------------------------------------------------

def prepare(local: LocalDataset, folder: Path) -> Path:
    """The file to upload for `local`: the file itself, or a tar / .npz written into `folder`."""
    if local.builtin is not None:
        return save_builtin(local.builtin, folder / "builtin.npz")
    if local.key is not None:
        return save_npz_key(local.path, local.key, folder / f"{local.path.stem}-{local.key}.npz")
    if local.path.is_dir():
        return archive_folder(local.path, folder / f"{local.path.resolve().name or 'images'}.tar")
    return local.path


def archive_folder(root: Path, dest: Path) -> Path:
    """A tar of the PNG/JPEG files under `root` (hidden folders skipped), sorted, with fixed
    owners and times, so the same folder always gives the same bytes (and sha256)."""
    names = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not skipped(x))
        rel = Path(d).relative_to(root)
        names += [(rel / f).as_posix() for f in files if is_image((rel / f).as_posix())]
    if not names:
        raise SourceProblem(f"{root}: no PNG or JPEG images in this folder")
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(names):
            data = (root / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return dest


def save_builtin(spec, dest: Path) -> Path:
    """The builtin set as the server will read it: uint8 when its range is 0..255, else float32
    mapped into [0, 1] (e.g. digits' 0..16), in an .npz written without timestamps."""
    import numpy as np

    from training import builtin

    opts = dict(classes=spec.classes, size=spec.size, count=spec.count, seed=spec.seed, images=spec.images)
    try:
        data, (lo, hi), _ = builtin.load_builtin(spec.name, **opts)
    except ValueError as exc:
        raise SourceProblem(str(exc)) from None
    except ModuleNotFoundError as exc:  # a client-only install: the sets come from the estimator's libraries
        raise SourceProblem(f"{spec}: built-in sets are made here with {exc.name}, which this install lacks: "
                            "pip install 'w1-service[estimator]', or send the samples as an .npz") from None
    if (lo, hi) != (0.0, 255.0) or data.dtype != np.uint8:
        data = ((data.astype(np.float32) - lo) / (hi - lo)).astype(np.float32)
    return _write_npz(data, dest)


def save_npz_key(path: Path, key: str, dest: Path) -> Path:
    """One array of an .npz (`real.npz#images`) as an .npz of its own (never unpickled)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            if key not in npz.files:
                raise SourceProblem(f"{path}: no array named {key!r} (has: {', '.join(npz.files) or 'none'})")
            data = npz[key]
    except (ValueError, OSError) as exc:
        raise SourceProblem(f"{path}: not a usable .npz archive ({exc})") from None
    return _write_npz(data, dest)


def _write_npz(data, dest: Path) -> Path:
    """An .npz with one array, written without timestamps (same array: same sha256)."""
    import zipfile

    import numpy as np

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(data), allow_pickle=False)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo("images.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())
    return dest


def onnx_latent(path: Path) -> tuple[int, ...]:
    """The latent shape from an ONNX model's static input shape (onnxruntime, no torch)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise SourceProblem(f"{path}: give the latent shape, e.g. onnx:{path}?latent=62") from None
    try:
        inputs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()
    except Exception as exc:  # onnxruntime's own exception types
        raise SourceProblem(f"{path}: cannot load ONNX model ({' '.join(str(exc).split())})") from None
    dims = list(inputs[0].shape)[1:] if len(inputs) == 1 else [None]
    if not dims or not all(isinstance(d, int) and d > 0 for d in dims):
        raise SourceProblem(f"{path}: the model's input shape does not say the latent shape; "
                            f"give it, e.g. onnx:{path}?latent=62")
    return tuple(dims)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
