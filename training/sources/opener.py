"""open_source: one entry point from a spec (string, path, SourceSpec, dict, array) to a source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import builtin
from .arrays import open_array, open_npy, open_npz
from .base import ArraySource, SampleSource, SourceError
from .generators import open_callable, open_onnx, open_torchscript
from .images import archive_kind, open_image_set
from .spec import SourceSpec
from .vision import open_torchvision

__all__ = ["open_source"]


def open_source(spec, *, allow_torchscript: bool = False, download: bool = False, value_range="auto",
                cache_limit_bytes: int | None = None, latent=None, dist=None, output_range=None) -> SampleSource:
    """Open a sample source.

    spec: a path (str/Path), a scheme string (see SourceSpec), a SourceSpec or its dict form,
    an in-memory numpy array / torch tensor, or a generator in this process (a torch nn.Module or a
    callable z -> images, with `latent`, and optionally `dist` and `output_range`; see
    open_callable). value_range ("auto" or (low, high)) says which stored range maps to [0, 1] for
    arrays and image files; "none" keeps array values as they are (vectors, features: use it with an
    InputSpace of value_range="none"). Errors are SourceError.
    """
    if callable(spec) and not isinstance(spec, type):
        return open_callable(spec, latent=latent, dist=dist, output_range=output_range)
    if latent is not None or dist is not None or output_range is not None:
        raise SourceError("latent, dist and output_range apply to a generator module or callable; "
                          "for ONNX write them into the spec: onnx:PATH?latent=62&dist=normal")
    if isinstance(spec, SampleSource):
        return spec
    if isinstance(spec, (np.ndarray, torch.Tensor)):
        return open_array(spec, value_range=_range(value_range))
    if isinstance(spec, Path):
        spec = SourceSpec(kind="file", path=str(spec))
    elif isinstance(spec, str):
        spec = SourceSpec.parse(spec)
    elif isinstance(spec, dict):
        spec = SourceSpec._validated(spec, str(spec))
    elif not isinstance(spec, SourceSpec):
        raise SourceError(f"cannot open a source from {type(spec).__name__}; give a path, spec string or array")

    if spec.kind == "file":
        vr = _merge_range(spec, value_range)
        return _open_file(Path(spec.path).expanduser(), spec, vr, allow_torchscript, cache_limit_bytes)
    if value_range != "auto":
        raise SourceError(f"{spec}: value_range applies to array and image files only")
    if spec.kind == "builtin":
        opts = dict(classes=spec.classes, size=spec.size, count=spec.count, seed=spec.seed, images=spec.images)
        try:
            data, rng, info = builtin.load_builtin(spec.name, **opts)
        except ValueError as e:
            raise SourceError(str(e)) from None
        return ArraySource(data, what=f"builtin:{spec.name}", info=info, value_range=rng,
                           range_rule=f"builtin: [{rng[0]:g}, {rng[1]:g}]")
    if spec.kind == "torchvision":
        return open_torchvision(spec.name, spec.root, spec.split, download=download)
    gen = dict(latent=spec.latent, dist=spec.dist, output_range=spec.output_range)
    if spec.kind == "onnx":
        return open_onnx(Path(spec.path).expanduser(), **gen)
    return open_torchscript(Path(spec.path).expanduser(), **gen, allow_torchscript=allow_torchscript)


def _range(v):
    if v in ("auto", "none"):
        return v
    try:
        lo, hi = (float(x) for x in v)
    except (TypeError, ValueError):
        raise SourceError(f"value_range must be 'auto', 'none' or (low, high), got {v!r}") from None
    return (lo, hi)


def _merge_range(spec: SourceSpec, value_range):
    given = _range(value_range)
    own = spec.value_range if spec.value_range is not None else "auto"
    if own != "auto" and given != "auto" and _range(own) != given:
        raise SourceError(f"{spec}: value_range {own} in the spec conflicts with value_range={given}")
    return own if own != "auto" else given


def _open_file(path: Path, spec: SourceSpec, value_range, allow_torchscript, cache_limit_bytes) -> SampleSource:
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    name = path.name.lower()
    if spec.key is not None and not name.endswith(".npz"):
        raise SourceError(f"{path}: '#{spec.key}' selects an array of an .npz; this is not an .npz")
    if path.is_dir() or archive_kind(path):
        return open_image_set(path, cache_limit_bytes=cache_limit_bytes, value_range=value_range)
    if name.endswith(".npy"):
        return open_npy(path, value_range=value_range)
    if name.endswith(".npz"):
        return open_npz(path, spec.key, value_range=value_range)
    if name.endswith(".onnx"):
        return open_onnx(path)  # latent shape read from the model; defaults for the rest
    if name.endswith((".pt", ".pth", ".ts", ".jit")):
        raise SourceError(
            f"{path}: looks like a TorchScript/PyTorch file; open it as torchscript:{path}?latent=... "
            f"with allow_torchscript=True (pickled PyTorch checkpoints are never loaded)"
        )
    if name.endswith((".png", ".jpg", ".jpeg")):
        raise SourceError(f"{path}: a single image is not a sample set; give the folder or an archive")
    raise SourceError(
        f"{path}: unsupported file type; use .npy, .npz, a folder of PNG/JPEG, .zip, .tar, .tar.gz or .tgz"
    )
