"""The `w1` command. Subcommands live beside the code they drive and are imported lazily,
so `w1 --help` and client commands do not pay for importing torch.

The client commands need only `pip install w1-service`; `estimate` needs the `[estimator]` extra,
`serve`, `worker` and `keys` the `[server]` extra, and say so when it is missing."""
from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of a click command
COMMANDS = {
    "estimate": "training.cli:estimate",
    "serve": "service.server.cli:serve",
    "worker": "service.server.cli:worker",
    "keys": "service.server.cli:keys",
    "submit": "service.client.cli:submit",
    "jobs": "service.client.cli:jobs",
    "batch": "service.client.batch:batch",
    "datasets": "service.client.cli:datasets",
    "generators": "service.client.cli:generators",
}


# one line each for `w1 --help`, so listing the commands imports none of them
SUMMARIES = {
    "estimate": "Estimate W1 between two sample sources, here (trains a critic).",
    "serve": "Run the API, the reconciler and local workers.",
    "worker": "Run one worker taking jobs from the broker.",
    "keys": "Create, list and revoke API keys.",
    "submit": "Estimate W1 on the server (uploads local sources).",
    "jobs": "List, inspect, follow and cancel jobs.",
    "batch": "Many fakes against one real set on the server; table + CSV/JSON.",
    "datasets": "List, show, add and delete the server's sample sets.",
    "generators": "Add, list and show the server's ONNX generators.",
}


# commands that need an extra of the distribution (pyproject.toml), by name
EXTRAS = {"estimate": "estimator", "serve": "server", "worker": "server", "keys": "server"}
OUR_PACKAGES = ("critics", "training", "service")


def missing_extra(name: str | None, exc: ModuleNotFoundError) -> click.ClickException | None:
    """The one-line answer to `w1 NAME` failing on a missing third-party module: which extra to
    install. None when it is not that (one of our modules, or a client command)."""
    extra = EXTRAS.get(name or "")
    if extra is None or not exc.name or exc.name.split(".")[0] in OUR_PACKAGES:
        return None
    return click.ClickException(f"`w1 {name}` needs the {extra}'s dependencies ({exc.name} is not installed): "
                                f"pip install 'w1-service[{extra}]'")


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUMMARIES[name]) for name in self.list_commands(ctx)])

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            raise missing_extra(name, exc) or exc

    def invoke(self, ctx):
        """A command whose body imports what its extra brings fails with the same one line."""
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            raise missing_extra(ctx.invoked_subcommand, exc) or exc


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="w1-service")
def main():
    """w1: Wasserstein-1 distances between generated samples and real image data,
    certified by provably 1-Lipschitz critics."""


if __name__ == "__main__":
    main()
