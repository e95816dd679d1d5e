"""Client commands of `w1`: `submit`, `jobs list|show|wait|cancel`, `batch`, `datasets`, `generators`.

They only talk HTTP (service.client), so they start fast and never import torch. Progress goes to
stderr, results to stdout, and every failure is one line with a non-zero exit.
"""
from __future__ import annotations

import csv
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TransferSpeedColumn,
)
from rich.table import Table

from service.client import DEFAULT_SERVER, W1Client, W1Error
from service.contracts import JobStatus
from training.table import result_table

STATUSES = tuple(s.value for s in JobStatus)
SUMMARY_FIELDS = ("label", "job_id", "status", "estimate", "ci_low", "ci_high",
                  "certified_lower_bound", "lipschitz_bound", "error")

SOURCES_HELP = """\b
Sources (the same forms as `w1 estimate`):
  real.npz, real.npz#KEY, real.npy   arrays (N,H,W | N,C,H,W | N,H,W,C), uploaded
  images/                     a folder of PNG/JPEG, archived on the fly and uploaded
  images.zip, images.tar.gz   an archive of PNG/JPEG, uploaded
  'builtin:photos?size=32&count=2000'   a built-in set, made here and uploaded
  catalog:NAME                a reference set configured on the server
  torchvision:NAME            the server's catalog entry NAME
  'onnx:gen.onnx?latent=62&dist=uniform&output_range=-1,1'
                              a generator, uploaded with its latent spec
  dataset:ID, generator:ID[:SAMPLES]   something already on the server
An upload is skipped when the server already has a file with the same sha256."""


def _server_options(f: Callable) -> Callable:
    """`--server`/`--token` on every client command, turned into a W1Client, W1Error into one line."""
    @click.option("--server", envvar="W1_SERVER", default=DEFAULT_SERVER, show_default=True,
                  help="API base URL (env W1_SERVER).")
    @click.option("--token", envvar="W1_TOKEN", default=None,
                  help="API key sent as a bearer token (env W1_TOKEN).")
    @functools.wraps(f)
    def wrapper(server: str, token: str | None, **kwargs):
        try:
            with _UploadBar() as bar, W1Client(server, token or "", on_upload=bar.update) as client:
                return f(client, **kwargs)
        except W1Error as exc:
            raise click.ClickException(str(exc)) from None
    return wrapper


def _stderr() -> Console:
    return Console(file=sys.stderr, stderr=True)


def _stdout() -> Console:
    """Tables fit the terminal (COLUMNS when not a terminal; rich's default 80 otherwise)."""
    return Console(file=sys.stdout)


class _UploadBar:
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
                                     DownloadColumn(), TransferSpeedColumn(), console=_stderr())
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

def _print_job(job: dict) -> None:
    _stdout().print(result_table(job.get("result"), job=job))


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
                fields["estimate"] = _fmt(progress["estimate"])
        if status == JobStatus.SUCCEEDED:  # early stopping ends before `total`: show a full bar
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
    if job["status"] != JobStatus.SUCCEEDED:
        reason = f": {job['error']}" if job.get("error") else ""
        raise W1Error(f"job {job['id']} {job['status']}{reason}")


# -- submit ------------------------------------------------------------------------------------

@click.command(epilog=SOURCES_HELP)
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

    Prints the job id, or with --wait the result (the table `w1 estimate` prints). Options are
    those of `w1 estimate`, as -o KEY=VALUE (e.g. -o steps=2000 -o space.channels=3 is written
    -o 'space={channels: 3}'); a generator draws -o eval_samples=N samples (default 6400).
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
    table.add_column("id", min_width=max([len(j["id"]) for j in items] + [2]))  # ids are never cut
    for column in ("status", "label", "progress", "estimate", "created"):
        table.add_column(column, overflow="fold")
    for job in items:
        progress = job.get("progress") or {}
        result = job.get("result") or {}
        step = f"{progress.get('step')}/{progress.get('total')}" if progress else "-"
        estimate = result.get("estimate", progress.get("estimate"))
        table.add_row(job["id"], job["status"], job.get("label") or "-", step, _fmt(estimate),
                      _fmt(job.get("created_at"))[:16].replace("T", " "))
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
        raise W1Error(f"{path}: 'real' must be a source string (a file, folder, catalog:NAME, ...)")
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
            raise W1Error(f"{where}.source: missing (a file, folder, onnx:PATH, dataset:ID, generator:ID[:samples], ...)")
        label = str(item.get("label") or Path(source.split("?")[0].rstrip("/")).stem)
        if label in labels:
            raise W1Error(f"{where}.label: {label!r} is used twice")
        labels.add(label)
        parsed.append((label, source))
    return {"real": spec["real"], "fakes": parsed, "options": options}


