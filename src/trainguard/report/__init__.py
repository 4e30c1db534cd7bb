"""Report renderers: one `render(report, fmt)` front door for the CLI and library users.

table: rich terminal text; json: the stable documented schema
(docs/report-schema.md); sarif: SARIF 2.1.0 for code-scanning dashboards;
html: one self-contained page with charts, no scripts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from trainguard.errors import ConfigError
from trainguard.records import Record
from trainguard.report.model import Report

FORMATS = ("table", "json", "sarif", "html")


def render(report: Report, fmt: str, records: Sequence[Record] | None = None) -> str:
    """`records` (the scanned ones, when at hand) let the HTML page show each finding's row texts."""
    if fmt == "table":
        from trainguard.report import terminal

        return terminal.render(report)
    if fmt == "json":
        from trainguard.report import jsonfmt

        return jsonfmt.render(report)
    if fmt == "sarif":
        from trainguard.report import sarif

        return sarif.render(report)
    if fmt == "html":
        from trainguard.report import html

        return html.render(report, records)
    raise ConfigError(f"unknown report format {fmt!r}; expected one of: {', '.join(FORMATS)}")


def write(report: Report, fmt: str, path: str | Path, records: Sequence[Record] | None = None) -> Path:
    """Write the report as UTF-8; refuses to overwrite the scanned dataset itself.

    A file (not a terminal) gets the table without colour codes.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    path = Path(path)
    source = report.dataset.path
    if source and not str(source).startswith("<") and os.path.exists(source) and path.exists() \
            and os.path.samefile(source, path):
        raise ConfigError(f"refusing to write the report over the scanned dataset {source}")
    if fmt == "table":
        from trainguard.report import terminal

        text = terminal.render(report, color=False)
    else:
        text = render(report, fmt, records)
    try:
        path.write_text(text, encoding="utf-8", newline="\n")
    except OSError as e:
        raise ConfigError(f"cannot write the {fmt} report to {path}: {e.strerror or e}") from None
    return path


__all__ = ["FORMATS", "Report", "render", "write"]
