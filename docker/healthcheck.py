"""Container health checks (exit 0 = healthy); no curl needed in the image.

  healthcheck.py api     GET /healthz on this container's port
  healthcheck.py worker  a Celery ping over the broker answered by this container's worker
"""
import os
import socket
import sys
import urllib.request


def api() -> bool:
    url = f"http://127.0.0.1:{os.environ.get('W1_PORT', '8000')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return response.status == 200
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return False


def worker() -> bool:
    from service.server.queue import make_celery
    from service.server.settings import get_settings

    host = socket.gethostname()
    replies = make_celery(get_settings()).control.ping(timeout=3.0) or []
    names = [name for reply in replies for name in reply]
    # `w1 worker` names itself w1@<host>:<pid> (or W1_WORKER_NAME).
    if any(name.split("@", 1)[-1].split(":")[0] == host for name in names):
        return True
    print(f"no worker on {host} answered a ping (answers: {names or 'none'})", file=sys.stderr)
    return False


if __name__ == "__main__":
    checks = {"api": api, "worker": worker}
    if len(sys.argv) != 2 or sys.argv[1] not in checks:
        sys.exit(f"usage: healthcheck.py {'|'.join(checks)}")
    sys.exit(0 if checks[sys.argv[1]]() else 1)