def _spec_source(spec_path: Path, text: str) -> str:
    """Local files, folders and ONNX models in a spec are relative to the spec's folder."""
    from training.sources.errors import SourceError
    from training.sources.spec import SourceSpec

    if text.partition(":")[0] in ("catalog", "dataset", "generator"):
        return text
    try:
        spec = SourceSpec.parse(text)
    except SourceError:
        return text  # resolve_source reports it
    if spec.kind in ("file", "onnx") and not Path(spec.path).expanduser().is_absolute():
        if spec.kind == "file" and ":" not in text and "?" not in text:
            return str(spec_path.parent / text)
        return str(spec.model_copy(update={"path": str(spec_path.parent / spec.path)}))
    return text


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


def batch_table(batch_id: str, rows: list[dict[str, Any]]) -> Table:
    """The batch summary; ids and labels fold rather than being cut when the terminal is narrow."""
    table = Table(title=f"batch {batch_id}")
    table.add_column("label", overflow="fold")
    table.add_column("job id", min_width=max([len(r["job_id"] or "") for r in rows] + [2]))
    table.add_column("status", overflow="fold")
    for name in ("W1 estimate", "interval", "certified lower bound", "Lipschitz bound"):
        table.add_column(name, justify="right", overflow="fold")
    for row in rows:
        interval = "-" if row["ci_low"] is None else f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
        table.add_row(_fmt(row["label"]), _fmt(row["job_id"]), _fmt(row["status"]), _fmt(row["estimate"]),
                      interval, _fmt(row["certified_lower_bound"]), _fmt(row["lipschitz_bound"]))
    return table


