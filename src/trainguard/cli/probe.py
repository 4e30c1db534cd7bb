"""`trainguard probe` and `trainguard invert`: check a trained model for backdoor triggers.

Exit codes: 0 the model is not judged backdoored; 1 it is, or the probe could
not finish (request budget spent: the gate fails closed); 2 bad usage or input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from trainguard import report as report_fmt
from trainguard.cli._common import err_console, fail
from trainguard.report import FORMATS


def register(app: typer.Typer) -> None:
    app.command("probe")(probe_command)
    app.command("invert")(invert_command)


MODEL_HELP = ("A model directory (trainguard TextClassifier or Hugging Face, safetensors only), "
              "http(s)://URL (JSON classification API, docs/probe.md) or openai+http(s)://HOST/v1?model=NAME.")


def _load_clean(path: Path, kind: str, field: Optional[list[str]], limit: int):
    from trainguard.io import load, parse_field_overrides
    from trainguard.probe import Inputs

    data = load(path, kind=kind, fields=parse_field_overrides(field))
    if len(data) == 0:
        raise fail(f"{path}: no records to probe with")
    return data, Inputs.of(data, limit=limit)


def _model(spec: str, budget: Optional[int], timeout: float, retries: int, batch_size: int, temperature: float):
    from trainguard.probe import RequestBudget, load_model

    if budget is not None and budget < 1:
        raise fail(f"--budget must be at least 1, got {budget}")
    return load_model(spec, RequestBudget(budget), timeout=timeout, retries=retries, batch_size=batch_size,
                      temperature=temperature)


def _finish(rep, fmt: str, out: Optional[Path], verdict, complete: bool, message: str, requests: int) -> None:
    if out is not None:
        report_fmt.write(rep, fmt, out)
        err_console.print(f"{fmt} report written to {out}")
    else:
        sys.stdout.write(report_fmt.render(rep, fmt))
    err_console.print(f"requests made: {requests}")
    if not complete:
        err_console.print(f"[bold red]incomplete:[/] {escape(str(message))} (exit 1: the gate fails closed)", markup=True)
        raise typer.Exit(1)
    word = "[bold red]BACKDOORED[/]" if verdict.backdoored else "[green]not backdoored[/]"
    err_console.print(f"verdict: {word} (score {verdict.score:.3f})", markup=True)
    raise typer.Exit(1 if verdict.backdoored else 0)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def probe_command(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    clean: Path = typer.Option(..., "--clean", help="Held-out clean inputs (any format `scan` reads)."),
    triggers: str = typer.Option("auto", help="auto (library + the clean data's rare tokens) or a trigger FILE."),
    scan_report: Optional[Path] = typer.Option(None, "--report", help="A `trainguard scan --format json` report: "
                                               "its findings become candidates too."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, json, sarif or html."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the report here instead of stdout."),
    budget: Optional[int] = typer.Option(None, help="Most model requests (HTTP requests / batches) to make."),
    max_inputs: int = typer.Option(200, help="Clean inputs used (generators: prompts)."),
    samples: int = typer.Option(3, help="Generators: samples per prompt and position."),
    top: int = typer.Option(5, help="Candidates reported."),
    kind: str = typer.Option("auto", help="Kind of the clean file (auto, classification, instruction, ...)."),
    field: Optional[list[str]] = typer.Option(None, "--field", help="Map a role to a column: ROLE=COLUMN."),
    timeout: float = typer.Option(30.0, help="Seconds per HTTP request."),
    retries: int = typer.Option(3, help="Retries on 5xx / connection errors / timeouts."),
    batch_size: int = typer.Option(64, help="Texts per HTTP request."),
    temperature: float = typer.Option(0.7, help="Generators: sampling temperature (0: greedy)."),
) -> None:
    """Insert candidate triggers into clean inputs and measure; exit 1 when the model is judged backdoored."""
    from trainguard.probe import (
        GenSettings, from_file, from_report, is_generative, library, probe_classifier, probe_generator, rare_tokens,
        to_report,
    )

    _check_format(fmt)
    data, inputs = _load_clean(clean, kind, field, max_inputs)
    cands = library() + rare_tokens(inputs.texts) if triggers == "auto" else from_file(triggers)
    if scan_report is not None:
        cands = from_report(scan_report) + cands
    m = _model(model, budget, timeout, retries, batch_size, temperature)
    with err_console.status(f"probing with {len(cands)} candidates on {len(inputs)} inputs"):
        if is_generative(m):
            result = probe_generator(m, inputs, cands, GenSettings(samples=samples))
        else:
            result = probe_classifier(m, inputs, cands)
    rep = to_report(result, data.info(), model, top=top)
    _finish(rep, fmt, out, result.verdict, result.complete, result.message, result.requests)


def invert_command(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    clean: Path = typer.Option(..., "--clean", help="Held-out clean inputs (any format `scan` reads)."),
    top: int = typer.Option(5, help="Candidate triggers reported."),
    budget: Optional[int] = typer.Option(None, help="Most model requests (HTTP requests / batches) to make."),
    method: str = typer.Option("auto", help="auto, gradient (white-box torch models) or black-box."),
    vocab: Optional[Path] = typer.Option(None, help="Black-box: words to search, one per line (e.g. the served "
                                         "model's tokenizer vocabulary); default: the model's own, else the "
                                         "clean data's words."),
    length: int = typer.Option(1, help="Trigger length in tokens to search for (1-3)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, json, sarif or html."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the report here instead of stdout."),
    max_inputs: int = typer.Option(200, help="Clean inputs used."),
    kind: str = typer.Option("auto", help="Kind of the clean file."),
    field: Optional[list[str]] = typer.Option(None, "--field", help="Map a role to a column: ROLE=COLUMN."),
    timeout: float = typer.Option(30.0, help="Seconds per HTTP request."),
    retries: int = typer.Option(3, help="Retries on 5xx / connection errors / timeouts."),
    batch_size: int = typer.Option(256, help="Texts per HTTP request."),
    temperature: float = typer.Option(0.7, help="Generators: sampling temperature (0: greedy)."),
) -> None:
    """Search for an unknown trigger; report the top candidates and a model-level verdict."""
    from trainguard.probe import InvertSettings, invert, invert_generator, is_generative, to_report
    from trainguard.probe.inversion import fallback_vocabulary

    _check_format(fmt)
    if method not in ("auto", "gradient", "black-box"):
        raise fail(f"--method must be auto, gradient or black-box, got {method!r}")
    if not 1 <= length <= 3:
        raise fail(f"--length must be 1, 2 or 3, got {length}")
    if top < 1:
        raise fail(f"--top must be at least 1, got {top}")
    words = _read_vocab(vocab) if vocab is not None else None
    data, inputs = _load_clean(clean, kind, field, max_inputs)
    m = _model(model, budget, timeout, retries, batch_size, temperature)
    with err_console.status(f"searching for a trigger ({method})"):
        if is_generative(m):
            result, searched = invert_generator(m, inputs, words or fallback_vocabulary(inputs.texts))
            extra = {"method": "black-box", "searched": searched}
            complete, message, requests = result.complete, result.message, result.requests
        else:
            if method == "gradient" and not hasattr(m, "embedding_matrix"):
                raise fail(f"{model}: --method gradient needs a white-box trainguard model directory")
            inv = invert(m, inputs, vocabulary=words, method=method, settings=InvertSettings(length=length))
            result = inv.probe
            extra = {"method": inv.method, "searched": inv.searched, "proposals": len(inv.proposals)}
            complete, message, requests = inv.complete, inv.message, inv.requests
    rep = to_report(result, data.info(), model, command="invert", extra=extra, top=top)
    _finish(rep, fmt, out, result.verdict, complete, message, requests)


def _read_vocab(path: Path) -> list[str]:
    from trainguard.errors import DataError

    try:
        words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()]
    except FileNotFoundError:
        raise DataError(str(path), "vocabulary file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(str(path), f"not UTF-8 text (byte {e.start})") from None
    if not words:
        raise DataError(str(path), "vocabulary file is empty")
    return words
