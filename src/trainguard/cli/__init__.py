"""`trainguard` command line: thin shells over the library.

Each concern registers its own commands from its own module, so the CLI grows
without one large file. Exit codes: 0 ok, 1 findings or a failed check, 2 bad
usage or unreadable input.
"""

from __future__ import annotations

import sys

import typer

from trainguard.cli import _common

app = typer.Typer(
    name="trainguard",
    help="The gate between data ingestion and the training job.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_all() -> None:
    from trainguard.cli import attack, bench, probe, provenance, scan, serve, train

    for module in (scan, attack, bench, provenance, probe, train, serve):
        module.register(app)


_register_all()


def main() -> None:
    sys.exit(_common.run_app(app))