@click.command(epilog=SOURCES_HELP)
@click.argument("spec_file", metavar="SPEC.yaml")
@click.option("--out", "prefix", help="Write PREFIX.csv and PREFIX.json (default: beside the spec).")
@click.option("--timeout", type=float, help="Give up waiting after this many seconds.")
@click.option("--poll-interval", type=float, default=1.0, show_default=True, hidden=True)
@_server_options
def batch(client: W1Client, spec_file: str, prefix: str | None, timeout: float | None,
          poll_interval: float) -> None:
    """Estimate W1 for many fakes against one real set and write a summary.

    \b
    SPEC.yaml (relative paths are relative to the spec's folder):
      real: catalog:cifar10            # or any source below
      options: {steps: 2000}           # estimator options for every job
      fakes:
        - {label: epoch10, source: samples/epoch10.npz}
        - {label: epoch20, source: samples/epoch20/}
        - {label: final, source: "onnx:gen.onnx?latent=62"}
        - {label: again, source: "generator:GEN_ID:10000"}
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
    _stdout().print(batch_table(batch_id, rows))

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
    failed = [row["label"] for row in rows if row["status"] != JobStatus.SUCCEEDED]
    if failed:
        raise W1Error(f"batch {batch_id}: {len(failed)} of {len(rows)} jobs did not succeed "
                      f"({', '.join(map(str, failed))})")



# -- datasets and generators ---------------------------------------------------------------------

def _items_table(title: str, items: list[dict], columns: tuple[str, ...]) -> Table:
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
                cells.append("x".join(map(_fmt, value)) if column.endswith("shape") else ",".join(map(_fmt, value)))
            elif column == "created_at" and value:
                cells.append(str(value)[:16].replace("T", " "))
            elif column == "size_bytes" and isinstance(value, int):
                cells.append(f"{value / 1e6:.1f} MB" if value >= 100_000 else f"{value / 1e3:.1f} kB")
            else:
                cells.append(_fmt(value))
        table.add_row(*cells)
    return table


def _show(item: dict, title: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(item, indent=2))
        return
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in item.items():
        table.add_row(key.replace("_", " "), ", ".join(map(_fmt, value)) if isinstance(value, list) else _fmt(value))
    _stdout().print(table)


@click.group()
def datasets() -> None:
    """Sample sets uploaded to the server (by `w1 submit`, `w1 batch` or `datasets add`)."""


@datasets.command("add", epilog=SOURCES_HELP)
@click.argument("source")
@_server_options
def add_dataset(client: W1Client, source: str) -> None:
    """Upload samples (a file, a folder or builtin:...) and print the dataset id."""
    ref = client.resolve_source(source)
    if "dataset" not in ref:
        raise W1Error(f"{source}: not a sample set to upload ({next(iter(ref))} source)")
    click.echo(ref["dataset"])


@datasets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the datasets as JSON.")
@_server_options
def list_datasets(client: W1Client, as_json: bool) -> None:
    """The datasets on the server, newest first."""
    items = client.list_datasets()
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    _stdout().print(_items_table("datasets", items, ("id", "name", "format", "count", "shape", "size_bytes",
                                                    "created_at")))


@datasets.command("show")
@click.argument("dataset_id")
@click.option("--json", "as_json", is_flag=True, help="Print the dataset as JSON.")
@_server_options
def show_dataset(client: W1Client, dataset_id: str, as_json: bool) -> None:
    """One dataset: name, format, sample count, shape, sha256."""
    _show(client.get_dataset(dataset_id), f"dataset {dataset_id}", as_json)


@datasets.command("delete")
@click.argument("dataset_id")
@_server_options
def delete_dataset(client: W1Client, dataset_id: str) -> None:
    """Delete a dataset (refused while an unfinished job uses it)."""
    client.delete_dataset(dataset_id)
    click.echo(f"{dataset_id}: deleted")


@click.group()
def generators() -> None:
    """ONNX generators uploaded to the server (drawn from by generator:ID[:SAMPLES] sources)."""


@generators.command("add")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--latent", help="Latent shape, e.g. 62 or 100,1,1 [default: read from the model's input].")
@click.option("--dist", type=click.Choice(["normal", "uniform"]), default="normal", show_default=True,
              help="Latent distribution: standard normal or uniform on [-1, 1].")
@click.option("--output-range", default="-1,1", show_default=True, metavar="LOW,HIGH",
              help="The range of the generator's output (tanh: -1,1; sigmoid: 0,1).")
@click.option("--name", help="A name to find it by [default: the file name].")
@_server_options
def add_generator(client: W1Client, model: str, latent: str | None, dist: str, output_range: str,
                  name: str | None) -> None:
    """Upload an ONNX generator and print its id (use it as generator:ID:SAMPLES).

    \b
    Example:
      w1 generators add gen.onnx --latent 62 --dist uniform
      w1 submit real.npz generator:gen_1234:10000 --wait
    """
    from service.client import sources

    path = Path(model)
    if not path.is_file():
        raise W1Error(f"{path}: no such file")
    try:
        shape = latent or sources.onnx_latent(path)
    except sources.SourceProblem as exc:
        raise W1Error(str(exc)) from None
    click.echo(client.upload_generator(path, shape, dist, output_range, name=name)["id"])


@generators.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the generators as JSON.")
@_server_options
def list_generators(client: W1Client, as_json: bool) -> None:
    """The generators on the server, newest first."""
    items = client.list_generators()
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    _stdout().print(_items_table("generators", items, ("id", "name", "latent_shape", "latent_distribution",
                                                      "output_range", "output_shape", "created_at")))


@generators.command("show")
@click.argument("generator_id")
@click.option("--json", "as_json", is_flag=True, help="Print the generator as JSON.")
@_server_options
def show_generator(client: W1Client, generator_id: str, as_json: bool) -> None:
    """One generator: its latent specification and output shape."""
    _show(client.get_generator(generator_id), f"generator {generator_id}", as_json)
