"""`trainguard serve`: being built (placeholder so the CLI wiring exists)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI (none yet)."""
