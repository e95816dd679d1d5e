"""Client commands of `w1`: `submit`, `jobs list|show|wait|cancel`, `batch`.

They only talk HTTP (service.client), so they start fast and never import torch. Progress goes to
stderr, results to stdout, and every failure is one line with a non-zero exit.
"""
from __future__ import annotations

import csv
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.client import DEFAULT_SERVER, FINAL_STATUSES, W1Client, W1Error

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
SUMMARY_FIELDS = ("label", "job_id", "status", "estimate", "ci_low", "ci_high",
                  "certified_lower_bound", "lipschitz_bound", "error")
# Result keys shown first, in this order; other small fields follow; bulky ones only in --json.
RESULT_FIRST = ("estimate", "stderr", "ci", "confidence", "certified_lower_bound", "certified_ci",
                "lipschitz_bound", "orthogonality_error", "space", "samples", "steps_run")
RESULT_HIDDEN = {"curve", "lipschitz_layers", "sources", "options", "versions"}


def _server_options(f: Callable) -> Callable:
    """`--server`/`--token` on every client command, turned into a W1Client, W1Error into one line."""
    @click.option("--server", envvar="W1_SERVER", default=DEFAULT_SERVER, show_default=True,
                  help="API base URL (env W1_SERVER).")
    @click.option("--token", envvar="W1_TOKEN", default=None,
                  help="API key sent as a bearer token (env W1_TOKEN).")
    @functools.wraps(f)
    def wrapper(server: str, token: str | None, **kwargs):
        try:
            with W1Client(server, token or "") as client:
                return f(client, **kwargs)
        except W1Error as exc:
            raise click.ClickException(str(exc)) from None
    return wrapper


def _stderr() -> Console:
    return Console(file=click.get_text_stream("stderr"), stderr=True)


def _stdout() -> Console:
    return Console(file=click.get_text_stream("stdout"), width=120)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# -- options -----------------------------------------------------------------------------------

def _load_options(pairs: tuple[str, ...], json_file: str | None) -> dict[str, Any]:
    """--options-json first, then each --option KEY=VALUE (values parsed as YAML scalars/lists)."""
    options: dict[str, Any] = {}
    if json_file:
        try:
            options = json.loads(Path(json_file).read_text())
        except OSError as exc:
            raise W1Error(f"{json_file}: cannot read ({exc.strerror})") from None
        except ValueError as exc:
            raise W1Error(f"{json_file}: not valid JSON ({exc})") from None
        if not isinstance(options, dict):
            raise W1Error(f"{json_file}: expected a JSON object of options")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise W1Error(f"--option {pair!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


# -- display -----------------------------------------------------------------------------------

def _result_rows(result: dict) -> list[tuple[str, str]]:
    """Scalar result fields (and one level of nested scalars), the important ones first."""
    rows: list[tuple[str, str]] = []
    keys = [k for k in RESULT_FIRST if k in result]
    keys += sorted(k for k in result if k not in RESULT_FIRST and k not in RESULT_HIDDEN)
    for key in keys:
        value = result[key]
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", _fmt(v)) for k, v in value.items()
                     if not isinstance(v, (dict, list)) or (isinstance(v, list) and len(v) <= 4)]
        elif isinstance(value, list):
            if len(value) <= 4 and all(not isinstance(v, (dict, list)) for v in value):
                rows.append((key, "[" + ", ".join(_fmt(v) for v in value) + "]"))
        else:
            rows.append((key, _fmt(value)))
    return rows


def _print_job(job: dict) -> None:
    out = _stdout()
    table = Table(title=f"job {job['id']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in ("status", "label", "batch_id", "attempts", "created_at", "started_at",
                "finished_at", "error"):
        if job.get(key) is not None:
            table.add_row(key, _fmt(job[key]))
    progress = job.get("progress") or {}
    if progress and job["status"] not in FINAL_STATUSES:
        table.add_row("progress", f"{progress.get('step')}/{progress.get('total')} "
                                  f"estimate {_fmt(progress.get('estimate'))}")
    for key, value in _result_rows(job.get("result") or {}):
        table.add_row(key, value)
    out.print(table)


