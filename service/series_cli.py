"""`w1 series`: a checkpoint series here (training.series_cli) or, with --server, on a w1 server as a
batch in series mode (service.client.series). Without --server nothing of the service is used; with it,
nothing of the estimator (no torch): the client-only install runs it."""
from __future__ import annotations

import sys

import click

from training.series_cli import item_names, series as local


def _run(server: str | None, token: str | None, **kwargs) -> None:
    if server is None:
        return local.callback(**kwargs)
    try:
        _remote(server, token, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one clear line unless --debug
        from training.cli import _one_line

        if kwargs["debug"]:
            raise
        click.echo(f"Error: {_one_line(exc)}", err=True)
        sys.exit(1)


def _remote(server, token, *, real, fakes, labels, steps_from_names, checkpoint_steps, warm_start, options_file,
            critic_option, value_range, size, channels, resize, checkpoint_dir, allow_torchscript, fid_mode, json_out,
            csv_out, plot, quiet, debug, **fields) -> None:
    from service.client.client import W1Client
    from service.client.series import run_series
    from training.cli import build_options
    from training.series_result import default_label

    if not warm_start or checkpoint_dir:
        raise ValueError("with --server the series runs warm and checkpoints on the server: "
                         "--cold and --checkpoint-dir are for a series run here")
    names, steps = item_names(fakes, labels, steps_from_names, checkpoint_steps)
    names = names or [default_label(f, i) for i, f in enumerate(fakes)]
    # FID is the server's to compute (its weights): asked for, not checked here
    options, _ = build_options(options_file, critic_option, value_range, size, channels, resize, "off", fields)
    body = options.model_dump(mode="json", exclude_unset=True) | ({"fid": True} if fid_mode != "off" else {})
    with W1Client(server, token or "") as client:
        run_series(client, real, list(fakes), names, steps, body, json_out=json_out, csv_out=csv_out, plot=plot,
                   quiet=quiet)


series = type(local)(
    "series", callback=_run, help=local.help, epilog=local.epilog, context_settings=local.context_settings,
    params=[*local.params,
            click.Option(["--server"], default=None, metavar="URL",
                         help="Run the series on this w1 server (a batch in series mode) instead of here."),
            click.Option(["--token"], envvar="W1_TOKEN", default=None,
                         help="API key for --server, sent as a bearer token (env W1_TOKEN).")])
