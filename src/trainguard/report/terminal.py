"""The terminal report: what a CI log or an engineer at a shell reads first.

Every data-derived string goes into a `rich.text.Text` (never parsed as
markup) after `visible()` has turned control and invisible characters into
`<U+XXXX>`: a record cannot inject rich markup, ANSI escapes or a hidden
trigger into the reviewer's terminal. Where a string is interpolated into
markup, it goes through `rich.markup.escape` as well.
"""

from __future__ import annotations

import io
import os
import shutil
import sys

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from trainguard.findings import DetectorStatus, Severity
from trainguard.report._safe import evidence_summary, rows_preview, short, visible
from trainguard.report.model import Report

SEVERITY_STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}
STATUS_STYLE = {DetectorStatus.OK: "green", DetectorStatus.FAILED: "bold red", DetectorStatus.SKIPPED: "dim",
                DetectorStatus.DISABLED: "bold yellow"}
MAX_FINDINGS = 200  # beyond this the JSON/HTML report is the place to read them
MAX_SKIPPED = 50


def _t(value: object, style: str = "", limit: int | None = None) -> Text:
    s = visible(str(value))
    return Text(short(s, limit) if limit else s, style=style)


NARROW = 110  # below this many columns, findings are stacked: the 8-column table split names over 4 lines


def build(report: Report, width: int | None = None) -> Group:
    """The report as rich renderables, for callers that print to their own Console."""
    parts: list = [_header(report), _detectors(report)]
    if not report.findings:
        parts.append(Text("No findings.", style="green"))
    else:
        parts.append(_findings_stacked(report) if width is not None and width < NARROW else _findings(report))
    skipped = report.dataset.skipped
    if skipped:
        parts.append(_skipped(skipped))
    parts.append(_footer(report))
    return Group(*parts)


def _header(report: Report) -> Table:
    ds = report.dataset
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("trainguard", Text(f"{visible(report.tool_version)}  scan report  {visible(report.created)}"))
    grid.add_row("dataset", _t(ds.path))
    sha = ds.sha256
    grid.add_row("sha256", _t(sha) if sha else Text("n/a (in-memory data)", style="dim"))
    grid.add_row("kind", _t(ds.kind))
    grid.add_row("records", Text(f"{ds.records:,}"))
    n_skip = len(ds.skipped)
    grid.add_row("skipped rows", Text(f"{n_skip:,}", style="bold yellow" if n_skip else ""))
    return grid


def _detectors(report: Report) -> Table:
    table = Table(title="Detectors", title_justify="left", box=box.SIMPLE_HEAD, expand=False)
    for col in ("detector", "version", "status", "seconds", "note"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for d in report.detectors:
        table.add_row(_t(d.name), _t(d.version), Text(str(d.status), style=STATUS_STYLE.get(d.status, "")),
                      f"{d.seconds:.2f}", _t(d.message, limit=100))
    if not report.detectors:
        table.add_row(Text("none ran", style="bold red"), "", "", "", "")
    return table


def _findings(report: Report) -> Table:
    table = Table(title=f"Findings ({len(report.findings)})", title_justify="left", box=box.SIMPLE_HEAD,
                  show_lines=False, expand=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("conf.", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("detector / rule", ratio=2, overflow="fold")
    table.add_column("finding / evidence", ratio=5, overflow="fold")
    table.add_column("rows", ratio=2, min_width=14)
    table.add_column("ATLAS", no_wrap=True)
    for i, f in enumerate(report.findings[:MAX_FINDINGS], 1):
        finding = _t(f.title, limit=200)
        if f.evidence:
            finding.append("\n")
            finding.append(evidence_summary(f.evidence, limit=140), style="dim")
        atlas = Text("\n".join(visible(a) for a in f.atlas) if f.atlas else "-")
        table.add_row(
            str(i), Text(str(f.severity), style=SEVERITY_STYLE[f.severity]), str(f.confidence), f"{f.score:.2f}",
            Text(f"{visible(f.detector)}\n{visible(f.rule)}"), finding, Text(rows_preview(f.rows)), atlas,
        )
    if len(report.findings) > MAX_FINDINGS:
        table.caption = f"{len(report.findings) - MAX_FINDINGS} more findings: see --format json or html"
    return table


def _findings_stacked(report: Report) -> Table:
    """Findings for a narrow terminal: detector and rule whole on one line, the rest below them."""
    table = Table(title=f"Findings ({len(report.findings)})", title_justify="left", box=box.SIMPLE_HEAD,
                  show_lines=True, expand=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("finding", overflow="fold")
    for i, f in enumerate(report.findings[:MAX_FINDINGS], 1):
        body = Text(f"{visible(f.detector)} / {visible(f.rule)}", style="bold")
        body.append(f"  conf. {f.confidence}, score {f.score:.2f}\n", style="dim")
        body.append_text(_t(f.title, limit=200))
        if f.evidence:
            body.append("\n")
            body.append(evidence_summary(f.evidence, limit=140), style="dim")
        body.append(f"\nrows {rows_preview(f.rows)}")
        if f.atlas:
            body.append(f"\nATLAS {', '.join(visible(a) for a in f.atlas)}", style="dim")
        table.add_row(str(i), Text(str(f.severity), style=SEVERITY_STYLE[f.severity]), body)
    if len(report.findings) > MAX_FINDINGS:
        table.caption = f"{len(report.findings) - MAX_FINDINGS} more findings: see --format json or html"
    return table


def _skipped(skipped: list[dict]) -> Table:
    table = Table(title=f"Skipped input rows ({len(skipped)}), not scanned", title_justify="left",
                  title_style="bold yellow", box=box.SIMPLE_HEAD)
    for col in ("row", "line", "field", "problem"):
        table.add_column(col, overflow="fold")
    for e in skipped[:MAX_SKIPPED]:
        table.add_row(_opt(e.get("row")), _opt(e.get("line")), _opt(e.get("field")),
                      _t(e.get("message", ""), limit=200))
    if len(skipped) > MAX_SKIPPED:
        table.caption = f"{len(skipped) - MAX_SKIPPED} more skipped rows: see --format json"
    return table


def _opt(v: object) -> Text:
    return Text("-", style="dim") if v is None else _t(v)


def _footer(report: Report) -> Text:
    counts = report.severity_counts()
    parts = [f"[{SEVERITY_STYLE[s]}]{counts[str(s)]} {s}[/]" for s in sorted(Severity, reverse=True) if counts[str(s)]]
    line = f"{len(report.findings)} findings" + (f" ({', '.join(parts)})" if parts else "")
    line += f"; {len(report.flagged_rows()):,} flagged rows"
    if report.failed:
        names = ", ".join(escape(visible(d.name)) for d in report.failed)
        line += f"; [bold red]FAILED detectors: {names}[/] (results incomplete)"
    return Text.from_markup(line)


def render(report: Report, color: bool | None = None, width: int | None = None) -> str:
    """The report as text; colour only when stdout is a terminal (and NO_COLOR is unset) unless forced."""
    if color is None:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    if width is None:
        width = shutil.get_terminal_size((140, 24)).columns  # $COLUMNS, the terminal, else 140 (a pipe)
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=color, no_color=not color, highlight=False,
                      emoji=False, markup=False, color_system="standard" if color else None)
    console.print(build(report, width))
    return buf.getvalue()
