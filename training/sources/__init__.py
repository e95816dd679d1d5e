"""Sample sources: finite sets and generators, all yielding float32 (n, C, H, W) in [0, 1]."""

from .base import ArraySource, FiniteSource, SampleSource, SourceError
from .generators import GeneratorSource
from .images import DEFAULT_CACHE_BYTES
from .opener import open_source
from .spec import SCHEMES, SourceSpec
from .vision import TORCHVISION_DATASETS

__all__ = [
    "ArraySource",
    "DEFAULT_CACHE_BYTES",
    "FiniteSource",
    "GeneratorSource",
    "SCHEMES",
    "SampleSource",
    "SourceError",
    "SourceSpec",
    "TORCHVISION_DATASETS",
    "open_source",
]
