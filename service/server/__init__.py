"""The w1 job service: the FastAPI app (app.py, routers/, deps.py), the domain operations on the
job table (domain.py), the request checks (limits.py), uploads (uploads/), the errors they raise
(errors.py) and how they are answered (answers.py), the Celery queue, worker and reconciler, and
`w1 serve|worker|keys` (cli.py). Needs the `[server]` extra."""
