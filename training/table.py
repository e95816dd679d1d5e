"""The one result table: `w1 estimate`, `w1 submit --wait` and `w1 jobs show` all print it.

Torch-free (pydantic + rich). A result from a server whose W1Result has fields this client does
not know is still shown: unknown fields are dropped before validation, and a result that does not
validate at all falls back to its scalar fields."""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from training.result import W1Result

# Job fields shown above the result, in this order.
JOB_FIELDS = ("status", "label", "batch_id", "attempts", "created_at", "started_at", "finished_at", "error")


def result_rows(result: W1Result | dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of a result (a W1Result or its JSON form)."""
    if isinstance(result, W1Result):
        return result.summary_rows()
    known = {k: v for k, v in result.items() if k in W1Result.model_fields}
    try:
        return W1Result.model_validate(known).summary_rows()
    except ValidationError:
        return [(key, fmt(value)) for key, value in result.items()
                if isinstance(value, (int, float, str, bool)) or value is None]


def result_table(result: W1Result | dict[str, Any] | None, job: dict[str, Any] | None = None):
    """A rich Table: the job's state (when given) and then the result's summary rows."""
    from rich.table import Table

    title = "Wasserstein-1 estimate" if job is None else f"job {job.get('id')}"
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    if job is not None:
        for key in JOB_FIELDS:
            if job.get(key) is not None:
                table.add_row(key.replace("_", " "), fmt(job[key]))
        progress = job.get("progress") or {}
        if progress and result is None:
            table.add_row("progress", f"step {progress.get('step')}/{progress.get('total')}, "
                                      f"validation estimate {fmt(progress.get('estimate'))}")
    if result:
        for label, value in result_rows(result):
            table.add_row(label, value)
    return table


def fmt(value: Any) -> str:
    """A value in a table cell: None as "-", floats to 6 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
