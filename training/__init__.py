"""Sample sources, the input space, and the W1 estimator (`estimate_w1`, `w1 estimate`)."""
from training.options import EstimateOptions
from training.result import Cancelled, ProgressEvent, W1Result
from training.space import InputSpace
from training.estimator import estimate_w1

try:  # the sources package lands separately; export it when present
    from training.sources import SampleSource, SourceError, SourceSpec, open_source
except ImportError:  # pragma: no cover
    pass

__all__ = ["InputSpace", "open_source", "SampleSource", "SourceError", "SourceSpec", "EstimateOptions",
           "estimate_w1", "W1Result", "ProgressEvent", "Cancelled"]
