"""Sample sources, the input space, and the W1 estimator (`estimate_w1`, `w1 estimate`).

Names are imported on first use (training/_lazy.py says why), so `import training.options` or
`training.result` (the torch-free contracts the client and the service share) never loads torch."""
from __future__ import annotations

from training._lazy import lazy_exports

import training.threads  # noqa: F401  records OpenMP's wait policy before torch loads it (training.threads)

_HOME = {
    "estimate_w1": "training.estimator",
    "estimate_series": "training.series",
    "WarmStart": "training.series",
    "W1Monitor": "training.monitor",
    "SeriesResult": "training.series_result",
    "SeriesItem": "training.series_result",
    "EstimateOptions": "training.options",
    "W1Result": "training.result",
    "ProgressEvent": "training.result",
    "Cancelled": "training.result",
    "InputSpace": "training.space",
    "open_source": "training.sources",
    "SampleSource": "training.sources",
    "SourceError": "training.sources",
    "SourceSpec": "training.sources",
}
__all__ = sorted(_HOME)
__getattr__, __dir__ = lazy_exports(__name__, _HOME)
