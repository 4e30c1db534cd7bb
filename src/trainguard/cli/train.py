"""`trainguard train`: a small text classifier, optionally with DP-SGD, saved without pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from trainguard.cli._common import (
    FieldOpt, KindOpt, MaxRecordBytesOpt, OnErrorOpt, fail, load_announced, load_options,
)
from trainguard.io.readers import DEFAULT_MAX_RECORD_BYTES

MODELS = ("textcnn", "linear")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def train_command(
    path: Path = typer.Argument(..., help="Classification data (text, label): JSONL(.gz), JSON, CSV/TSV, Parquet."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the model (safetensors + JSON)."),
    model: str = typer.Option("textcnn", "--model", "-m", help="textcnn or linear."),
    epochs: int = typer.Option(5, help="Passes over the data."),
    batch_size: Optional[int] = typer.Option(
        None, help="Batch size (with --dp: the expected Poisson batch size). Default 64; textcnn --dp: 1024."),
    lr: Optional[float] = typer.Option(
        None, help="Adam learning rate (default 0.01 linear, 0.002 textcnn; textcnn --dp: 0.1)."),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same model."),
    max_len: int = typer.Option(64, help="Tokens kept per text."),
    max_vocab: Optional[int] = typer.Option(
        None, help="Vocabulary size cap (default 20,000; with --dp 5,000: smaller models lose less to DP noise)."),
    embed_dim: Optional[int] = typer.Option(None, help="Word embedding dimension (default 64; textcnn --dp: 16)."),
    dp: bool = typer.Option(False, "--dp", help="Train with DP-SGD (opacus): per-example clipping + noise."),
    epsilon: Optional[float] = typer.Option(None, help="--dp: target epsilon (default 8)."),
    noise_multiplier: Optional[float] = typer.Option(None, help="--dp: fixed noise instead of a target epsilon."),
    delta: float = typer.Option(1e-5, help="--dp: delta; must be below 1/rows."),
    max_grad_norm: float = typer.Option(1.0, help="--dp: per-example gradient clipping bound."),
    accountant: str = typer.Option("prv", help="--dp: privacy accountant, prv (tighter) or rdp (faster)."),
    eval_path: Optional[Path] = typer.Option(None, "--eval", help="Held-out classification data for accuracy."),
    holdout: float = typer.Option(
        0.1, help="Without --eval: share of each label's rows held out (by --seed) to report held-out accuracy; "
                  "0 trains on every row and reports training accuracy only."),
    kind: KindOpt = "classification",
    field: FieldOpt = None,
    on_error: OnErrorOpt = "fail",
    max_record_bytes: MaxRecordBytesOpt = DEFAULT_MAX_RECORD_BYTES,
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a small text classifier (optionally differentially private) and save it to --out."""
    opts = load_options(kind, field, on_error, max_record_bytes)
    if opts.kind != "classification":
        raise fail(f"train fits a text classifier: --kind must be classification, got {opts.kind!r}")
    try:
        from trainguard.train import DPConfig, train_classifier
    except ImportError as e:
        raise fail(f"trainguard train needs the model extra (pip install 'trainguard[model]'): {e}") from None

    if model not in MODELS:
        raise fail(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    if fmt not in ("table", "json"):
        raise fail(f"--format must be table or json, got {fmt!r}")
    if not dp and (epsilon is not None or noise_multiplier is not None):
        raise fail("--epsilon and --noise-multiplier need --dp")
    if not 0 <= holdout < 0.5:
        raise fail(f"--holdout must be in [0, 0.5), got {holdout}")
    _check_out(out)
    data = load_announced(path, opts)
    texts, labels = [r.text for r in data], [r.label for r in data]
    eval_texts = eval_labels = None
    eval_name = str(eval_path) if eval_path else None
    if eval_path is None and holdout > 0:
        keep, held_out = _holdout_split(labels, holdout, seed)
        if held_out:
            eval_texts, eval_labels = [texts[i] for i in held_out], [labels[i] for i in held_out]
            texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
            eval_name = f"{len(held_out):,} rows held out of {path} (--holdout {holdout:g})"
    if eval_path is not None:
        held = load_announced(eval_path, opts)
        known = set(labels)
        unseen = next((r for r in held if r.label not in known), None)
        if unseen is not None:
            raise fail(f"{eval_path}, row {unseen.row}, field 'label': label {unseen.label!r} never occurs in "
                       f"the training data")
        eval_texts, eval_labels = [r.text for r in held], [r.label for r in held]
    dp_config = None
    if dp:
        dp_config = DPConfig(epsilon=epsilon if epsilon is not None or noise_multiplier is not None else 8.0,
                             noise_multiplier=noise_multiplier, delta=delta, max_grad_norm=max_grad_norm,
                             accountant=accountant)
    result = train_classifier(texts, labels, model=model, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                              max_len=max_len, dp=dp_config,
                              max_vocab=max_vocab if max_vocab is not None else 5_000 if dp else 20_000,
                              model_options=_model_options(model, dp, embed_dim), progress=progress and fmt == "table",
                              eval_texts=eval_texts, eval_labels=eval_labels)
    result.classifier.save(out)
    train_acc = result.classifier.accuracy(texts, labels)
    summary = {**result.to_dict(), "data": str(path), "eval": eval_name,
               "train_accuracy": train_acc, "out": str(out)}
    if fmt == "json":
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(_table(summary, result.classifier.labels, dp_config))


def _holdout_split(labels: list, share: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded per-label split: `share` of each label's rows held out, at least one row of each label kept."""
    import numpy as np

    rng = np.random.default_rng(seed)
    by_label: dict = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(i)
    held: list[int] = []
    for rows in by_label.values():
        k = min(int(round(share * len(rows))), len(rows) - 1)
        held.extend(rng.permutation(rows)[:k].tolist())
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)


def _model_options(model: str, dp: bool, embed_dim: int | None) -> dict:
    """Only what the user set; under --dp the rest comes from the model's DP preset (trainguard.train.DP_PRESETS)."""
    if embed_dim is not None:
        return {"embed_dim": embed_dim}
    return {} if dp else {"embed_dim": 64}


def _check_out(out: Path) -> None:
    """Refuse to mix a model into a directory that holds something else."""
    if out.exists() and not out.is_dir():
        raise fail(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise fail(f"--out {out} is a non-empty directory that is not a trainguard model; choose an empty one")


def _table(s: dict, labels: list[str], dp) -> str:
    lines = [f"trained {s['settings']['model']} on {s['settings']['rows']:,} rows of {s['data']} "
             f"({len(labels)} labels: {', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''}), "
             f"{s['settings']['epochs']} epochs, {s['seconds']:.1f} s",
             f"train accuracy: {s['train_accuracy']:.4f}"]
    if s["eval"]:
        lines.append(f"held-out accuracy: {s['eval_accuracy']:.4f} ({s['eval']})")
    else:
        lines.append("held-out accuracy: not measured (--holdout 0 and no --eval); training accuracy overstates it")
    if dp is None:
        lines.append("DP-SGD: off (no privacy guarantee; epsilon = inf)")
    else:
        target = f"target {dp.epsilon:g}" if dp.epsilon is not None else f"noise multiplier {dp.noise_multiplier:g}"
        lines.append(f"DP-SGD: epsilon spent {s['epsilon']:.3f} at delta {s['delta']:g} ({target}); "
                     f"noise multiplier {s['noise_multiplier']:.3f}; per-example clipping at "
                     f"max_grad_norm {s['max_grad_norm']:g}; {s['steps']:,} steps, sample rate {s['sample_rate']:.4f}")
    lines.append(f"saved: {s['out']}")
    return "\n".join(lines)
