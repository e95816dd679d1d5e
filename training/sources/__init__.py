"""Sample sources: finite sets and generators, all yielding float32 (n, C, H, W) in [0, 1].

Names are imported on first use (training/_lazy.py says why), so `training.sources.spec` (parsing
a source string) and `SourceError` work without torch: the client parses the same source syntax as
`w1 estimate`."""
from __future__ import annotations

from training._lazy import lazy_exports

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
__getattr__, __dir__ = lazy_exports(__name__, _HOME)
