"""The `w1` command. Subcommands live beside the code they drive and are imported lazily,
so `w1 --help` and client commands do not pay for importing torch."""
from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of a click command
COMMANDS = {
    "estimate": "training.cli:estimate",
    "serve": "service.server_cli:serve",
    "worker": "service.server_cli:worker",
    "keys": "service.server_cli:keys",
    "submit": "service.client_cli:submit",
    "jobs": "service.client_cli:jobs",
    "batch": "service.client_cli:batch",
    "datasets": "service.client_cli:datasets",
    "generators": "service.client_cli:generators",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="w1-service")
def main():
    """w1: Wasserstein-1 distances between generated samples and real image data,
    certified by provably 1-Lipschitz critics."""


if __name__ == "__main__":
    main()
