"""Shared CLI plumbing: one place turns library errors into exit code 2."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from trainguard.errors import TrainguardError

err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)  # data is text


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error and return the Exit to raise: `raise fail("...")`."""
    print_error(message)
    return typer.Exit(code)


def print_error(message: object) -> None:
    """The one place errors are printed; the message is text, never markup (`tuple[str, ...]`, `[x].txt`)
    nor emoji codes (`:x:` in a value stays as typed)."""
    err_console.print(f"[bold red]error:[/] {escape(str(message))}", markup=True, emoji=False)


def run_app(app: typer.Typer, args: list[str] | None = None) -> int:
    """Run the app; usage errors exit 2 (click's convention), library errors too."""
    try:
        app(args=args)
    except SystemExit as e:  # click's standalone mode ends every run this way
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except TrainguardError as e:
        print_error(e)
        return 2
    except KeyboardInterrupt:
        err_console.print("aborted")
        return 130
    return 0
