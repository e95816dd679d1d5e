"""`w1 estimate REAL FAKE`: the estimator on the command line.

Options are generated from EstimateOptions' fields (their descriptions are the help), so the CLI
and the job service can never disagree on what an option means or defaults to."""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import types
import typing
from pathlib import Path

import click
from pydantic import ValidationError

from training.options import PRESETS, EstimateOptions
from training.table import result_table

# Fields that get hand-made options below instead of generated ones.
_SPECIAL = {"space", "critic_options", "holdout", "validation", "fid"}
# Options whose value is optional: alone they mean this value; a value is attached with '='.
_BARE = {"--json": "-", "--fid": "on"}

SOURCES_HELP = """\b
Sources (REAL and FAKE), quoted for the shell when they hold ? or &:
  real.npz  real.npz#KEY  real.npy     arrays: (N,H,W), (N,C,H,W) or (N,H,W,C); uint8 = 0..255,
                                       floats in [0, 1] or [-1, 1]
  'file:real.npy?value_range=0,16'     the stored range, when it is not one of those
  images/  images.zip  images.tar.gz   PNG/JPEG files (hidden folders skipped)
  builtin:digits  'builtin:digits?classes=0,1'
  'builtin:photos?size=32&count=2000&seed=0'   patches of scikit-image's sample photos
  'torchvision:cifar10?root=~/data&split=test'   a torchvision data set already on disk
  'onnx:gen.onnx?latent=62&dist=uniform&output_range=-1,1'
                                       a generator: latent shape (default: the model's input),
                                       latent normal|uniform (default normal), output range
                                       (default -1,1)
  'torchscript:gen.pt?latent=100,1,1'  with --allow-torchscript only
\b
Examples:
  w1 estimate real.npz fake_images/ --plot curve.png --json=result.json
  w1 estimate builtin:digits 'onnx:gen.onnx?latent=62' --channels 1
  w1 estimate --json real.npz fake.npz > result.json   (--json alone: JSON on stdout)"""


def _split_value(name: str, text: str) -> float | int:
    """A holdout/validation value: '0.2' (a fraction) or '500' (a count)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"--{name} expects a fraction like 0.2 or a count like 500, got {text!r}") from None


def _click_type(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union \
        else annotation
    if typing.get_origin(base) is typing.Literal:
        return click.Choice([str(v) for v in typing.get_args(base)])
    return {int: int, float: float, bool: bool}.get(base, str)


def _field_options(func):
    """Add one click option per (non-special) EstimateOptions field, defaulting to "unset"."""
    for name, field in reversed(list(EstimateOptions.model_fields.items())):
        if name in _SPECIAL:
            continue
        flag = "--" + name.replace("_", "-")
        kind = _click_type(field.annotation)
        help_text = field.description or ""
        if name in PRESETS["default"]:
            help_text += _preset_default(name)
        elif field.default is not None:
            help_text += f" [default: {field.default}]"
        if kind is bool:
            func = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)(func)
        else:
            aliases = ["--time"] if name == "time_budget_s" else []  # the main knob gets a short name
            func = click.option(flag, *aliases, name, type=kind, default=None, help=help_text)(func)
    return func


def _preset_default(name: str) -> str:
    """'[default: 2000; paper preset: 25600]': the value each preset gives an unset option."""
    values = {preset: PRESETS[preset][name] for preset in PRESETS}
    shown = {k: ("the critic's own" if v is None else str(v).lower() if isinstance(v, bool)
                 else "0 = none" if name == "time_budget_s" and v == 0 else f"{v:g}" if isinstance(v, float) else v)
             for k, v in values.items()}
    if len(set(map(str, shown.values()))) == 1:
        return f" [default: {shown['default']}]"
    return f" [default: {shown['default']}; paper preset: {shown['paper']}]"


class _Command(click.Command):
    """`--json` and `--fid` take an optional value only when attached (`--json=out.json`), so they
    never swallow the next argument: `w1 estimate --json real.npz fake.npz` prints JSON."""

    def parse_args(self, ctx, args):
        out, rest = [], list(args)
        while rest:
            arg = rest.pop(0)
            if arg == "--":
                out += [arg, *rest]
                break
            out.append(f"{arg}={_BARE[arg]}" if arg in _BARE else arg)
        return super().parse_args(ctx, out)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "invalid options: " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
    text = " ".join((str(exc).strip() or type(exc).__name__).split())
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or "CPUAllocator" in text:
        asked = re.search(r"allocate (\d+) bytes", text)
        size = f" (one allocation of {int(asked[1]) / 2**30:,.1f} GiB)" if asked else ""
        return (f"not enough memory for these options{size}: lower --size, --batch-size, --width or the "
                "critic options")
    return text


def estimate_options(func):
    """The estimator's options as click options (shared by `w1 estimate` and `w1 series`)."""
    decorators = [
        click.option("--options", "options_file", type=click.Path(dir_okay=False),
                     help="JSON file of EstimateOptions; command-line options override it."),
        _field_options,
        click.option("--holdout", type=str, default=None,
                     help=EstimateOptions.model_fields["holdout"].description + _preset_default("holdout")),
        click.option("--validation", type=str, default=None,
                     help=EstimateOptions.model_fields["validation"].description + _preset_default("validation")),
        click.option("--critic-option", "critic_option", multiple=True, metavar="KEY=VALUE",
                     help="Extra critic option (repeatable); VALUE is parsed as JSON when it can be, e.g. depth=2."),
        click.option("--range", "value_range", default=None, metavar="LOW,HIGH",
                     help="Pixel range of the input space, or 'none' to keep values as they are [default: -1,1]."),
        click.option("--size", default=None, metavar="H[,W]",
                     help="Image size of the input space [default: the real side's]."),
        click.option("--channels", type=click.Choice(["1", "3"]), default=None,
                     help="Channels of the input space [default: the real side's]."),
        click.option("--resize", type=click.Choice(["none", "nearest", "bilinear", "area"]), default=None,
                     help="How a side whose size differs is resized [default: none = error]."),
        click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
                     help="Checkpoint here every --checkpoint-every steps; resume from a checkpoint found here."),
        click.option("--allow-torchscript", is_flag=True,
                     help="Allow TorchScript generators (they run arbitrary code)."),
        click.option("--fid", "fid_mode", type=click.Choice(["on", "off", "auto"]), default="off",
                     metavar="[=on|auto|off]",
                     help="Also compute FID (pytorch-fid's Inception; needs pip install 'w1-service[fid]' and the "
                          "weights on disk, never downloaded). --fid fails (exit 2) when FID is unavailable; "
                          "--fid=auto skips it silently. [default: off]"),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


