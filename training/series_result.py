"""What a checkpoint series returns: one W1Result per item and the series view (the curve a researcher
tracks over a run). Plain pydantic models, torch-free, so the service and its clients read them too."""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from training.result import ProgressEvent, Selection, SeriesPosition, W1Result, describe_space

CSV_COLUMNS = ("index", "label", "step", "start", "lower_confidence_bound", "certified_lower_bound",
               "certified_ci_low", "certified_ci_high", "certified_stderr", "estimate", "stderr", "lipschitz_bound",
               "steps_run", "train_steps", "train_s", "total_s")


class SeriesItem(SeriesPosition):
    """One checkpoint of a series: its position and how its critic started (SeriesPosition, also stored in
    its W1Result's `series`), its numbers (the same as its W1Result's) and the W1Result itself."""

    lower_confidence_bound: float = Field(description="W1 >= this with the series' confidence (one-sided).")
    certified_lower_bound: float
    certified_ci: tuple[float, float]
    certified_stderr: float = Field(description="Standard error of certified_lower_bound (stderr / L).")
    estimate: float
    stderr: float
    lipschitz_bound: float
    steps_run: int = Field(description="Training steps of the critic this item reports with, on this item.")
    train_s: float
    total_s: float
    result: W1Result

    @classmethod
    def of(cls, result: W1Result) -> "SeriesItem":
        """The series view of an item's result (which carries its SeriesPosition)."""
        if result.series is None:
            raise ValueError("the result is not an item of a series (its `series` is unset)")
        return cls(**result.series.model_dump(), lower_confidence_bound=result.lower_confidence_bound,
                   certified_lower_bound=result.certified_lower_bound, certified_ci=result.certified_ci,
                   certified_stderr=result.stderr / result.lipschitz_bound, estimate=result.estimate,
                   stderr=result.stderr, lipschitz_bound=result.lipschitz_bound, steps_run=result.steps_run,
                   train_s=result.timings.train_s, total_s=result.timings.total_s,
                   result=result)

    def csv_row(self) -> dict[str, Any]:
        lo, hi = self.certified_ci
        row = self.model_dump(include=set(CSV_COLUMNS))
        step = self.step if self.step is not None else ""
        return {**row, "certified_ci_low": lo, "certified_ci_high": hi, "step": step}


class SeriesResult(BaseModel):
    """W1 over the checkpoints of one model against one real set. `items` in the order they ran (a warm
    start carries each critic to the next item); `critic_choice` says which critic family ran the series
    and why (critic='auto' chooses once, on the first item's validation split)."""

    model_config = ConfigDict(extra="forbid")

    items: list[SeriesItem] = Field(default_factory=list)
    critic: str = Field(description="The critic family every item used.")
    critic_choice: str = ""
    selection: Selection | None = Field(None, description="How critic='auto' chose on the first item.")
    warm_start: dict[str, Any] | None = Field(None, description="The warm schedule (None: every item cold).")
    space: dict[str, Any] = Field(default_factory=dict)
    confidence: float = 0.95
    total_s: float = 0.0
    notes: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, results: list[W1Result], warm_start: dict | None, total_s: float = 0.0) -> "SeriesResult":
        """The series view of its items' results (in the order they ran); the first one's `selection`
        says how critic='auto' chose the family."""
        items = [SeriesItem.of(r) for r in results]
        first = results[0] if results else None
        family = (first.selection.chosen if first and first.selection else
                  (first.critic_spec or {}).get("name", "") if first else "")
        if first is not None and first.selection is not None:
            choice = (f"critic='auto' chose {family} on the first item's validation split "
                      f"({first.selection.reason}); the family is kept for every item of the series")
        else:
            choice = f"{family}, as named in the options" if family else ""
        return cls(items=items, critic=family, critic_choice=choice, selection=first.selection if first else None,
                   warm_start=warm_start, space=first.space if first else {},
                   confidence=first.confidence if first else 0.95, total_s=total_s, notes=_series_notes(items))

    @property
    def results(self) -> list[W1Result]:
        return [item.result for item in self.items]

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> "SeriesResult":
        return cls.model_validate_json(text)

    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for item in self.items:
            writer.writerow(item.csv_row())
        return out.getvalue()

    def title(self) -> str:
        return f"W1 over checkpoints — space: {describe_space(self.space)}" if self.space else "W1 over checkpoints"


