"""The SampleSource interface, its error type, and the array-backed finite source.

Every source hands out float32 CPU tensors (n, C, H, W) in [0, 1] (vectors N×D as (n, 1, 1, D); with
value_range="none" values are handed out as they are, not mapped into [0, 1]); how stored values map into
[0, 1] (uint8 /255, a float [0, 1] or [-1, 1] set, an explicit range) is decided once, when the
source is opened, and reported by describe().
"""

from __future__ import annotations

import abc
import math
from typing import Sequence

import numpy as np
import torch

from .errors import SourceError

__all__ = [
    "SourceError",
    "SampleSource",
    "FiniteSource",
    "ArraySource",
    "as_index_array",
    "interpret_range",
    "array_layout",
    "RANGE_TOLERANCE",
]

# Values this far (relative to the range width) outside the declared range are float noise
# (e.g. tanh rounding to 1.0000001) and are clamped; anything further is an error.
RANGE_TOLERANCE = 1e-4
# Elements scanned per chunk when checking a (possibly memory-mapped) array's values.
_SCAN_CHUNK = 1 << 22


class SampleSource(abc.ABC):
    """Where samples come from: a finite set (`len`, `read`) or a generator (`sample`)."""

    shape: tuple[int, int, int]  # (C, H, W)
    is_generator: bool

    def __len__(self) -> int:
        raise TypeError(f"{self.label} is a generator: it has no length; use sample(n, generator)")

    def __bool__(self) -> bool:  # a source is never "empty-falsy" (generators have no len)
        return True

    def read(self, indices) -> torch.Tensor:
        raise TypeError(f"{self.label} is a generator: use sample(n, generator) instead of read()")

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise TypeError(f"{self.label} is a finite set: use read(indices) instead of sample()")

    @abc.abstractmethod
    def describe(self) -> dict:
        """JSON-able description: kind, path or name, count, shape, value interpretation."""

    @property
    def label(self) -> str:
        """Short human name (path or data set name) used in error messages."""
        d = self.describe()
        return str(d.get("path") or d.get("name") or d.get("kind"))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} shape={self.shape}>"


class FiniteSource(SampleSource):
    """A finite sample set: `len(src)` samples addressed by index."""

    is_generator = False

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def read(self, indices) -> torch.Tensor: ...


def as_index_array(indices, n: int, what: str) -> np.ndarray:
    """Validate indices (ints, sequence, array, tensor, range, slice) against a set of n."""
    if isinstance(indices, slice):
        return np.arange(n)[indices]
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    idx = np.asarray(indices)
    if idx.ndim == 0:
        idx = idx.reshape(1)
    if idx.size == 0:
        return idx.astype(np.int64)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise IndexError(f"{what}: indices must be a 1-D sequence of integers, got {idx.dtype} {idx.shape}")
    if idx.min() < 0 or idx.max() >= n:
        raise IndexError(f"{what}: index out of range 0..{n - 1} (got {idx.min()}..{idx.max()})")
    return idx.astype(np.int64)


