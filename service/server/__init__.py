"""The w1 job service: the FastAPI app (app.py, routers/, deps.py), the domain operations on the
job table (domain.py), uploads (storage.py) and their limits (limits.py), the Celery queue, worker
and reconciler, and `w1 serve|worker|keys` (cli.py). Needs the `[server]` extra."""
