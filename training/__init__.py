"""Sample sources, the input space, and the W1 estimator (`estimate_w1`, `w1 estimate`)."""
from training.estimator import estimate_w1
from training.options import EstimateOptions
from training.result import Cancelled, ProgressEvent, W1Result
from training.sources import SampleSource, SourceError, SourceSpec, open_source
from training.space import InputSpace

__all__ = ["InputSpace", "open_source", "SampleSource", "SourceError", "SourceSpec", "EstimateOptions",
           "estimate_w1", "W1Result", "ProgressEvent", "Cancelled"]