def array_layout(shape: Sequence[int], what: str) -> tuple[str, tuple[int, int, int]]:
    """Decide the layout of an array: 'NCHW', 'NHWC', 'NHW' (grey) or 'ND' (vectors, as 1×1×D);
    return (layout, CHW)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3, 4):
        raise SourceError(
            f"{what}: expected an array of images N×C×H×W, N×H×W×C or N×H×W (grey), or of vectors N×D, "
            f"got {len(shape)}-D shape {shape}"
        )
    if shape[0] == 0:
        raise SourceError(f"{what}: the set is empty (shape {shape})")
    if len(shape) == 2:  # vectors: handed out as 1×1×D "images", so every critic input is (C, H, W)
        if shape[1] == 0:
            raise SourceError(f"{what}: vectors have zero length (shape {shape})")
        return "ND", (1, 1, shape[1])
    if len(shape) == 3:
        layout, chw = "NHW", (1, shape[1], shape[2])
    elif shape[1] in (1, 3):
        layout, chw = "NCHW", (shape[1], shape[2], shape[3])
    elif shape[3] in (1, 3):
        layout, chw = "NHWC", (shape[3], shape[1], shape[2])
    elif 4 in (shape[1], shape[3]):
        raise SourceError(
            f"{what}: shape {shape} has 4 channels (RGBA?); only 1 (grey) or 3 (RGB) channels "
            f"are supported — drop the alpha channel"
        )
    else:
        raise SourceError(
            f"{what}: shape {shape} has no channel axis of size 1 or 3 (expected N×C×H×W or "
            f"N×H×W×C with C in {{1, 3}}, or N×H×W for grey)"
        )
    if chw[1] == 0 or chw[2] == 0:
        raise SourceError(f"{what}: images have zero size (shape {shape})")
    return layout, chw


def _scan(data: np.ndarray) -> tuple[float, float, int]:
    """(min, max, count of NaN/Inf) over finite values, chunked so memmaps are never expanded."""
    flat = data.reshape(data.shape[0], -1) if data.ndim > 1 else data.reshape(-1, 1)
    rows = max(1, _SCAN_CHUNK // max(1, flat.shape[1]))
    lo, hi, bad = math.inf, -math.inf, 0
    for start in range(0, flat.shape[0], rows):
        chunk = np.asarray(flat[start : start + rows])
        if chunk.dtype.kind == "f":
            finite = np.isfinite(chunk)
            nbad = int(chunk.size - np.count_nonzero(finite))
            if nbad:
                bad += nbad
                chunk = chunk[finite]
        if chunk.size:
            lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
    return lo, hi, bad


def interpret_range(data: np.ndarray, value_range, what: str) -> tuple[tuple[float, float], str]:
    """Decide which stored range maps to [0, 1]: ((low, high), rule).

    auto: uint8 -> [0, 255]; other integers must lie in 0..255; floats must lie in [0, 1]
    (preferred when both fit) or [-1, 1]. An explicit (low, high) is checked against the data.
    "none": values are kept as they are (only NaN/Inf are refused).
    """
    kind = data.dtype.kind
    if kind not in "uif":
        raise SourceError(f"{what}: unsupported dtype {data.dtype}; use uint8 or float images")
    if value_range == "none":
        if _scan(data)[2]:
            raise SourceError(f"{what}: contains {_scan(data)[2]} NaN/Inf value(s)")
        return (0.0, 1.0), "none: values as they are"
    if value_range == "auto" and data.dtype == np.uint8:
        return (0.0, 255.0), "auto: uint8 [0, 255]"
    lo, hi, bad = _scan(data)
    if bad:
        raise SourceError(f"{what}: contains {bad} NaN/Inf value(s)")
    if value_range != "auto":
        rlo, rhi = (float(v) for v in value_range)
        if not (math.isfinite(rlo) and math.isfinite(rhi) and rlo < rhi):
            raise SourceError(f"{what}: value_range must be (low, high) with low < high, got {value_range}")
        tol = RANGE_TOLERANCE * (rhi - rlo)
        if lo < rlo - tol or hi > rhi + tol:
            raise SourceError(
                f"{what}: values span [{lo:g}, {hi:g}], outside the given value_range [{rlo:g}, {rhi:g}]"
            )
        return (rlo, rhi), "explicit"
    if kind in "ui":
        if lo < 0 or hi > 255:
            raise SourceError(
                f"{what}: integer values span [{lo:g}, {hi:g}], not 0..255; pass value_range=(low, high)"
            )
        return (0.0, 255.0), "auto: integers [0, 255]"
    tol = RANGE_TOLERANCE * 2
    if lo >= -tol and hi <= 1 + tol:
        return (0.0, 1.0), "auto: float [0, 1]"
    if lo >= -1 - tol and hi <= 1 + tol:
        return (-1.0, 1.0), "auto: float [-1, 1]"
    raise SourceError(
        f"{what}: float values span [{lo:g}, {hi:g}], neither [0, 1] nor [-1, 1]; "
        f"pass value_range=(low, high) to say which range maps to [0, 1], or value_range='none' (and an "
        f"input space with value_range='none') to keep the values as they are (vectors, features)"
    )


class ArraySource(FiniteSource):
    """A finite set backed by one array (in memory or memory-mapped).

    Only the requested indices are converted to float, so a memory-mapped 50,000-image .npy
    is never expanded at once.
    """

    def __init__(self, data: np.ndarray, *, what: str, info: dict, value_range="auto", layout: str | None = None,
                 range_rule: str | None = None):
        self._what = what
        if layout == "NHWC":  # known layout (decoded images): no guessing from the shape
            self._layout, self.shape = layout, tuple(int(s) for s in (data.shape[3], data.shape[1], data.shape[2]))
        else:
            self._layout, self.shape = array_layout(data.shape, what)
        self._data = data
        self._range, self._rule = interpret_range(data, value_range, what)
        self._raw = value_range == "none"  # values handed out as they are, not mapped into [0, 1]
        self._rule = range_rule or self._rule
        self._info = dict(info)

    def __len__(self) -> int:
        return int(self._data.shape[0])

    def read(self, indices) -> torch.Tensor:
        idx = as_index_array(indices, len(self), self._what)
        if idx.size == 0:
            return torch.empty((0, *self.shape), dtype=torch.float32)
        # Sorted, unique reads are fastest on a memmap; scatter back into the requested order.
        uniq, inverse = np.unique(idx, return_inverse=True)
        raw = np.asarray(self._data[uniq])[inverse]
        x = torch.from_numpy(np.ascontiguousarray(raw)).to(torch.float32)
        if self._layout == "ND":
            x = x.view(len(idx), *self.shape)
        elif self._layout == "NHW":
            x = x.unsqueeze(1)
        elif self._layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
        if self._raw:
            return x.contiguous()
        lo, hi = self._range
        if (lo, hi) != (0.0, 1.0):
            x = (x - lo) / (hi - lo)
        return x.clamp_(0.0, 1.0).contiguous()

    def describe(self) -> dict:
        return {
            **self._info,
            "count": len(self),
            "shape": list(self.shape),
            "dtype": str(self._data.dtype),
            "layout": self._layout,
            "value_range": {"input": list(self._range), "rule": self._rule},
            "is_generator": False,
        }
