"""One router per resource: datasets, generators, jobs, batches, operations (health, metrics, catalog)."""
