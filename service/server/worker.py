"""The ``run_job`` task: claim a job row, train, report, write the result, fenced.

- Claim: a guarded UPDATE (``status='queued'``) that bumps ``attempts`` and the fencing token
  ``fence``; a duplicate or late delivery matches no row and is a no-op.
- Every later write of this attempt is guarded by ``fence = <ours> AND status='running'``. When the
  reconciler presumes us dead it bumps the fence, so a zombie attempt notices (its next heartbeat
  matches nothing), stops training and writes nothing.
- A heartbeat thread writes heartbeat + latest progress about once a second (at most every
  heartbeat_interval_s) and reads the cancel flag; ``should_stop`` answers from those flags and the
  job's time limit, so cancelling stops training within about a second.
- A worker started by `w1 serve` stops its attempt when that server is gone (SIGKILLed) or
  stopping (Ctrl-C, SIGTERM): it checkpoints and puts the job back to ``queued`` for the restarted
  server's workers, instead of training on beside them (its Celery parent only gets a warm-shutdown
  SIGTERM) or being killed mid-step and waiting to be presumed dead.
- Results and errors name sources by dataset / generator id and name, never by server path.
- Checkpoints live in ``<data_dir>/jobs/<id>/checkpoint`` so the next attempt resumes exactly;
  artifacts go to ``<data_dir>/jobs/<id>/attempt-<fence>/artifacts`` and the API serves the
  winning attempt's folder (no race between attempts).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import warnings
from pathlib import Path

from celery.signals import worker_process_init
from sqlalchemy import func, select, update

from service.server.db import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job, make_engine, make_sessionmaker, now
from service.server.processes import die_with_parent
from service.server.queue import TASK_NAME, make_celery
from service.server.settings import Settings, get_settings
from service.server.sources import open_resolved, public_description, resolve

log = logging.getLogger("w1.worker")


def source_names(refs: dict) -> dict[str, dict]:
    """Server path (or catalog spec) -> public identity of a job's resolved sources."""
    return {str(getattr(r.spec, "path", None) or r.spec): r.identity for r in refs.values()}


def scrub(text: str, names: dict[str, dict], settings: Settings) -> str:
    """``text`` with every server path replaced by its public name (and the data dir by a tag):
    an error names "dataset ds_… (name)", never "<data_dir>/uploads/<sha>.npz"."""
    for path, who in sorted(names.items(), key=lambda kv: -len(kv[0])):
        kind = next(iter(who))
        text = text.replace(path, f"{kind} {who[kind]}" + (f" ({who['name']})" if "name" in who else ""))
    return text.replace(str(settings.data_dir), "<data_dir>")


