"""The w1 client: a Python library (:class:`W1Client`) and the `w1` client commands (`submit`,
`jobs`, `batch`, `datasets`, `generators`), over HTTP only.

It imports the shared contracts (service.contracts) and the torch-free training modules, never the
server or torch: `pip install w1-service` alone runs it (pyproject.toml's import-linter contracts)."""
from service.client.client import DEFAULT_SERVER, W1Client, W1Error, parse_source
from service.contracts import FINAL_STATUSES, JobStatus

__all__ = ["W1Client", "W1Error", "JobStatus", "FINAL_STATUSES", "parse_source", "DEFAULT_SERVER"]