def steps_from_names(names: Sequence[str]) -> list[int]:
    """Checkpoint steps from file names: the last number in each name's stem (ckpt_012000.onnx -> 12000)."""
    steps = []
    for name in names:
        stem = Path(str(name).split("?")[0].rstrip("/")).name.split(".")[0]
        numbers = re.findall(r"\d+", stem)
        if not numbers:
            raise ValueError(f"{name}: no step number in the file name (expected e.g. ckpt_012000.onnx)")
        steps.append(int(numbers[-1]))
    return steps


def default_label(fake, index: int) -> str:
    if isinstance(fake, (str, Path)):
        text = str(fake)
        return Path(text.split("?")[0].split(":", 1)[-1].rstrip("/")).name or text
    if hasattr(fake, "describe") and hasattr(fake, "label"):  # a SampleSource
        return str(fake.label)
    return f"item {index}"


def _series_notes(items: list[SeriesItem]) -> list[str]:
    notes = []
    fallbacks = [it.label for it in items if it.start == "fallback"]
    if fallbacks:
        notes.append(f"{len(fallbacks)} item(s) fell back to a cold start (their warm critic validated below a "
                     f"short cold trial): {', '.join(fallbacks)}")
    steps = [it.step for it in items if it.step is not None]
    if steps and steps != sorted(steps):
        notes.append("The checkpoint steps are not in increasing order; each item started from the one before "
                     "it in the order given.")
    return notes


class SeriesEvent(BaseModel):
    """A report while a series runs: an item started, trained (`progress`: its estimate's ProgressEvent)
    or finished (`item`)."""

    kind: Literal["started", "training", "finished"]
    index: int
    label: str
    items: int = Field(description="How many items the series has (0 when open-ended, as for W1Monitor).")
    progress: ProgressEvent | None = None
    item: SeriesItem | None = None


def series_rows(items: list[SeriesItem] | list[dict], confidence: float = 0.95) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the series table (the CLI, the client and the service print the same)."""
    pct = f"{confidence:.0%}"
    header = ["#", "label", "step", f"W1 >= ({pct} LCB)", "certified", f"certified {pct} interval", "start",
              "steps", "train s"]
    rows = []
    for item in items:
        it = item if isinstance(item, SeriesItem) else SeriesItem.model_validate(item)
        lo, hi = it.certified_ci
        rows.append([str(it.index), it.label, "-" if it.step is None else str(it.step),
                     f"{it.lower_confidence_bound:.4f}", f"{it.certified_lower_bound:.4f}", f"[{lo:.4f}, {hi:.4f}]",
                     it.start, f"{it.steps_run}/{it.train_steps}", f"{it.train_s:.1f}"])
    return header, rows


def series_table(items: list, confidence: float = 0.95, series: "SeriesResult | dict | None" = None):
    """A rich Table of the series (items so far); with the SeriesResult, its space and critic below."""
    from rich.table import Table

    header, rows = series_rows(items, confidence)
    table = Table(title="W1 over checkpoints")
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i in (0, 2, 3, 4, 7, 8) else "left")
    for row in rows:
        table.add_row(*row)
    if series is not None:
        data = series if isinstance(series, dict) else series.model_dump(mode="json")
        space = describe_space(data["space"]) if data.get("space") else ""
        table.caption = "; ".join(filter(None, [f"space: {space}" if space else "", data.get("critic_choice", "")]))
    return table