def server_gone() -> bool:
    """True when this worker was started by `w1 serve` (W1_SERVE_PID) and that process is gone or
    stopping (Ctrl-C, SIGTERM: it creates the file W1_SERVE_STOPPING names before it stops its
    workers, so a running job requeues itself at once instead of waiting to be presumed dead).
    The worker's main process (our parent; a prefork child trains) was started by the server, so
    its parent is the server until the server dies."""
    stopping = os.environ.get("W1_SERVE_STOPPING")
    if stopping and os.path.exists(stopping):
        return True
    pid = os.environ.get("W1_SERVE_PID")
    if not pid or not pid.isdigit():
        return False
    try:
        with open(f"/proc/{os.getppid()}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1]) != int(pid)
    except (OSError, ValueError, IndexError):  # no /proc: is the server's pid still alive?
        try:
            os.kill(int(pid), 0)
            return False
        except ProcessLookupError:
            return True
        except OSError:
            return False


class Attempt:
    """One attempt at one job, from claim to the final fenced write."""

    def __init__(self, settings: Settings, sessions, job_id: str, worker: str, estimate=None):
        self.settings, self.sessions, self.job_id, self.worker = settings, sessions, job_id, worker
        self._estimate = estimate  # estimate(attempt, job, real, fake, options) instead of estimate_w1
        self.fence: int | None = None
        self.lost = self.cancel = self.timed_out = self.orphaned = False
        self.latest = None  # latest ProgressEvent as a dict
        self.started_at = None
        self._stop = threading.Event()

    # -- fenced database writes ----------------------------------------------------------------

    def claim(self) -> bool:
        with self.sessions() as s:
            row = s.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.status == QUEUED, Job.cancel_requested.is_(False),
                       Job.attempts < self.settings.max_attempts)
                .values(status=RUNNING, attempts=Job.attempts + 1, fence=Job.fence + 1, heartbeat_at=now(),
                        started_at=func.coalesce(Job.started_at, now()), worker=self.worker, error=None)
                .returning(Job.fence, Job.attempts, Job.started_at)
            ).first()
            s.commit()
        if row is None:
            return False
        self.fence, attempts, self.started_at = row
        log.info("job %s started on %s (attempt %d)", self.job_id, self.worker, attempts)
        return True

    def write(self, **values) -> bool:
        """Update our job row if we still own it; False (and ``lost``) when a newer attempt does."""
        with self.sessions() as s:
            n = s.execute(update(Job).where(Job.id == self.job_id, Job.fence == self.fence,
                                            Job.status == RUNNING).values(**values)).rowcount
            s.commit()
        if n == 0:
            self.lost = True
        return n == 1

    def beat(self) -> None:
        values = {"heartbeat_at": now()}
        if self.latest is not None:
            values["progress"] = self.latest
        if self.write(**values):
            with self.sessions() as s:
                self.cancel = bool(s.scalar(select(Job.cancel_requested).where(Job.id == self.job_id)))

    def _heartbeat_loop(self) -> None:
        interval = max(0.05, min(1.0, self.settings.heartbeat_interval_s))
        while not self._stop.wait(interval):
            if server_gone():
                self.orphaned = True
            try:
                self.beat()
            except Exception:  # a database hiccup must not kill the attempt; the next beat retries
                log.exception("job %s: heartbeat failed", self.job_id)

    # -- callbacks for estimate_w1 -------------------------------------------------------------

    def progress(self, event) -> None:
        self.latest = {"step": event.step, "total": event.total, "estimate": event.estimate,
                       "objective": event.objective, "phase": event.phase, "candidate": event.candidate,
                       "candidate_step": event.candidate_step}

    def stopped_at(self, step: int) -> dict | None:
        """The progress to keep when training stopped at ``step``: the latest report (made every
        few steps) moved to that step, so the job's progress and its error agree."""
        return None if self.latest is None else {**self.latest, "step": step}

    def should_stop(self) -> bool:
        from service.server.db import as_utc

        if (now() - as_utc(self.started_at)).total_seconds() > self.settings.job_time_limit_s:
            self.timed_out = True
        return self.lost or self.cancel or self.timed_out or self.orphaned

    def will_resume(self) -> bool:
        """Whether a stopped attempt's job runs again (requeued because its server went away), so the
        stop must checkpoint first. A cancelled or timed-out job never resumes, and a fenced-off attempt
        must not write into the folder its successor checkpoints in."""
        return self.orphaned and not (self.lost or self.cancel)

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> None:
        if not self.claim():
            log.info("job %s: not claimable (duplicate delivery, cancelled or finished); skipped", self.job_id)
            return
        beater = threading.Thread(target=self._heartbeat_loop, name=f"hb-{self.job_id}", daemon=True)
        beater.start()
        try:
            self._train()
        finally:
            self._stop.set()
            beater.join(timeout=5)

    def estimate(self, job: Job, real, fake, options):
        """The estimate itself: estimate_w1, checkpointing in the job's folder, or the `estimate` this
        attempt was given (a series item: service/server/series.py)."""
        from training.estimator import estimate_w1

        if self._estimate is not None:
            return self._estimate(self, job, real, fake, options)
        ckpt = self.settings.job_dir(self.job_id) / "checkpoint"
        ckpt.mkdir(parents=True, exist_ok=True)
        return estimate_w1(real, fake, options, progress=self.progress, should_stop=self.should_stop,
                           checkpoint_dir=ckpt, checkpoint_on_stop=self.will_resume)

    def _train(self) -> None:
        from training.options import EstimateOptions
        from training.result import Cancelled

        t0 = time.monotonic()
        options = None
        names: dict[str, dict] = {}
        try:
            with self.sessions() as s:
                job = s.scalar(select(Job).where(Job.id == self.job_id))
                refs = {side: resolve(s, self.settings, job.owner, job.spec[side]) for side in ("real", "fake")}
                names = source_names(refs)
                # FID weights come from the server's settings only (the API refuses a job's own).
                options = EstimateOptions.model_validate(job.spec["options"]).model_copy(
                    update={"fid_weights": self.settings.fid_weights})
            real, fake = (open_resolved(refs[side], self.settings) for side in ("real", "fake"))
            result = self.estimate(job, real, fake, options)
        except Cancelled as exc:
            stopped = self.stopped_at(exc.step)  # the error and the job's progress name the same step
            if self.lost:
                log.warning("job %s: attempt fenced off (a newer attempt owns it); stopped", self.job_id)
            elif self.orphaned:
                self.write(status=QUEUED, dispatched_at=None, worker=None, progress=stopped,
                           error=f"attempt stopped at step {exc.step}: its server (w1 serve) is gone or stopping; requeued")
                log.warning("job %s: the server is gone or stopping; checkpointed at step %d and requeued", self.job_id,
                            exc.step)
            elif self.cancel:
                self.write(status=CANCELLED, error=f"cancelled by request at step {exc.step}",
                           finished_at=now(), progress=stopped)
                log.info("job %s cancelled at step %d", self.job_id, exc.step)
            else:
                self.write(status=FAILED, finished_at=now(), progress=stopped,
                           error=f"time limit of {self.settings.job_time_limit_s:g} s exceeded at step {exc.step}")
                log.info("job %s failed: time limit exceeded at step %d", self.job_id, exc.step)
            return
        except Exception as exc:
            log.warning("job %s failed: %s: %s", self.job_id, type(exc).__name__, exc,
                        exc_info=log.isEnabledFor(10))  # the traceback at DEBUG only
            self.write(status=FAILED, error=scrub(job_error(exc, options), names, self.settings),
                       finished_at=now(), progress=self.latest)
            return
        if self.lost:
            return
        folder = self.settings.artifacts_dir(self.job_id, self.fence)
        write_artifacts(result, folder)
        # The last report is the held-out evaluation's, where step = total = the steps of every critic
        # trained (with critic='auto' the trials too): the bar ends full. (result.steps_run counts the
        # chosen critic's steps only: 300 of 400 after a 100-step trial read as unfinished.)
        final = ({**self.latest, "total": self.latest["step"], "estimate": result.estimate} if self.latest else
                 {"step": result.steps_run, "total": result.steps_run, "estimate": result.estimate, "objective": None})
        stored = json.loads(result.to_json(indent=None))
        stored["sources"] = {side: public_description(stored["sources"].get(side, {}), refs[side].identity)
                             for side in ("real", "fake")}
        if self.write(status=SUCCEEDED, result=stored, progress=final,
                      finished_at=now(), run_seconds=Job.run_seconds + (time.monotonic() - t0)):
            log.info("job %s succeeded in %.1f s: W1 estimate %.4f, certified lower bound %.4f", self.job_id,
                     time.monotonic() - t0, result.estimate, result.certified_lower_bound)


