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


# The top-level help lists commands under these headings (sqlite-utils' and bandit's help read by concern).
PANELS = {
    "Scan": ("scan", "detectors", "demo"),
    "Provenance and release": ("keygen", "ingest", "verify", "prove", "gate", "release", "check-attestation",
                               "audit", "ledger"),
    "Review": ("review", "serve", "user"),
    "Model": ("probe", "invert", "serve-model", "train"),
    "Red team": ("attack", "attacks", "bench"),
}


def _version(value: bool) -> None:
    if value:
        from trainguard._version import __version__

        typer.echo(f"trainguard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """The gate between data ingestion and the training job."""


def _register_all() -> None:
    from trainguard.cli import attack, bench, probe, provenance, scan, serve, train

    for module in (scan, provenance, serve, probe, train, attack, bench):
        module.register(app)
    panel_of = {name: panel for panel, names in PANELS.items() for name in names}
    for info in [*app.registered_commands, *app.registered_groups]:
        name = info.name or (info.callback.__name__ if getattr(info, "callback", None) else None)
        if name not in panel_of:
            raise RuntimeError(f"CLI command {name!r} has no help panel in trainguard.cli.PANELS")
        info.rich_help_panel = panel_of[name]


_register_all()


def main() -> None:
    sys.exit(_common.run_app(app))
