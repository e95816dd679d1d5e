"""Client commands of `w1`: `submit`, `jobs list|show|wait|cancel`, `datasets`, `generators`
(`batch` is in service/client/batch.py).

They only talk HTTP (service.client), so they start fast and never import torch. Progress goes to
stderr, results to stdout, and every failure is one line with a non-zero exit.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml

from service.client import sources
from service.client.client import DEFAULT_SERVER, W1Client, W1Error
from service.client.display import (
    UploadBar, finish, jobs_table, print_items, print_job, show_item, stdout, wait_with_progress,
)
from service.contracts import JobStatus

STATUSES = tuple(s.value for s in JobStatus)
DATASET_COLUMNS = ("id", "name", "format", "count", "shape", "size_bytes", "created_at")
GENERATOR_COLUMNS = ("id", "name", "latent_shape", "latent_distribution", "output_range", "output_shape", "created_at")

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


def server_options(f: Callable) -> Callable:
    """`--server`/`--token` on every client command, turned into a W1Client, W1Error into one line."""
    @click.option("--server", envvar="W1_SERVER", default=DEFAULT_SERVER, show_default=True,
                  help="API base URL (env W1_SERVER).")
    @click.option("--token", envvar="W1_TOKEN", default=None,
                  help="API key sent as a bearer token (env W1_TOKEN).")
    @functools.wraps(f)
    def wrapper(server: str, token: str | None, **kwargs):
        try:
            with UploadBar() as bar, W1Client(server, token or "", on_upload=bar.update) as client:
                return f(client, **kwargs)
        except W1Error as exc:
            raise click.ClickException(str(exc)) from None
    return wrapper


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
@server_options
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
    finish(wait_with_progress(client, job, timeout, poll_interval), as_json)


# -- jobs --------------------------------------------------------------------------------------

@click.group()
def jobs() -> None:
    """List, inspect, follow and cancel jobs."""


@jobs.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only jobs with this status.")
@click.option("--batch", "batch_id", help="Only the jobs of this batch.")
@click.option("--label", help="Only jobs with this label.")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True,
              help="Newest jobs to list (the server answers at most 500 per request).")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@server_options
def list_jobs(client: W1Client, status: str | None, batch_id: str | None, label: str | None,
              limit: int, as_json: bool) -> None:
    """The newest jobs first."""
    items = client.list_jobs(status=status, batch_id=batch_id, label=label, limit=limit)["items"]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    stdout().print(jobs_table(items))


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@click.option("--download", type=click.Path(file_okay=False), metavar="DIR",
              help="Also save the job's artifacts (curve, plot, trained critic) into DIR.")
@server_options
def show(client: W1Client, job_id: str, as_json: bool, download: str | None) -> None:
    """Details of one job, with its result when it has one."""
    job = client.get_job(job_id)
    if as_json:
        click.echo(json.dumps(job, indent=2))
    else:
        print_job(job)
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
@server_options
def wait(client: W1Client, job_id: str, timeout: float | None, poll_interval: float,
         as_json: bool) -> None:
    """Follow a job until it ends; exits non-zero when it failed or was cancelled."""
    job = client.get_job(job_id)
    finish(wait_with_progress(client, job, timeout, poll_interval), as_json)


@jobs.command("cancel")
@click.argument("job_id")
@server_options
def cancel(client: W1Client, job_id: str) -> None:
    """Ask the server to cancel a job (best effort: a running job stops at its next step)."""
    job = client.cancel_job(job_id)
    click.echo(f"{job['id']}: cancel requested ({job['status']})")


# -- datasets and generators ---------------------------------------------------------------------

@click.group()
def datasets() -> None:
    """Sample sets uploaded to the server (by `w1 submit`, `w1 batch` or `datasets add`)."""


@datasets.command("add", epilog=SOURCES_HELP)
@click.argument("source")
@server_options
def add_dataset(client: W1Client, source: str) -> None:
    """Upload samples (a file, a folder or builtin:...) and print the dataset id."""
    ref = client.resolve_source(source)
    if "dataset" not in ref:
        raise W1Error(f"{source}: not a sample set to upload ({next(iter(ref))} source)")
    click.echo(ref["dataset"])


@datasets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the datasets as JSON.")
@server_options
def list_datasets(client: W1Client, as_json: bool) -> None:
    """The datasets on the server, newest first."""
    print_items("datasets", client.list_datasets(), DATASET_COLUMNS, as_json)


@datasets.command("show")
@click.argument("dataset_id")
@click.option("--json", "as_json", is_flag=True, help="Print the dataset as JSON.")
@server_options
def show_dataset(client: W1Client, dataset_id: str, as_json: bool) -> None:
    """One dataset: name, format, sample count, shape, sha256."""
    show_item(client.get_dataset(dataset_id), f"dataset {dataset_id}", as_json)


@datasets.command("delete")
@click.argument("dataset_id")
@server_options
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
@server_options
def add_generator(client: W1Client, model: str, latent: str | None, dist: str, output_range: str,
                  name: str | None) -> None:
    """Upload an ONNX generator and print its id (use it as generator:ID:SAMPLES).

    \b
    Example:
      w1 generators add gen.onnx --latent 62 --dist uniform
      w1 submit real.npz generator:gen_1234:10000 --wait
    """
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
@server_options
def list_generators(client: W1Client, as_json: bool) -> None:
    """The generators on the server, newest first."""
    print_items("generators", client.list_generators(), GENERATOR_COLUMNS, as_json)


@generators.command("show")
@click.argument("generator_id")
@click.option("--json", "as_json", is_flag=True, help="Print the generator as JSON.")
@server_options
def show_generator(client: W1Client, generator_id: str, as_json: bool) -> None:
    """One generator: its latent specification and output shape."""
    show_item(client.get_generator(generator_id), f"generator {generator_id}", as_json)