def job_error(exc: BaseException, options=None) -> str:
    """The error a failed job reports. CUDA out of memory is the user's to fix (a smaller batch), not
    a crash: the cached GPU memory is released so this worker takes the next job as usual."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        batch = options.resolved().batch_size if options is not None else None
        hint = (f"batch_size {batch} per side did not fit; retry with batch_size {max(1, batch // 2)} or less"
                if batch else "retry with a smaller batch_size")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"CUDA out of memory: {hint} (or a smaller critic width). {first}".strip()
    return f"{type(exc).__name__}: {exc}"


def write_artifacts(result, folder: Path) -> None:
    """curve.json, curve.png, critic.pt and critic.onnx; a failing artifact is logged, not fatal."""
    from training.plot import plot_curve  # one plot for the CLI and the service

    folder.mkdir(parents=True, exist_ok=True)
    curve = [p.model_dump(mode="json") for p in result.curve]
    (folder / "curve.json").write_text(json.dumps(curve, indent=1))
    steps = {
        "curve.png": lambda: plot_curve(result, folder / "curve.png"),
        "critic.pt": lambda: save_state(result.critic, folder / "critic.pt"),
        "critic.onnx": lambda: export_onnx(result, folder / "critic.onnx"),
    }
    for name, make in steps.items():
        try:
            make()
        except Exception:
            log.exception("artifact %s could not be written", name)


def save_state(critic, path: Path) -> None:
    import torch

    if critic is not None:
        torch.save({k: v.detach().cpu() for k, v in critic.state_dict().items()}, path)


def export_onnx(result, path: Path) -> None:
    import torch
    from critics import export_plain

    if result.critic is None:
        return
    plain = export_plain(result.critic).cpu().eval()
    space = result.space
    shape = (1, space["channels"], *space["size"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(plain, (torch.zeros(shape),), str(path), dynamo=False, input_names=["x"],
                          output_names=["f"], dynamic_axes={"x": {0: "n"}, "f": {0: "n"}})


# -- the Celery task -----------------------------------------------------------------------------

settings = get_settings()
app = make_celery(settings)
WORKER_PID = os.getpid()  # imported by `w1 worker` before its pool forks: the training child's parent
_sessions = None


def sessions():
    global _sessions
    if _sessions is None:
        _sessions = make_sessionmaker(make_engine(settings.db_url))
    return _sessions


def worker_name() -> str:
    return os.environ.get("W1_WORKER_NAME") or f"{socket.gethostname()}:{os.getpid()}"


@worker_process_init.connect
def _die_with_parent(**_) -> None:
    """The training child dies with its worker parent, so a killed worker leaves no orphan holding
    a GPU; its heartbeat stops and the reconciler takes over."""
    die_with_parent(signal.SIGKILL, WORKER_PID)


@app.task(name=TASK_NAME, acks_late=True, ignore_result=True)
def run_job(job_id: str) -> None:
    from service.server.series import run_if_series

    def attempt(job: str, estimate=None) -> Attempt:
        return Attempt(settings, sessions(), job, worker_name(), estimate)

    if not run_if_series(settings, sessions(), job_id, attempt):
        attempt(job_id).run()
