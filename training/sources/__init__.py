"""Sample sources: finite sets and generators, all yielding float32 (n, C, H, W) in [0, 1].

Names are imported on first use, so `training.sources.spec` (parsing a source string) and
`SourceError` work without torch: the client parses the same source syntax as `w1 estimate`."""
from __future__ import annotations

import importlib

_HOME = {
    "ArraySource": ".base",
    "FiniteSource": ".base",
    "SampleSource": ".base",
    "SourceError": ".errors",
    "GeneratorSource": ".generators",
    "DEFAULT_CACHE_BYTES": ".images",
    "open_source": ".opener",
    "SCHEMES": ".spec",
    "SourceSpec": ".spec",
    "TORCHVISION_DATASETS": ".vision",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'training.sources' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
