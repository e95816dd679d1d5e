"""`w1 series REAL FAKE...`: W1 of every checkpoint of a model against one real set, here, each item's
critic warm-started from the previous one (training.series). The table fills in as items finish."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from training.cli import SOURCES_HELP, _Command, build_options, check_output_paths, command_errors, estimate_options

SERIES_HELP = """\b
Examples:
  w1 series real.npz ckpt_001000.npz ckpt_002000.npz ckpt_003000.npz --steps-from-names --plot curve.png
  w1 series builtin:digits 'onnx:g_05000.onnx?latent=62' 'onnx:g_10000.onnx?latent=62' --steps-from-names
  w1 series real.npz a/ b/ c/ --labels early,mid,late --csv=series.csv --json=series.json
  w1 series catalog:cifar10 run/ckpt_*.onnx --steps-from-names --server https://w1.example --plot w1.png
\b
"""


def _list(text: str | None, what: str, count: int, cast=str) -> list | None:
    if text is None:
        return None
    values = [v.strip() for v in text.split(",")]
    if len(values) != count:
        raise ValueError(f"--{what} has {len(values)} values for {count} fakes")
    try:
        return [cast(v) for v in values]
    except ValueError:
        raise ValueError(f"--{what} expects {count} comma-separated whole numbers, got {text!r}") from None


def item_names(fakes, labels: str | None, steps_from_names: bool, checkpoint_steps: str | None,
               ) -> tuple[list[str] | None, list[int] | None]:
    """The items' labels (None: from the file names) and checkpoint steps (None: not given)."""
    if steps_from_names and checkpoint_steps:
        raise ValueError("give --steps-from-names or --checkpoint-steps, not both")
    from training.series_result import steps_from_names as parse_steps

    steps = parse_steps(fakes) if steps_from_names else _list(checkpoint_steps, "checkpoint-steps", len(fakes), int)
    return _list(labels, "labels", len(fakes)), steps


@click.command("series", cls=_Command, epilog=SERIES_HELP + SOURCES_HELP.split("\b\nExamples:")[0],
               context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("real")
@click.argument("fakes", nargs=-1, required=True)
@click.option("--labels", default=None, metavar="A,B,...", help="A label per FAKE [default: the file names].")
@click.option("--steps-from-names", is_flag=True,
              help="The checkpoints' training steps from the FAKE names: the last number (ckpt_012000.onnx -> 12000).")
@click.option("--checkpoint-steps", default=None, metavar="N,N,...",
              help="The checkpoints' training steps, one per FAKE (the x axis of the plot).")
@click.option("--warm-start/--cold", default=True,
              help="Start each item's critic from the previous item's (falling back to a cold start when a short "
                   "cold trial validates higher), or every item cold. [default: --warm-start]")
@estimate_options
@click.option("--json", "json_out", default=None, metavar="[=FILE]",
              help="Write the series as JSON: --json alone to stdout, --json=FILE to FILE.")
@click.option("--csv", "csv_out", default=None, metavar="FILE", help="Write one row per item as CSV.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write W1's lower confidence bound and certified interval against the checkpoint step (PNG).")
@click.option("--quiet", "-q", is_flag=True, help="No live table or progress bar: the table once at the end.")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def series(real, fakes, labels, steps_from_names, checkpoint_steps, warm_start, options_file, critic_option,
           value_range, size, channels, resize, checkpoint_dir, allow_torchscript, fid_mode, json_out, csv_out, plot,
           quiet, debug, **fields):
    """W1 between REAL and every FAKE (checkpoints of one model, in training order).

    The first item is a cold estimate (critic 'auto' chooses the critic family there, once); each
    later item starts from the previous item's critic and trains at most 375 steps (a cosine decay from
    the estimate's learning rate or a third of it: the first warm item tries both and the series keeps
    the better; the carried critic is kept unless training improves it on the validation split), and
    falls back to a cold start when a 25-step cold trial validates higher.
    Every item reports its held-out lower confidence bound and certified interval, as `w1 estimate`
    does. Options are those of `w1 estimate`
    (--steps is the critic's training steps; the checkpoints' steps are --checkpoint-steps or
    --steps-from-names).
    """
    with command_errors(debug, "interrupted (with --checkpoint-dir, the same command resumes)"):
        check_output_paths(json=json_out, csv=csv_out, plot=plot)
        for fake in fakes:  # `--json out.json`: a bare --json (stdout) followed by a file that is not a fake
            if json_out == "-" and fake.endswith(".json") and not Path(fake).exists():
                raise ValueError(f"{fake}: no such file or folder; to write the series as JSON there, attach "
                                 f"the value: --json={fake}")
        names, steps = item_names(fakes, labels, steps_from_names, checkpoint_steps)
        options, _ = build_options(options_file, critic_option, value_range, size, channels, resize, fid_mode, fields)
        _run(real, list(fakes), names, steps, warm_start, options, checkpoint_dir, allow_torchscript, json_out,
             csv_out, plot, quiet)


def _console(stderr: bool):
    """The terminal's width; piped or logged, as wide as the table needs (rich would fit it to 80 columns)."""
    import os

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    console = Console(file=stream, stderr=stderr)
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return Console(file=stream, stderr=stderr, width=10_000)


def _run(real, fakes, labels, steps, warm_start, options, checkpoint_dir, allow_torchscript, json_out, csv_out,
         plot, quiet):
    from rich.console import Group
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from training.series_result import series_table

    out = _console(stderr=json_out == "-")
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[steps]}"),
                   TimeElapsedColumn(), console=out)
    task = bar.add_task("opening sources", total=None, steps="")
    finished: list = []
    live = Live(Group(series_table(finished, options.confidence), bar), console=out, auto_refresh=False,
                transient=True) if not quiet else None

    def progress(event):
        if event.kind == "finished":
            finished.append(event.item)
            bar.update(task, description=f"item {event.index + 1}/{event.items} done")
            live.update(Group(series_table(finished, options.confidence), bar), refresh=True)
        elif event.kind == "started":
            bar.update(task, description=f"item {event.index + 1}/{event.items}: {event.label}", total=None,
                       completed=0, steps="")
            live.refresh()
        elif event.progress is not None:
            p = event.progress
            bar.update(task, description=f"item {event.index + 1}/{event.items}: {event.label} ({p.phase})",
                       total=p.total, completed=p.step, steps=f"{p.step}/{p.total}")
            live.refresh()

    from training.data import open_for_space
    from training.series import estimate_series  # imports torch

    # every source is opened before the first item trains: a bad file fails now, named, not after hours
    real_src = open_for_space(real, options.space, allow_torchscript=allow_torchscript)
    fake_srcs = [open_for_space(f, options.space, allow_torchscript=allow_torchscript) for f in fakes]
    from training.series_result import default_label

    labels = labels or [default_label(f, i) for i, f in enumerate(fakes)]
    if live is not None:
        with live:
            result = estimate_series(real_src, fake_srcs, labels, steps, options, warm_start=warm_start,
                                     progress=progress, checkpoint_dir=checkpoint_dir)
    else:
        result = estimate_series(real_src, fake_srcs, labels, steps, options, warm_start=warm_start,
                                 checkpoint_dir=checkpoint_dir)
    out.print(series_table(result.items, result.confidence, result))
    for note in result.notes:
        out.print(f"note: {note}", markup=False, highlight=False)
    if json_out == "-":
        click.echo(result.to_json())
    elif json_out:
        Path(json_out).write_text(result.to_json())
    if csv_out:
        Path(csv_out).write_text(result.csv_text())
    if plot:
        from training.plot import plot_series

        plot_series(result, plot)