class _JobProgress:
    """A rich progress bar per job, fed by SSE events or polled jobs."""

    def __init__(self):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[steps]}"),
                                 TextColumn("{task.fields[status]}"),
                                 TextColumn("W1≈{task.fields[estimate]}"), TimeElapsedColumn(),
                                 console=_stderr())
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def update(self, job_id: str, description: str, *, status: str | None = None,
               progress: dict | None = None) -> None:
        if job_id not in self.tasks:
            self.tasks[job_id] = self.progress.add_task(description, total=None, status="queued",
                                                        estimate="-", steps="")
        task_id = self.tasks[job_id]
        fields: dict[str, Any] = {}
        if status:
            fields["status"] = status
        if progress and progress.get("step") is not None:
            step, total = progress["step"], progress.get("total") or None
            fields.update(completed=step, total=total, steps=f"{step}/{total or '?'}")
            if progress.get("estimate") is not None:
                fields["estimate"] = _fmt(progress["estimate"])
        if status == "succeeded":  # early stopping ends before `total`: show a full bar
            task = self.progress.tasks[task_id]
            fields["completed"] = fields["total"] = task.total or 1
        self.progress.update(task_id, **fields)

    def job(self, job: dict, description: str | None = None) -> None:
        self.update(job["id"], description or job.get("label") or job["id"], status=job["status"],
                    progress=job.get("progress"))


def _wait_with_progress(client: W1Client, job: dict, timeout: float | None,
                        poll_interval: float) -> dict:
    with _JobProgress() as bars:
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


def _finish(job: dict, as_json: bool) -> None:
    """Print the final job; exit non-zero unless it succeeded."""
    if as_json:
        click.echo(json.dumps(job, indent=2))
    else:
        _print_job(job)
    if job["status"] != "succeeded":
        reason = f": {job['error']}" if job.get("error") else ""
        raise W1Error(f"job {job['id']} {job['status']}{reason}")


# -- submit ------------------------------------------------------------------------------------

@click.command()
@click.argument("real")
@click.argument("fake")
@click.option("-o", "--option", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="An estimator option (repeatable), e.g. -o steps=2000.")
@click.option("--options-json", type=click.Path(dir_okay=False),
              help="A JSON file of estimator options (--option overrides it).")
