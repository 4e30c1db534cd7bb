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
from trainguard.cli._common import (
    FieldOpt, KindOpt, MaxRecordBytesOpt, OnErrorOpt, err_console, fail, load_announced, load_options,
)
from trainguard.io.readers import DEFAULT_MAX_RECORD_BYTES
from trainguard.report import FORMATS


def register(app: typer.Typer) -> None:
    app.command("probe")(probe_command)
    app.command("invert")(invert_command)
    app.command("serve-model")(serve_model_command)


def serve_model_command(
    model: Path = typer.Argument(..., help="A LoRA adapter directory (over the packaged SmolLM2) or a Hugging "
                                 "Face causal LM directory."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback: the endpoint has no authentication)."),
    port: int = typer.Option(8000, help="TCP port (0: any free port)."),
    name: str = typer.Option("local", help="The model name the endpoint answers to."),
) -> None:
    """Serve a local generator as an OpenAI-compatible chat endpoint, to probe it as it will be deployed."""
    import ipaddress
    import time

    from trainguard.probe import load_model

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise fail(f"--host {host}: serve-model binds loopback only (it has no authentication)")
    from trainguard.probe import is_generative
    from trainguard.probe.serve import ChatServer

    m = load_model(str(model))
    if not is_generative(m):
        raise fail(f"{model}: not a generator (a classifier is probed directly: trainguard probe --model {model})")
    server = ChatServer(m, host=host, port=port, name=name).start()
    err_console.print(f"serving {model} at {server.spec}  (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


MODEL_HELP = ("A model directory (trainguard TextClassifier, LoRA adapter or Hugging Face, safetensors only), "
              "http(s)://URL (JSON classification API, docs/probe.md) or openai+http(s)://HOST/v1?model=NAME.")
REFERENCE_HELP = ("Generators: the model before fine-tuning (same spec forms); a repeated output counts only "
                  "where it does not repeat as much. Default for a LoRA adapter directory: its base model.")


def _finish(run, fmt: str, out: Optional[Path]) -> None:
    """Render the library's report, print the exact request count and any notes, exit with the verdict."""
    if out is not None:
        report_fmt.write(run.report, fmt, out)
        err_console.print(f"{fmt} report written to {out}")
    else:
        sys.stdout.write(report_fmt.render(run.report, fmt))
    for note in run.notes:
        err_console.print(f"[bold yellow]note:[/] {escape(note)}", markup=True)
    err_console.print(f"requests made: {run.requests}")
    if not run.complete:
        err_console.print(f"[bold red]incomplete:[/] {escape(str(run.message))} (exit 1: the gate fails closed)",
                          markup=True)
        raise typer.Exit(1)
    word = "[bold red]BACKDOORED[/]" if run.verdict.backdoored else "[green]not backdoored[/]"
    err_console.print(f"verdict: {word} (score {run.verdict.score:.3f})", markup=True)
    raise typer.Exit(1 if run.verdict.backdoored else 0)


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
    kind: KindOpt = "auto",
    field: FieldOpt = None,
    on_error: OnErrorOpt = "fail",
    max_record_bytes: MaxRecordBytesOpt = DEFAULT_MAX_RECORD_BYTES,
    timeout: float = typer.Option(30.0, help="Seconds per HTTP request."),
    retries: int = typer.Option(3, help="Retries on 5xx / connection errors / timeouts."),
    batch_size: int = typer.Option(64, help="Texts per HTTP request."),
    temperature: float = typer.Option(0.7, help="Generators: sampling temperature (0: greedy)."),
    reference: Optional[str] = typer.Option(None, "--reference", help=REFERENCE_HELP),
) -> None:
    """Insert candidate triggers into clean inputs and measure; exit 1 when the model is judged backdoored."""
    from trainguard.probe.run import ModelOptions, run_probe

    _check_format(fmt)
    clean_data = load_announced(clean, load_options(kind, field, on_error, max_record_bytes))
    with err_console.status("probing"):
        run = run_probe(model, clean_data, triggers=triggers, scan_report=scan_report, max_inputs=max_inputs,
                        samples=samples, top=top, reference=reference,
                        options=ModelOptions(budget, timeout, retries, batch_size, temperature))
    _finish(run, fmt, out)


def invert_command(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    clean: Path = typer.Option(..., "--clean", help="Held-out clean inputs (any format `scan` reads)."),
    top: int = typer.Option(5, help="Candidate triggers reported."),
    budget: Optional[int] = typer.Option(None, help="Most model requests (HTTP requests / batches) to make."),
    method: str = typer.Option("auto", help="auto, gradient (white-box torch models) or black-box."),
    vocab: Optional[Path] = typer.Option(None, help="Black-box: words to search, one per line (e.g. the served "
                                         "model's tokenizer vocabulary); default: the model's own, else the "
                                         "clean data's words."),
    vocab_from: Optional[Path] = typer.Option(None, "--vocab-from", help="Search the word n-grams (1-4 words, "
                                              "seen in >= 3 rows) of this file's texts, e.g. the prompts the model "
                                              "was fine-tuned on; added to --vocab."),
    length: int = typer.Option(3, help="Longest trigger searched, in words (1-3): lengths 1, 2, 3 in turn, "
                               "stopping at the first that is flagged."),
    max_vocab: Optional[int] = typer.Option(None, "--max-vocab", help="Black-box: search only the first N "
                                            "vocabulary words; the cut is stated in the output."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, json, sarif or html."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the report here instead of stdout."),
    max_inputs: int = typer.Option(200, help="Clean inputs used."),
    kind: KindOpt = "auto",
    field: FieldOpt = None,
    on_error: OnErrorOpt = "fail",
    max_record_bytes: MaxRecordBytesOpt = DEFAULT_MAX_RECORD_BYTES,
    timeout: float = typer.Option(30.0, help="Seconds per HTTP request."),
    retries: int = typer.Option(3, help="Retries on 5xx / connection errors / timeouts."),
    batch_size: int = typer.Option(256, help="Texts per HTTP request."),
    temperature: float = typer.Option(0.7, help="Generators: sampling temperature (0: greedy)."),
    reference: Optional[str] = typer.Option(None, "--reference", help=REFERENCE_HELP),
) -> None:
    """Search for an unknown trigger (lengths 1..--length); report the top candidates and a model-level verdict."""
    from trainguard.probe.run import ModelOptions, run_invert

    _check_format(fmt)
    clean_data = load_announced(clean, load_options(kind, field, on_error, max_record_bytes))
    words = _read_vocab(vocab) if vocab is not None else None
    if vocab_from is not None:
        from trainguard.probe.candidates import phrases

        source = load_announced(vocab_from, load_options(kind, field, on_error, max_record_bytes))
        words = [*(words or []), *phrases([r.text for r in source.records])]
    with err_console.status(f"searching for a trigger ({method})"):
        run = run_invert(model, clean_data, top=top, method=method, vocabulary=words, length=length,
                         max_vocab=max_vocab, max_inputs=max_inputs, reference=reference,
                         options=ModelOptions(budget, timeout, retries, batch_size, temperature))
    _finish(run, fmt, out)


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
