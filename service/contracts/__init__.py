"""What the server and the client agree on: the REST API's request and response models
(docs/api.md).

Torch-free and FastAPI-free: pydantic, plus the torch-free training models they embed
(``EstimateOptions``, ``W1Result``). So the client installs without the estimator's or the
server's dependencies; the import-linter contracts in pyproject.toml check it."""
from service.contracts.schemas import (
    FINAL_STATUSES,
    ArtifactList,
    BatchCreate,
    BatchCreated,
    BatchFake,
    BatchOut,
    CatalogItem,
    DatasetOut,
    ErrorOut,
    GeneratorForm,
    GeneratorOut,
    Health,
    JobCreate,
    JobList,
    JobOut,
    JobSpec,
    JobStatus,
    Progress,
    Readiness,
    SERVER_KINDS,
    Source,
    SummaryRow,
)

__all__ = [
    "FINAL_STATUSES", "ArtifactList", "BatchCreate", "BatchCreated", "BatchFake", "BatchOut", "CatalogItem",
    "DatasetOut", "ErrorOut", "GeneratorForm", "GeneratorOut", "Health", "JobCreate", "JobList", "JobOut", "JobSpec", "JobStatus",
    "Progress", "Readiness", "SERVER_KINDS", "Source", "SummaryRow",
]
