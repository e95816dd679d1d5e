"""Array files (.npy memory-mapped, .npz) and in-memory arrays/tensors as finite sources.

Never unpickles: object arrays are refused (allow_pickle=False).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from .base import ArraySource, SourceError

__all__ = ["open_npy", "open_npz", "open_array"]


def open_npy(path: Path, value_range="auto") -> ArraySource:
    """Memory-map a .npy so only the indices read are ever loaded."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise SourceError(f"{path}: not a .npy file (bad header); corrupt or another format")
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise SourceError(f"{path}: not a usable .npy array ({_why(e)})") from None
    except OSError as e:
        raise SourceError(f"{path}: cannot read .npy file ({e})") from None
    return ArraySource(data, what=str(path), info={"kind": "npy", "path": str(path)}, value_range=value_range)


def open_npz(path: Path, key: str | None = None, value_range="auto") -> ArraySource:
    """Load one array of an .npz (the only one, or `key`)."""
    if not zipfile.is_zipfile(path):
        raise SourceError(f"{path}: not an .npz (zip) archive; corrupt, truncated or another format")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            if key is None:
                if len(keys) != 1:
                    raise SourceError(
                        f"{path}: holds {len(keys)} arrays ({', '.join(keys) or 'none'}); "
                        f"choose one with {path}#KEY"
                    )
                key = keys[0]
            elif key not in keys:
                raise SourceError(f"{path}: no array named {key!r} (has: {', '.join(keys) or 'none'})")
            data = npz[key]
    except SourceError:
        raise
    except ValueError as e:
        raise SourceError(f"{path}: not a usable .npz archive ({_why(e)})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise SourceError(f"{path}: corrupt or truncated .npz archive ({e})") from None
    what = f"{path}#{key}"
    return ArraySource(data, what=what, info={"kind": "npz", "path": str(path), "key": key}, value_range=value_range)


def open_array(data, value_range="auto") -> ArraySource:
    """Wrap an in-memory numpy array or torch tensor (N×C×H×W, N×H×W×C or N×H×W)."""
    if isinstance(data, torch.Tensor):
        t = data.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.to(torch.float32)
        data = t.numpy()
    if not isinstance(data, np.ndarray):
        raise SourceError(f"expected a numpy array or torch tensor, got {type(data).__name__}")
    if data.dtype == object:
        raise SourceError("in-memory array: object arrays are not image data")
    return ArraySource(data, what="in-memory array", info={"kind": "array"}, value_range=value_range)


def _why(e: Exception) -> str:
    msg = str(e)
    if "pickle" in msg.lower():
        return "it contains Python objects, which are never unpickled; save plain numeric arrays"
    return msg
