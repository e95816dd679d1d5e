"""`w1 series --server` and `w1 batch --series`: a checkpoint series run on the server (a batch whose mode
is "series": one worker, the items in order, warm-started critics), followed here. Torch-free."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.text import Text

from service.client.client import W1Client, W1Error
from service.client.display import stderr, stdout
from service.contracts import FINAL_STATUSES
from training.series_result import SeriesResult, series_table


def follow_series(client: W1Client, batch_id: str, *, quiet: bool = False, to_stderr: bool = False,
                  poll_interval: float = 1.0, timeout: float | None = None) -> tuple[dict, SeriesResult | None]:
    """Poll a series batch until every item is final, its table filling in as items finish; returns the
    batch and its SeriesResult (None when no item succeeded)."""
    console = stderr() if to_stderr else stdout()
    series, done, deadline = None, -1, None if timeout is None else time.monotonic() + timeout

    def view(batch: dict):
        running = next((j for j in batch["jobs"] if j["status"] == "running"), None)
        finished = sum(j["status"] in FINAL_STATUSES for j in batch["jobs"])
        line = f"series batch {batch_id}: {finished}/{len(batch['jobs'])} items final"
        if running is not None and running.get("progress"):
            p = running["progress"]
            line += f"; {running['label']}: step {p.get('step')}/{p.get('total')}"
        table = series_table(series.items if series else [], series.confidence if series else 0.95, series)
        return Group(table, Text(line))

    try:
        with Live(console=console, auto_refresh=False, transient=True) as live:
            while True:
                batch = client.get_batch(batch_id)
                succeeded = sum(j["status"] == "succeeded" for j in batch["jobs"])
                if succeeded != done:
                    done, found = succeeded, client.get_series(batch_id)
                    series = SeriesResult.model_validate(found) if found else series
                if not quiet:
                    live.update(view(batch), refresh=True)
                if all(j["status"] in FINAL_STATUSES for j in batch["jobs"]):
                    return batch, series
                if deadline is not None and time.monotonic() > deadline:
                    raise W1Error(f"{client.server}: series batch {batch_id} not finished after {timeout:g} s")
                time.sleep(poll_interval)
    except KeyboardInterrupt:
        raise W1Error(f"stopped following; series batch {batch_id} goes on at {client.server} "
                      f"(POST /v1/batches/{batch_id}/cancel stops it)") from None


def report_series(client: W1Client, batch: dict, series: SeriesResult | None, *, json_out: str | None = None,
                  csv_out: str | None = None, plot: str | None = None) -> None:
    """The final table and notes, the outputs asked for (from the batch's artifacts), and an error naming
    the items that did not succeed."""
    console = stderr() if json_out == "-" else stdout()
    if series is not None:
        console.print(series_table(series.items, series.confidence, series))
        for note in series.notes:
            console.print(f"note: {note}", markup=False, highlight=False)
    outputs: dict[str, Any] = {"series.csv": csv_out, "series.png": plot}
    if json_out == "-" and series is not None:
        print(series.to_json())
    elif json_out:
        outputs["series.json"] = json_out
    for name, dest in outputs.items():
        if dest and series is not None:
            client.download_batch_artifact(batch["id"], name, Path(dest))
    failed = [f"{j['label']} ({j['status']}{': ' + j['error'] if j.get('error') else ''})"
              for j in batch["jobs"] if j["status"] != "succeeded"]
    if failed:
        raise W1Error(f"series batch {batch['id']}: {len(failed)} of {len(batch['jobs'])} items did not succeed: "
                      + "; ".join(failed))


def run_series(client: W1Client, real: str, fakes: list[str], labels: list[str], steps: list[int] | None,
               options: dict, *, json_out: str | None, csv_out: str | None, plot: str | None, quiet: bool) -> None:
    """`w1 series --server`: submit the series, follow it, report it."""
    created = client.submit_batch(real, list(zip(labels, fakes)), options=options, mode="series", steps=steps)
    stderr().print(f"series batch {created['id']}: {len(created['jobs'])} items on {client.server}",
                   markup=False, highlight=False)
    batch, series = follow_series(client, created["id"], quiet=quiet, to_stderr=json_out == "-")
    report_series(client, batch, series, json_out=json_out, csv_out=csv_out, plot=plot)

