"""How the client commands show things: tables on stdout, progress bars on stderr.

Tables go through one Console (:func:`stdout`); the result table is training.table's, the same
one `w1 estimate` prints."""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TransferSpeedColumn,
)
from rich.table import Table

from service.client.client import W1Client, W1Error
from service.contracts import JobStatus
from training.table import fmt, result_table


def stderr() -> Console:
    return Console(file=sys.stderr, stderr=True)


# wide enough for any table: piped or logged, a table is as wide as its columns need
UNLIMITED = 10_000


def stdout() -> Console:
    """Tables fit the terminal (or COLUMNS when set); in a pipe or a log they keep every column
    whole, where rich would otherwise fit them to 80 columns and fold or drop some."""
    console = Console(file=sys.stdout)
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return Console(file=sys.stdout, width=UNLIMITED)


class UploadBar:
    """Upload progress on stderr: one bar per file, stopped when the file is sent (so a job's
    progress bars can follow)."""

    def __init__(self):
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.name: str | None = None

    def update(self, name: str, sent: int, total: int) -> None:
        if self.progress is None:
            if sent >= total and sent > 0 and self.name == name:
                return  # the final empty read of a file already shown
            self.progress = Progress(TextColumn("uploading {task.description}"), BarColumn(),
                                     DownloadColumn(), TransferSpeedColumn(), console=stderr())
            self.progress.start()
            self.task = self.progress.add_task(name, total=total)
            self.name = name
        self.progress.update(self.task, completed=sent)
        if sent >= total:
            self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def print_job(job: dict) -> None:
    stdout().print(result_table(job.get("result"), job=job))


class JobProgress:
    """A rich progress bar per job, fed by SSE events or polled jobs."""

    def __init__(self):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[steps]}"),
                                 TextColumn("{task.fields[status]}"),
                                 TextColumn("W1≈{task.fields[estimate]}"), TimeElapsedColumn(),
                                 console=stderr())
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def update(self, job_id: str, description: str, *, status: str | None = None,
               progress: dict | None = None) -> None:
        if job_id not in self.tasks:
            self.tasks[job_id] = self.progress.add_task(description, total=None, status=JobStatus.QUEUED.value,
                                                        estimate="-", steps="")
        task_id = self.tasks[job_id]
        fields: dict[str, Any] = {}
        if status:
            fields["status"] = status
        if progress and progress.get("step") is not None:
            step, total = progress["step"], progress.get("total") or None
            fields.update(completed=step, total=total, steps=f"{step}/{total or '?'}")
            if progress.get("estimate") is not None:
                fields["estimate"] = fmt(progress["estimate"])
        if status == JobStatus.SUCCEEDED:  # early stopping ends before `total`: show a full bar
            task = self.progress.tasks[task_id]
            fields["completed"] = fields["total"] = task.total or 1
        self.progress.update(task_id, **fields)

    def job(self, job: dict, description: str | None = None) -> None:
        self.update(job["id"], description or job.get("label") or job["id"], status=job["status"],
                    progress=job.get("progress"))


def wait_with_progress(client: W1Client, job: dict, timeout: float | None,
                        poll_interval: float) -> dict:
    with JobProgress() as bars:
        bars.job(job)

        def on_update(event: str, data: Any) -> None:
            if event == "progress" and isinstance(data, dict):
                bars.update(job["id"], job.get("label") or job["id"], progress=data)
            elif isinstance(data, dict) and "status" in data:
                bars.job(data, job.get("label") or job["id"])

        try:
            return client.wait_job(job["id"], on_update=on_update, timeout=timeout,
                                   poll_interval=poll_interval)
        except KeyboardInterrupt:
            raise W1Error(f"stopped waiting; job {job['id']} goes on at {client.server}") from None


def finish(job: dict, as_json: bool) -> None:
    """Print the final job; exit non-zero unless it succeeded."""
    if as_json:
        click.echo(json.dumps(job, indent=2))
    else:
        print_job(job)
    if job["status"] != JobStatus.SUCCEEDED:
        reason = f": {job['error']}" if job.get("error") else ""
        raise W1Error(f"job {job['id']} {job['status']}{reason}")



def items_table(title: str, items: list[dict], columns: tuple[str, ...]) -> Table:
    """Datasets or generators; ids are never cut, other columns fold."""
    table = Table(title=title)
    for column in columns:
        width = max([len(str(i.get(column))) for i in items] + [2]) if column == "id" else None
        table.add_column(column.replace("_", " "), overflow="fold", min_width=width)
    for item in items:
        cells = []
        for column in columns:
            value = item.get(column)
            if isinstance(value, list):
                cells.append("x".join(map(fmt, value)) if column.endswith("shape") else ",".join(map(fmt, value)))
            elif column == "created_at" and value:
                cells.append(str(value)[:16].replace("T", " "))
            elif column == "size_bytes" and isinstance(value, int):
                cells.append(f"{value / 1e6:.1f} MB" if value >= 100_000 else f"{value / 1e3:.1f} kB")
            else:
                cells.append(fmt(value))
        table.add_row(*cells)
    return table


def print_items(title: str, items: list[dict], columns: tuple[str, ...], as_json: bool) -> None:
    """`w1 datasets list`, `w1 generators list`: the items as JSON, or as a table of ``columns``."""
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    stdout().print(items_table(title, items, columns))


def show_item(item: dict, title: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(item, indent=2))
        return
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in item.items():
        table.add_row(key.replace("_", " "), ", ".join(map(fmt, value)) if isinstance(value, list) else fmt(value))
    stdout().print(table)


def jobs_table(items: list[dict]) -> Table:
    """`w1 jobs list`: one row per job; ids are never cut, other columns fold."""
    table = Table()
    table.add_column("id", min_width=max([len(j["id"]) for j in items] + [2]))
    for column in ("status", "label", "progress", "estimate", "created"):
        table.add_column(column, overflow="fold")
    for job in items:
        progress = job.get("progress") or {}
        result = job.get("result") or {}
        step = f"{progress.get('step')}/{progress.get('total')}" if progress else "-"
        estimate = result.get("estimate", progress.get("estimate"))
        table.add_row(job["id"], job["status"], job.get("label") or "-", step, fmt(estimate),
                      fmt(job.get("created_at"))[:16].replace("T", " "))
    return table
