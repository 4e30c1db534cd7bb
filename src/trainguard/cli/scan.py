"""`trainguard scan`, `trainguard detectors` and `trainguard demo`."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from trainguard import report as report_fmt
from trainguard.report import FORMATS
from trainguard.cli._common import (
    FieldOpt, JobsOpt, KindOpt, MaxRecordBytesOpt, OnErrorOpt, announce, err_console, fail, load_options, parse_jobs,
)
from trainguard.detectors.base import registry
from trainguard.findings import Severity
from trainguard.io import load
from trainguard.io.readers import DEFAULT_MAX_RECORD_BYTES
from trainguard.scan import DEFAULT_DETECTORS, build_detectors, exit_code, parse_settings, plan_jobs, scan
from trainguard.verdict import add_disabled, disabled_runs



def register(app: typer.Typer) -> None:
    app.command("scan")(scan_command)
    app.command("detectors")(list_detectors)
    app.command("demo")(demo)


def scan_command(
    path: Path = typer.Argument(..., help="Dataset file: JSONL(.gz), JSON array, CSV/TSV, Parquet, "
                                          "or a Hugging Face datasets save_to_disk folder."),
    kind: KindOpt = "auto",
    field: FieldOpt = None,
    fmt: str = typer.Option("table", "--format", "-f", help="table, json, sarif or html."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the report here instead of stdout."),
    fail_on: str = typer.Option("high", help="Exit 1 when a finding is at or above this severity."),
    detectors: Optional[str] = typer.Option(None, help="Comma-separated detector names (default: the default set; `trainguard detectors` marks it)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Detector setting: DETECTOR.KEY=VALUE."),
    on_error: OnErrorOpt = "fail",
    max_record_bytes: MaxRecordBytesOpt = DEFAULT_MAX_RECORD_BYTES,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    fuse: Optional[float] = typer.Option(
        None, "--fuse", help="Also fuse the detectors' row scores; flag rows at or above this (0-1; 0.5 = a detector's own bar)."),
    shard_rows: Optional[int] = typer.Option(
        None, help="Stream the file in shards of this many records (detectors with per-shard summaries)."),
    scheduler: Optional[str] = typer.Option(
        None, help="Dask scheduler address (tcp://HOST:PORT): summarise shards on the cluster; needs --shard-rows."),
    split: Optional[str] = typer.Option(None, "--split", help="The split of a saved datasets DatasetDict folder."),
    jobs: JobsOpt = "auto",
) -> None:
    """Scan a dataset for poisoning; exit 0 clean, 1 findings at --fail-on or above, 2 bad input."""
    if fmt not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    try:
        threshold = Severity.parse(fail_on) if fail_on != "none" else None
    except ValueError as e:
        raise fail(f"--fail-on: {e}") from None
    names = [d.strip() for d in detectors.split(",") if d.strip()] if detectors else None
    settings = parse_settings(set_ or [])
    n_jobs = parse_jobs(jobs)
    opts = replace(load_options(kind, field, on_error, max_record_bytes), split=split)
    if split is not None and shard_rows is not None:
        raise fail("--split reads a datasets folder; it is not available with --shard-rows yet")
    if scheduler and shard_rows is None:
        raise fail("--scheduler needs --shard-rows")
    if shard_rows is not None and jobs.strip().lower() != "auto":
        raise fail("--jobs runs in-memory scans in several processes; a --shard-rows scan uses --scheduler for that")
    if fuse is not None and shard_rows is not None:
        raise fail("--fuse needs the whole dataset's row scores; it is not available with --shard-rows yet")
    if shard_rows is not None:
        result = _scan_sharded(path, names, settings, shard_rows, scheduler, quiet, opts)
        info = result.dataset
        err_console.print(f"{info.get('path')}: {info.get('kind_reason') or info.get('kind')}, "
                          f"{info.get('records') or 0:,} records")
        _emit(result, fmt, out)
        raise typer.Exit(_verdict(result, threshold))
    with _progress(quiet) as progress:
        progress.add_task(f"loading {path.name}", total=None)
        data = load(path, opts)
    announce(data)  # before the scan: which kind, and why, is the first thing to check
    instances = build_detectors(names, settings)
    workers = plan_jobs(data, instances, n_jobs)
    # Several processes fork from this one only while it runs no other thread: no refresh thread for the bar then.
    with _progress(quiet, auto_refresh=workers == 1) as progress:
        task = progress.add_task(f"scanning {len(data):,} records", total=1, completed=0)
        on_progress = _detector_progress(progress, task, quiet)
        result = scan(data, detectors=instances, progress=on_progress, fuse_threshold=fuse, jobs=workers)
    if names is not None:
        add_disabled(result, disabled_runs(data, names, DEFAULT_DETECTORS, "not selected with --detectors"))
    off = [r.name for r in result.detectors if r.status == "disabled"]
    if off:
        err_console.print(f"disabled: {', '.join(off)} (default detectors that apply to this data, left out by "
                          "--detectors: the data was not checked for what they find)")
    _emit(result, fmt, out, data.records)
    raise typer.Exit(_verdict(result, threshold))


def _verdict(result, threshold: Severity | None) -> int:
    """The exit code (`trainguard.scan.exit_code`), and on stderr each reason it fails."""
    from trainguard.verdict import judge

    code = exit_code(result, threshold)
    for reason in judge(result, fail_at=threshold).reasons if code else ():
        err_console.print(f"fail: {reason}")
    return code


def _scan_sharded(path, names, settings, shard_rows, scheduler, quiet, opts):
    from trainguard.sharded import scan_sharded

    client = None
    if scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise fail("--scheduler needs Dask: pip install 'dask[distributed]'") from None
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as e:
            raise fail(f"--scheduler: cannot reach {scheduler}: {e}") from None
    try:
        with _progress(quiet) as progress:
            task = progress.add_task(f"scanning {path.name} in shards of {shard_rows:,}", total=None)
            return scan_sharded(path, names, settings, shard_rows=shard_rows, client=client,
                                progress=lambda n: progress.update(task, description=f"{n:,} records summarised",
                                                                   refresh=True),
                                options=opts)
    finally:
        if client is not None:
            client.close()


def list_detectors(fmt: str = typer.Option("table", "--format", "-f", help="table or json.")) -> None:
    """List the registered detectors, the dataset kinds they serve and their settings."""
    import dataclasses

    rows = []
    for name, cls in sorted(registry().items()):
        defaults = dataclasses.asdict(cls.Settings())
        rows.append({"name": name, "version": cls.version, "kinds": sorted(k.value for k in cls.kinds),
                     "needs": sorted(cls.needs), "atlas": list(cls.atlas), "default": name in DEFAULT_DETECTORS,
                     "description": cls.description, "settings": defaults})
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(_detector_blocks(rows, shutil.get_terminal_size((100, 24)).columns))


def _detector_blocks(rows: list[dict], width: int) -> str:
    """One block per detector, its name whole on its own line: a table cut the names users must type
    (`availability…`) at 80 columns."""
    width = max(width, 40)
    out = []
    for r in rows:
        head = f"{r['name']}  v{r['version']}" + ("  (default)" if r["default"] else "")
        facts = f"kinds: {', '.join(r['kinds'])}" + (f"; needs: {', '.join(r['needs'])}" if r["needs"] else "") \
            + (f"; ATLAS: {', '.join(r['atlas'])}" if r["atlas"] else "")
        body = [facts, r["description"]] if r["description"] else [facts]
        out.append("\n".join([head, *(textwrap.fill(b, width, initial_indent="  ", subsequent_indent="  ")
                                      for b in body)]))
    return "\n\n".join(out) + "\n"


def demo(
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="Where to write the HTML report."),
) -> None:
    """Scan the bundled poisoned demo set, print findings, write report.html, compare with the planted truth."""
    base = resources.files("trainguard") / "data" / "demo"
    with resources.as_file(base / "sst2_poisoned.jsonl") as data_path, \
            resources.as_file(base / "sst2_poisoned.truth.json") as truth_path:
        err_console.print(f"[bold]trainguard demo[/]: {escape(data_path.name)}, 3,000 SST-2 reviews with planted "
                          "backdoors (BadNets words, an AddSent phrase, an invisible-Unicode trigger)", markup=True)
        with _progress(False) as progress:
            task = progress.add_task("scanning", total=None)
            data = load(data_path)
            result = scan(data, progress=lambda name, i, n: progress.update(task, description=name,
                                                                          total=n, completed=i, refresh=True))
        truth = json.loads(Path(truth_path).read_text())
    sys.stdout.write(report_fmt.render(result, "table"))
    report_fmt.write(result, "html", out, data.records)
    planted = {int(r) for r in truth["poisoned_rows"]}
    err_console.print("\n" + demo_summary(planted, result.flagged_rows(Severity.HIGH),
                                           result.flagged_rows(Severity.MEDIUM)))
    err_console.print(f"HTML report written to [bold]{escape(str(out))}[/]", markup=True)


def demo_summary(planted: set[int], high: set[int], medium_or_above: set[int]) -> str:
    """The demo's score line. Findings at medium are alerts too (issue 12): false alarms are counted at every
    severity a user is shown, not only at high."""
    hit = len(planted & high)
    false_high, false_med = len(high - planted), len(medium_or_above - planted)
    return (f"planted poisons: {len(planted)}; flagged at high severity: {len(high)}, at medium or above: "
            f"{len(medium_or_above)}; caught {hit} ({hit / max(len(planted), 1):.0%}) at high, "
            f"{len(planted & medium_or_above)} at medium or above; false alarms {false_med} at medium or above "
            f"({false_high} at high)")


def _emit(result, fmt: str, out: Path | None, records=None) -> None:
    if out is not None:
        report_fmt.write(result, fmt, out, records)
        err_console.print(f"{fmt} report written to {out}")
    else:
        sys.stdout.write(report_fmt.render(result, fmt, records))


def _progress(quiet: bool, auto_refresh: bool = True) -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True, disable=quiet or not err_console.is_terminal, auto_refresh=auto_refresh,
    )


def _detector_progress(progress: Progress, task, quiet: bool):
    """The engine's per-detector callback: the bar on a terminal; on a pipe (CI), one plain line as each
    detector starts, with the count and time so far, since the bar prints nothing there."""
    start = time.monotonic()
    plain = not quiet and not err_console.is_terminal

    def on_progress(name: str, i: int, n: int) -> None:
        progress.update(task, description=f"{name}", total=n, completed=i, refresh=True)
        if plain:
            what = f"{n} detectors done (" if name == "done" else f"{name} ({i}/{n} detectors done, "
            err_console.print(f"scan: {what}{time.monotonic() - start:.1f} s elapsed)")

    return on_progress