@click.command("estimate", cls=_Command, epilog=SOURCES_HELP,
               context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("real")
@click.argument("fake")
@estimate_options
@click.option("--json", "json_out", default=None, metavar="[=FILE]",
              help="Write the result as JSON: --json alone to stdout, --json=FILE to FILE.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write the training curve as a PNG.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for training [default: W1_THREADS, else chosen from the cores this process owns "
                   "and the critic's size: one on a machine of two cores or fewer].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def estimate(real, fake, options_file, critic_option, value_range, size, channels, resize, checkpoint_dir,
             allow_torchscript, fid_mode, json_out, plot, threads, quiet, debug, **fields):
    """Estimate the Wasserstein-1 distance between REAL and FAKE samples.

    REAL and FAKE are sample sources (below). A provably 1-Lipschitz critic is trained on part of
    each side; the estimate is its dual value on held-out samples, and the certified lower bound
    divides it by the critic's certified Lipschitz bound. Options left unset take the preset's value
    (shown as [default: ...; paper preset: ...]).
    """
    from training.threads import fixed_threads

    with command_errors(debug), fixed_threads(threads):
        _run(real, fake, options_file, critic_option, value_range, size, channels, resize, checkpoint_dir,
             allow_torchscript, fid_mode, json_out, plot, quiet, fields)


@contextlib.contextmanager
def command_errors(debug: bool, interrupted: str = "interrupted"):
    """How an estimator command ends on an error: one line on stderr and exit status 2 (FID asked for but
    unavailable), 130 (interrupted) or 1, unless --debug (the traceback) or a missing library (the `w1`
    group's install hint)."""
    try:
        yield
    except FIDUnavailable as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo(f"Error: {interrupted}", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - one clear line unless --debug
        if debug or _missing_library(exc):
            raise
        click.echo(f"Error: {_one_line(exc)}", err=True)
        sys.exit(1)


def check_output_paths(**paths: str | None) -> None:
    """Refuse before training an output file that could not be written afterwards (a missing folder, a
    folder in its place, no write permission), so no result is computed only to be lost.
    Keys are option names (``json``, ``plot``); ``None`` and ``-`` (stdout) are skipped."""
    for option, path in paths.items():
        if not path or path == "-":
            continue
        target = Path(path)
        folder = target.parent  # Path("x.json").parent is Path(".")
        if target.is_dir():
            raise ValueError(f"--{option}: {path} is a folder; give a file name")
        if not folder.is_dir():
            raise ValueError(f"--{option}: cannot write {path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
            raise ValueError(f"--{option}: cannot write {path}: permission denied")


def _missing_library(exc: Exception) -> bool:
    """A library of the estimator's extra is not installed (a client-only install): the `w1`
    group turns that into the `pip install 'w1-service[estimator]'` line (service/cli.py)."""
    return isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] not in ("critics", "training")


class FIDUnavailable(RuntimeError):
    """FID was asked for (--fid) and cannot be computed here."""


def fid_unavailable(weights: str | None) -> str | None:
    """Why FID cannot be computed here, or None when it can (checked before training)."""
    import importlib.util

    if importlib.util.find_spec("pytorch_fid") is None:
        return "FID needs pytorch-fid: pip install 'w1-service[fid]'"
    from training.fid import find_weights, weights_location

    if find_weights(weights) is None:
        return (f"FID needs pytorch-fid's Inception weights at {weights_location(weights)} "
                "(never downloaded; see README, FID)")
    return None


def _space(base: dict, value_range, size, channels, resize) -> dict:
    space = dict(base)
    if value_range == "none":
        space["value_range"] = "none"
    elif value_range is not None:
        try:
            lo, hi = (float(v) for v in value_range.split(","))
        except ValueError:
            raise ValueError(f"--range must be LOW,HIGH or none, got {value_range!r}") from None
        space["value_range"] = (lo, hi)
    if size is not None:
        try:
            dims = [int(v) for v in size.split(",")]
        except ValueError:
            raise ValueError(f"--size must be H or H,W, got {size!r}") from None
        if len(dims) not in (1, 2):
            raise ValueError(f"--size must be H or H,W, got {size!r}")
        space["size"] = (dims[0], dims[-1])
    if channels is not None:
        space["channels"] = int(channels)
    if resize is not None:
        space["resize"] = resize
    return space


def _progress_bar(bar, task, evaluation: str):
    """A progress callback drawing the phase, the critic, one step count over all critics and the
    latest objective and validation value on a rich progress bar."""
    def progress(event):
        info = f"objective {event.objective:.4f}"
        if event.estimate is not None:
            info += f"  validation {event.estimate:.4f}"
        what = {"selection": f"choosing the critic: {event.candidate}", "training": f"training {event.candidate}",
                "evaluation": evaluation}.get(event.phase, "training critic")
        bar.update(task, description=what, total=event.total, completed=event.step,
                   steps=f"{event.step}/{event.total}", info=info)
    return progress


def build_options(options_file, critic_option, value_range, size, channels, resize, fid_mode, fields,
                  ) -> tuple[EstimateOptions, str]:
    """EstimateOptions from the command line (shared by `w1 estimate` and `w1 series`), and the FID mode
    (an options file asking for FID turns it on; --fid=auto drops FID where it is unavailable)."""
    base: dict = {}
    if options_file:
        try:
            base = json.loads(Path(options_file).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read options file {options_file}: {exc}") from None
    explicit = {k: v for k, v in fields.items() if v is not None}
    for name in ("holdout", "validation"):
        if fields.get(name) is not None:
            explicit[name] = _split_value(name, fields[name])
    critic_options = dict(base.get("critic_options", {}))
    for item in critic_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--critic-option must be KEY=VALUE, got {item!r}")
        try:
            critic_options[key] = json.loads(value)
        except json.JSONDecodeError:
            critic_options[key] = value
    if critic_options:
        explicit["critic_options"] = critic_options
    space = _space(base.get("space", {}), value_range, size, channels, resize)
    if space:
        explicit["space"] = space
    if fid_mode != "off":
        explicit["fid"] = True
    elif "fid" in base and fid_mode == "off" and base.get("fid"):
        fid_mode = "on"  # an options file asking for FID
    options = EstimateOptions.build(base, **explicit)
    if options.fid:
        why = fid_unavailable(options.fid_weights)
        if why and fid_mode == "auto":
            options = options.model_copy(update={"fid": False})
        elif why:
            raise FIDUnavailable(f"{why}; or use --fid=auto to skip FID when it is unavailable")
    return options, fid_mode


def _run(real, fake, options_file, critic_option, value_range, size, channels, resize, checkpoint_dir,
         allow_torchscript, fid_mode, json_out, plot, quiet, fields):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    err = Console(stderr=True)
    check_output_paths(json=json_out, plot=plot)
    options, fid_mode = build_options(options_file, critic_option, value_range, size, channels, resize, fid_mode,
                                      fields)
    resolved = options.resolved()
    json_to_stdout = json_out == "-"
    out = err if json_to_stdout else Console()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[steps]}"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=err, disable=quiet, transient=True) as bar:
        task = bar.add_task("opening sources", total=None, info="", steps="")
        from training.data import open_for_space
        from training.estimator import estimate_w1  # imports torch: the bar is already up

        real_src = open_for_space(real, options.space, allow_torchscript=allow_torchscript)
        fake_src = open_for_space(fake, options.space, allow_torchscript=allow_torchscript)
        bar.update(task, description="preparing the critic")
        progress = _progress_bar(bar, task, "held-out estimate" + (" and FID" if resolved.fid else ""))
        result = estimate_w1(real_src, fake_src, options, progress=progress, checkpoint_dir=checkpoint_dir)
    out.print(result_table(result))
    if result.fid is not None and result.fid.note:
        err.print(result.fid.note, markup=False, highlight=False)
    if options.fid and result.fid is not None and result.fid.value is None and fid_mode == "on":
        raise FIDUnavailable(result.fid.note)
    if json_out:
        if json_to_stdout:
            click.echo(result.to_json())
        else:
            Path(json_out).write_text(result.to_json())
    if plot:
        from training.plot import plot_curve

        plot_curve(result, plot)
