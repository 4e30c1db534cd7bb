"""Shared CLI plumbing: one place turns library errors into exit code 2, one option bundle for
every command that reads a dataset, one line saying how the data was read.

The bundle (sqlite-utils' lesson): `--kind`, `--field`, `--on-error` and
`--max-record-bytes` mean the same on `scan`, `gate`, `ingest`, `verify`,
`release`, `attack`, `train` and `probe`/`invert --clean`, and are resolved once
into a frozen `LoadOptions` (`load_options`) that the library takes as is.
`tests/test_cli_scan.py` checks every such command has all four.
"""

from __future__ import annotations

import re

from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from trainguard.errors import TrainguardError
from trainguard.io.readers import DEFAULT_MAX_RECORD_BYTES

if TYPE_CHECKING:
    from trainguard.io import LoadOptions
    from trainguard.io.dataset import Dataset

KindOpt = Annotated[str, typer.Option(
    "--kind", help="auto, classification, instruction, preference or documents (auto: from the field names).")]
FieldOpt = Annotated[Optional[list[str]], typer.Option("--field", help="Map a role to a column: ROLE=COLUMN.")]
OnErrorOpt = Annotated[str, typer.Option(
    "--on-error", help="fail: stop at the first bad row; skip: count and list it (a gate fails on skipped rows).")]
MaxRecordBytesOpt = Annotated[int, typer.Option("--max-record-bytes", help="Largest accepted record, in bytes.")]
JobsOpt = Annotated[str, typer.Option(
    "--jobs", "-j", help="Processes the detectors run in: a number, or auto (one per CPU from 20,000 rows, where "
                         "the platform forks). The report is the same whatever the number.")]


def parse_jobs(value: str) -> int | str:
    """--jobs: 'auto' or a positive integer (exit 2 otherwise)."""
    v = value.strip().lower()
    if v == "auto":
        return v
    if not re.fullmatch(r"[0-9]+", v) or int(v) < 1:
        raise fail(f"--jobs must be a positive integer or auto, got {value!r}")
    return int(v)
DATA_OPTIONS = ("--kind", "--field", "--on-error", "--max-record-bytes")

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


def load_options(kind: str = "auto", field: Optional[list[str]] = None, on_error: str = "fail",
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, fmt: Optional[str] = None) -> "LoadOptions":
    """The bundle's values as one frozen LoadOptions; a bad value is one line and exit 2, before any reading."""
    from trainguard.io import LoadOptions, parse_field_overrides

    return LoadOptions(kind=kind, fields=parse_field_overrides(field), on_error=on_error, fmt=fmt,
                       max_record_bytes=max_record_bytes)


def announce(data: "Dataset") -> None:
    """One line on stderr: which kind was read, why, how many records; then notes and skipped rows."""
    err_console.print(f"{data.path}: {data.kind_reason or data.kind.value}, {len(data):,} records")
    for note in data.notes:
        err_console.print(f"note: {note}")
    if data.skipped:
        err_console.print(f"skipped {len(data.skipped)} unreadable row(s) (--on-error skip); the first: "
                          f"{data.skipped[0]}")


def describe(path: object, options: "LoadOptions") -> None:
    """For commands that hash or copy a file without parsing it all: say how it would be read.

    A kind that cannot be resolved is a warning here, not an error: the ledger
    records any file, and `scan`/`gate` refuse it with the same message.
    """
    from trainguard.errors import DataError
    from trainguard.io.dataset import resolve

    if options.on_error != "fail":
        # These commands hash and record every line as written; skipping a row here would be a
        # promise they do not keep, so the option is refused rather than silently ignored.
        raise fail("--on-error skip does not apply here: every record of the file is hashed and recorded "
                   "as written (skip unreadable rows in scan or gate)")
    try:
        _, _, reason = resolve(path, options)  # type: ignore[arg-type]
    except DataError as e:
        err_console.print(f"warning: {e}")
        return
    err_console.print(f"{path}: {reason}")


def load_announced(path: object, options: "LoadOptions") -> "Dataset":
    """Load a dataset with the bundle's options and say how it was read (`announce`)."""
    from trainguard.io import load

    data = load(path, options)  # type: ignore[arg-type]
    announce(data)
    return data
