"""`w1 batch`: many fakes against one real set on the server, a summary table and CSV/JSON."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import click
import yaml
from rich.table import Table

from service.client.cli import SOURCES_HELP, server_options
from service.client.client import W1Client, W1Error
from service.client.display import JobProgress, stdout
from service.client.series import follow_series, report_series
from service.contracts import SERVER_KINDS, JobStatus
from training.table import fmt

# the lower confidence bound leads, as in `w1 series`: it is the number to rank checkpoints by
SUMMARY_FIELDS = ("label", "job_id", "status", "lower_confidence_bound", "estimate", "ci_low", "ci_high",
                  "certified_lower_bound", "lipschitz_bound", "error")
SPEC_KEYS = {"real", "fakes", "options", "mode"}
FAKE_KEYS = {"label", "source", "step"}
MODES = ("independent", "series")


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
    mode = spec.get("mode", "independent")
    if mode not in MODES:
        raise W1Error(f"{path}: 'mode' must be one of {', '.join(MODES)}, got {mode!r}")
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
            raise W1Error(f"{where}: unknown key {unknown[0]!r} (expected label, source, step)")
        source = item.get("source")
        if not isinstance(source, str) or not source.strip():
            raise W1Error(f"{where}.source: missing (a file, folder, onnx:PATH, dataset:ID, generator:ID[:samples], ...)")
        label = str(item.get("label") or Path(source.split("?")[0].rstrip("/")).stem)
        if label in labels:
            raise W1Error(f"{where}.label: {label!r} is used twice")
        labels.add(label)
        step = item.get("step")
        if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
            raise W1Error(f"{where}.step: a checkpoint's training step is a whole number >= 0, got {step!r}")
        parsed.append((label, source, step))
    return {"real": spec["real"], "fakes": parsed, "options": options, "mode": mode}


def _spec_source(spec_path: Path, text: str) -> str:
    """Local files, folders and ONNX models in a spec are relative to the spec's folder."""
    from training.sources.errors import SourceError
    from training.sources.spec import SourceSpec

    if text.partition(":")[0] in SERVER_KINDS:
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


def _confidence(batch: dict) -> float | None:
    """The one-sided confidence of the jobs' lower bounds (every job of a batch has the same options)."""
    return next((job["result"]["confidence"] for job in batch["jobs"]
                 if (job.get("result") or {}).get("confidence") is not None), None)


def batch_table(batch_id: str, rows: list[dict[str, Any]], confidence: float | None = None) -> Table:
    """The batch summary, led by the lower confidence bound (headed as in `w1 series`); ids and
    labels fold rather than being cut when the terminal is narrow."""
    table = Table(title=f"batch {batch_id}")
    table.add_column("label", overflow="fold")
    table.add_column("job id", min_width=max([len(r["job_id"] or "") for r in rows] + [2]))
    table.add_column("status", overflow="fold")
    lcb = f"W1 >= ({confidence:.0%} LCB)" if confidence is not None else "W1 >= (LCB)"
    for name in (lcb, "W1 estimate", "interval", "certified lower bound", "Lipschitz bound"):
        table.add_column(name, justify="right", overflow="fold")
    for row in rows:
        interval = "-" if row["ci_low"] is None else f"[{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"
        table.add_row(fmt(row["label"]), fmt(row["job_id"]), fmt(row["status"]), fmt(row["lower_confidence_bound"]),
                      fmt(row["estimate"]), interval, fmt(row["certified_lower_bound"]), fmt(row["lipschitz_bound"]))
    return table


@click.command(epilog=SOURCES_HELP)
@click.argument("spec_file", metavar="SPEC.yaml")
@click.option("--out", "prefix", help="Write PREFIX.csv and PREFIX.json (default: beside the spec).")
@click.option("--timeout", type=float, help="Give up waiting after this many seconds.")
@click.option("--series", "as_series", is_flag=True,
              help="The fakes are checkpoints in training order: one worker runs them in that order, each critic "
                   "warm-started from the previous item's (as `mode: series` in the spec); writes PREFIX.png too.")
@click.option("--poll-interval", type=float, default=1.0, show_default=True, hidden=True)
@server_options
def batch(client: W1Client, spec_file: str, prefix: str | None, timeout: float | None, as_series: bool,
          poll_interval: float) -> None:
    """Estimate W1 for many fakes against one real set and write a summary.

    \b
    SPEC.yaml (relative paths are relative to the spec's folder):
      real: catalog:cifar10            # or any source below
      options: {steps: 2000}           # estimator options for every job
      mode: series                     # optional: checkpoints in order, warm-started (or --series)
      fakes:
        - {label: epoch10, source: samples/epoch10.npz, step: 10}   # step: optional, the plot's x
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

    mode = "series" if as_series else spec["mode"]
    created = client.submit_batch(source(spec["real"]), [(label, source(src)) for label, src, _ in spec["fakes"]],
                                  options=spec["options"], mode=mode, steps=[step for *_, step in spec["fakes"]])
    batch_id = created["id"]
    click.echo(f"batch {batch_id}: {len(created['jobs'])} jobs" + (" (a series)" if mode == "series" else ""), err=True)
    base = Path(prefix) if prefix else spec_path.with_suffix("")
    if mode == "series":
        final, series = follow_series(client, batch_id, timeout=timeout, poll_interval=poll_interval)
        click.echo(f"writing {base}.csv, {base}.json and {base}.png", err=True)
        report_series(client, final, series, json_out=f"{base}.json", csv_out=f"{base}.csv", plot=f"{base}.png")
        return
    try:
        with JobProgress() as bars:
            for job in created["jobs"]:
                bars.job(job)
            final = client.wait_batch(batch_id, timeout=timeout, poll_interval=poll_interval,
                                      on_update=lambda b: [bars.job(job) for job in b["jobs"]])
    except KeyboardInterrupt:
        raise W1Error(f"stopped waiting; batch {batch_id} goes on at {client.server}") from None

    rows = _summary(final)
    stdout().print(batch_table(batch_id, rows, _confidence(final)))

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
