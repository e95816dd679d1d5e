"""Series batches (issue 13): the items of a batch whose mode is "series" run in order on one worker, each
item's critic warm-started from the previous item's (training.series.SeriesRunner). Independent batches
are untouched: their jobs run in parallel on any workers.

- Only the first item is sent at submission. The worker that runs an item claims the next ones itself,
  in order; a delivery for an item whose predecessors have not all finished is a no-op, and the
  reconciler sends only a series' current item (`waiting`).
- The chain's state lives in the shared data directory, <data_dir>/batches/<id>/checkpoint: the finished
  items and the carried critic (series.pt) and the current item's critics (item-K/), so the attempt the
  reconciler starts after a worker died resumes at the current item with the carried critic.
- Cancelling the running item (or the batch) stops the chain: the items not yet run are cancelled, the
  finished ones keep their results. A failed item is skipped; the next starts from the last finished critic.
- After every item, series.json, series.csv and series.png are written to <data_dir>/batches/<id>/artifacts
  from the items' stored results (the job table is the system of record)."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, aliased

from service.server.db import ACTIVE, CANCELLED, QUEUED, SUCCEEDED, Batch, Job, now
from service.server.settings import Settings

log = logging.getLogger("w1.worker")

SERIES_ARTIFACTS = {"series.json": "application/json", "series.csv": "text/csv", "series.png": "image/png"}


def batch_dir(settings: Settings, batch_id: str) -> Path:
    return settings.data_dir / "batches" / batch_id


def waiting(s: Session, job_ids: list[str]) -> set[str]:
    """The queued series items among `job_ids` whose predecessors have not all finished: not to be sent
    (the worker running the series claims them in turn)."""
    if not job_ids:
        return set()
    item, earlier = aliased(Job), aliased(Job)
    ahead = exists().where(earlier.batch_id == item.batch_id, earlier.seq < item.seq, earlier.status.in_(ACTIVE))
    query = (select(item.id).join(Batch, Batch.id == item.batch_id)
             .where(item.id.in_(job_ids), Batch.mode == "series", ahead))
    return set(s.scalars(query))


def run_if_series(settings: Settings, sessions, job_id: str, attempt) -> bool:
    """Run a series from this item on when the job is a series item (and its turn) and return True; False
    for any other job. `attempt(job_id, estimate)` makes the worker's Attempt of one job."""
    with sessions() as s:
        job = s.scalar(select(Job).where(Job.id == job_id))
        batch = s.get(Batch, job.batch_id) if job is not None and job.batch_id else None
        if batch is None or batch.mode != "series":
            return False
        items = list(s.execute(select(Job.id, Job.status).where(Job.batch_id == batch.id).order_by(Job.seq)))
    ids = [row.id for row in items]
    first = ids.index(job_id)
    if any(row.status in ACTIVE for row in items[:first]):
        log.info("job %s: an earlier item of series %s has not finished; the series' worker runs it in turn",
                 job_id, batch.id)
        return True
    Chain(settings, sessions, batch.id, ids).run_from(first, attempt)
    return True


class Chain:
    """One worker's run of a series: the items from `first` on, with one SeriesRunner carrying the critic."""

    def __init__(self, settings: Settings, sessions, batch_id: str, ids: list[str]):
        self.settings, self.sessions, self.batch_id, self.ids = settings, sessions, batch_id, ids
        self.runner = None

    def run_from(self, first: int, attempt) -> None:
        for index in range(first, len(self.ids)):
            item = attempt(self.ids[index], self.estimate)
            item.run()
            if item.fence is None:  # not claimed: someone else's (stop) or finished, e.g. cancelled (skip)
                if index == first or self._status(self.ids[index]) in ACTIVE:
                    return
                continue
            self.write_artifacts()
            if item.lost or item.orphaned:  # a newer attempt, or the restarted server's workers, take over
                return
            if item.cancel:
                self._cancel_rest(index)
                return

    def estimate(self, attempt, job: Job, real, fake, options):
        """The worker's estimate for one item: the series runner's next item (resumed from the batch's
        checkpoint when an earlier attempt left one)."""
        from training.series import SeriesRunner

        index = self.ids.index(job.id)
        if self.runner is None:
            folder = batch_dir(self.settings, self.batch_id) / "checkpoint"
            self.runner = SeriesRunner(real, options, checkpoint_dir=folder, size=len(self.ids))
        self.runner.progress = lambda event: attempt.progress(event.progress) if event.progress is not None else None
        self.runner.should_stop, self.runner.checkpoint_on_stop = attempt.should_stop, attempt.will_resume
        done = next((it for it in self.runner.items if it.index == index), None)
        if done is not None:  # finished by an attempt that died before storing it
            return done.result
        label = job.label or f"item {index}"
        return self.runner.run_item(fake, label, job.spec.get("step"), index=index).result

    def write_artifacts(self) -> None:
        """series.json / .csv / .png from the stored results of the items that succeeded so far."""
        from training.plot import plot_series
        from training.result import W1Result
        from training.series import WarmStart
        from training.series_result import SeriesResult

        with self.sessions() as s:
            stored = list(s.scalars(select(Job.result).where(Job.batch_id == self.batch_id, Job.status == SUCCEEDED)
                                    .order_by(Job.seq)))
        results = [W1Result.model_validate(r) for r in stored if r and r.get("series")]
        if not results:
            return
        series = SeriesResult.of(results, dataclasses.asdict(WarmStart()))
        folder = batch_dir(self.settings, self.batch_id) / "artifacts"
        folder.mkdir(parents=True, exist_ok=True)
        writers = {"series.json": lambda p: p.write_text(series.to_json()),
                   "series.csv": lambda p: p.write_text(series.csv_text()),
                   "series.png": lambda p: plot_series(series, p)}
        for name, write in writers.items():
            tmp = folder / f".{name}.tmp{Path(name).suffix}"
            try:
                write(tmp)
                tmp.replace(folder / name)
            except Exception:  # an artifact is never worth failing the series for
                log.exception("series %s: artifact %s could not be written", self.batch_id, name)

    def _status(self, job_id: str) -> str | None:
        with self.sessions() as s:
            return s.scalar(select(Job.status).where(Job.id == job_id))

    def _cancel_rest(self, index: int) -> None:
        with self.sessions() as s:
            seq, label = s.execute(select(Job.seq, Job.label).where(Job.id == self.ids[index])).one()
            n = s.execute(update(Job).where(Job.batch_id == self.batch_id, Job.seq > seq, Job.status == QUEUED)
                          .values(status=CANCELLED, cancel_requested=True, finished_at=now(),
                                  error=f"cancelled: the series stopped when item {label or index} was cancelled"))
            s.commit()
        log.info("series %s cancelled at item %d; %d item(s) not run", self.batch_id, index, n.rowcount)


def read_artifact(settings: Settings, batch_id: str, name: str) -> Path | None:
    path = batch_dir(settings, batch_id) / "artifacts" / name
    return path if name in SERIES_ARTIFACTS and path.is_file() else None


def summary_fields(result: dict | None) -> dict:
    """The series columns of a batch's summary row, from a stored result."""
    series = (result or {}).get("series") or {}
    ci = (result or {}).get("certified_ci") or [None, None]
    return {"lower_confidence_bound": (result or {}).get("lower_confidence_bound"), "certified_ci_low": ci[0],
            "certified_ci_high": ci[1], "start": series.get("start"),
            "warm_started": series["start"] == "warm" if series.get("start") else None}