@click.option("--label", help="A label to find the job by.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds.")
@click.option("--poll-interval", type=float, default=1.0, show_default=True, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@_server_options
def submit(client: W1Client, real: str, fake: str, option_pairs: tuple[str, ...],
           options_json: str | None, label: str | None, wait: bool, timeout: float | None,
           poll_interval: float, as_json: bool) -> None:
    """Estimate W1 between REAL and FAKE on the server.

    REAL and FAKE are local sample files (.npz, .npy, .zip, .tar, .tgz; uploaded first),
    catalog:NAME, dataset:ID or generator:ID[:samples]. Prints the job id, or with --wait the result.
    """
    options = _load_options(option_pairs, options_json)
    job = client.submit_job(real, fake, options=options, label=label)
    if not wait:
        click.echo(json.dumps(job, indent=2) if as_json else job["id"])
        return
    _finish(_wait_with_progress(client, job, timeout, poll_interval), as_json)


# -- jobs --------------------------------------------------------------------------------------

@click.group()
def jobs() -> None:
    """List, inspect, follow and cancel jobs."""


@jobs.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only jobs with this status.")
@click.option("--batch", "batch_id", help="Only the jobs of this batch.")
@click.option("--label", help="Only jobs with this label.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@_server_options
def list_jobs(client: W1Client, status: str | None, batch_id: str | None, label: str | None,
              limit: int, as_json: bool) -> None:
    """The newest jobs first."""
    items = client.list_jobs(status=status, batch_id=batch_id, label=label, limit=limit)["items"]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    table = Table()
    for column in ("id", "status", "label", "progress", "estimate", "created"):
        table.add_column(column)
    for job in items:
        progress = job.get("progress") or {}
        result = job.get("result") or {}
        step = f"{progress.get('step')}/{progress.get('total')}" if progress else "-"
        estimate = result.get("estimate", progress.get("estimate"))
        table.add_row(job["id"], job["status"], job.get("label") or "-", step, _fmt(estimate),
                      _fmt(job.get("created_at")))
    _stdout().print(table)


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@click.option("--download", type=click.Path(file_okay=False), metavar="DIR",
              help="Also save the job's artifacts (curve, plot, trained critic) into DIR.")
@_server_options
def show(client: W1Client, job_id: str, as_json: bool, download: str | None) -> None:
    """Details of one job, with its result when it has one."""
    job = client.get_job(job_id)
    if as_json:
        click.echo(json.dumps(job, indent=2))
    else:
        _print_job(job)
    if download:
        folder = Path(download)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise W1Error(f"{folder}: cannot create ({exc.strerror})") from None
        for name in client.list_artifacts(job_id):
            click.echo(f"saved {client.download_artifact(job_id, name, folder / name)}", err=True)


@jobs.command("wait")
@click.argument("job_id")
@click.option("--timeout", type=float, help="Give up after this many seconds.")
@click.option("--poll-interval", type=float, default=1.0, show_default=True, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print the final job as JSON.")
@_server_options
def wait(client: W1Client, job_id: str, timeout: float | None, poll_interval: float,
         as_json: bool) -> None:
    """Follow a job until it ends; exits non-zero when it failed or was cancelled."""
    job = client.get_job(job_id)
    _finish(_wait_with_progress(client, job, timeout, poll_interval), as_json)


@jobs.command("cancel")
@click.argument("job_id")
@_server_options
def cancel(client: W1Client, job_id: str) -> None:
    """Ask the server to cancel a job (best effort: a running job stops at its next step)."""
    job = client.cancel_job(job_id)
    click.echo(f"{job['id']}: cancel requested ({job['status']})")


# -- batch -------------------------------------------------------------------------------------

SPEC_KEYS = {"real", "fakes", "options"}
FAKE_KEYS = {"label", "source"}


def load_batch_spec(path: Path) -> dict[str, Any]:
    """Read and validate a batch spec; every error names the file and the key."""
    try:
        spec = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise W1Error(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise W1Error(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(spec, dict):
        raise W1Error(f"{path}: expected a mapping with keys real, fakes, options")
    unknown = sorted(set(map(str, spec)) - SPEC_KEYS)
    if unknown:
        raise W1Error(f"{path}: unknown key {unknown[0]!r} (expected {', '.join(sorted(SPEC_KEYS))})")
    for key in ("real", "fakes"):
        if key not in spec:
            raise W1Error(f"{path}: missing key {key!r}")
    if not isinstance(spec["real"], str) or not spec["real"].strip():
        raise W1Error(f"{path}: 'real' must be a source string (a file, catalog:NAME, dataset:ID)")
    options = spec.get("options") or {}
    if not isinstance(options, dict):
        raise W1Error(f"{path}: 'options' must be a mapping of estimator options")
    fakes = spec["fakes"]
    if not isinstance(fakes, list) or not fakes:
        raise W1Error(f"{path}: 'fakes' must be a non-empty list of {{label, source}}")
    labels: set[str] = set()
    parsed = []
    for i, item in enumerate(fakes):
        where = f"{path}: fakes[{i}]"
        if not isinstance(item, dict):
            raise W1Error(f"{where}: expected a mapping with keys label, source")
        unknown = sorted(set(map(str, item)) - FAKE_KEYS)
        if unknown:
            raise W1Error(f"{where}: unknown key {unknown[0]!r} (expected label, source)")
        source = item.get("source")
        if not isinstance(source, str) or not source.strip():
            raise W1Error(f"{where}.source: missing (a file, dataset:ID or generator:ID[:samples])")
        label = str(item.get("label") or Path(source).stem)
        if label in labels:
            raise W1Error(f"{where}.label: {label!r} is used twice")
        labels.add(label)
        parsed.append((label, source))
    return {"real": spec["real"], "fakes": parsed, "options": options}


def _spec_source(spec_path: Path, text: str) -> str:
    """Local files in a spec are relative to the spec's folder."""
    kind = text.partition(":")[0]
    if kind in ("catalog", "dataset", "generator") or Path(text).is_absolute():
        return text
    return str(spec_path.parent / text)


def _summary(batch: dict) -> list[dict[str, Any]]:
    """One row per fake: the server's summary joined with job ids and errors."""
    jobs_by_label = {job.get("label"): job for job in batch["jobs"]}
    rows = []
    for item in batch.get("summary") or [{"label": job.get("label")} for job in batch["jobs"]]:
        job = jobs_by_label.get(item.get("label"), {})
        result = job.get("result") or {}
        ci = result.get("ci") or (None, None)
        row = {field: item.get(field, result.get(field)) for field in SUMMARY_FIELDS}
        row["ci_low"] = row["ci_low"] if row["ci_low"] is not None else ci[0]
        row["ci_high"] = row["ci_high"] if row["ci_high"] is not None else ci[1]
        row.update(label=item.get("label"), job_id=job.get("id"),
                   status=item.get("status", job.get("status")), error=job.get("error"))
        rows.append(row)
    return rows


@click.command()
@click.argument("spec_file", metavar="SPEC.yaml")
@click.option("--out", "prefix", help="Write PREFIX.csv and PREFIX.json (default: beside the spec).")
@click.option("--timeout", type=float, help="Give up waiting after this many seconds.")
@click.option("--poll-interval", type=float, default=1.0, show_default=True, hidden=True)
@_server_options
def batch(client: W1Client, spec_file: str, prefix: str | None, timeout: float | None,
          poll_interval: float) -> None:
    """Estimate W1 for many fakes against one real set and write a summary.

    \b
    SPEC.yaml:
      real: catalog:cifar10            # or a file, dataset:ID
      options: {steps: 2000}           # estimator options for every job
      fakes:
        - {label: epoch10, source: samples/epoch10.npz}
        - {label: final, source: generator:GEN_ID:10000}
    """
    spec_path = Path(spec_file)
    spec = load_batch_spec(spec_path)
    resolved: dict[str, dict] = {}  # one upload per distinct source

    def source(text: str) -> dict:
        if text not in resolved:
            resolved[text] = client.resolve_source(_spec_source(spec_path, text))
        return resolved[text]

    created = client.submit_batch(source(spec["real"]),
                                  [(label, source(src)) for label, src in spec["fakes"]],
                                  options=spec["options"])
    batch_id = created["id"]
    click.echo(f"batch {batch_id}: {len(created['jobs'])} jobs", err=True)
    try:
        with _JobProgress() as bars:
            for job in created["jobs"]:
                bars.job(job)
            final = client.wait_batch(batch_id, timeout=timeout, poll_interval=poll_interval,
                                      on_update=lambda b: [bars.job(job) for job in b["jobs"]])
    except KeyboardInterrupt:
        raise W1Error(f"stopped waiting; batch {batch_id} goes on at {client.server}") from None

    rows = _summary(final)
    table = Table(title=f"batch {batch_id}")
    for field in SUMMARY_FIELDS[:-1]:
        table.add_column(field)
    for row in rows:
        table.add_row(*(_fmt(row[field]) for field in SUMMARY_FIELDS[:-1]))
    _stdout().print(table)

    base = Path(prefix) if prefix else spec_path.with_suffix("")
    csv_path, json_path = Path(f"{base}.csv"), Path(f"{base}.json")
    try:
        with csv_path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        json_path.write_text(json.dumps({"batch_id": batch_id, "server": client.server,
                                         "spec": str(spec_path), "summary": rows,
                                         "jobs": final["jobs"]}, indent=2))
    except OSError as exc:
        raise W1Error(f"{exc.filename}: cannot write ({exc.strerror})") from None
    click.echo(f"wrote {csv_path} and {json_path}", err=True)
    failed = [row["label"] for row in rows if row["status"] != "succeeded"]
    if failed:
        raise W1Error(f"batch {batch_id}: {len(failed)} of {len(rows)} jobs did not succeed "
                      f"({', '.join(map(str, failed))})")

