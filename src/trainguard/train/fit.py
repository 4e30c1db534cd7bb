"""`train_classifier`: the one training loop, with or without DP-SGD.

The DP and non-DP runs share everything but the opacus wrapping, so a
benchmark's difference between them is the privacy mechanism, not the loop.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainguard.errors import ConfigError
from trainguard.progress import meter
from trainguard.train.classifier import TextClassifier
from trainguard.train.dp import DPConfig, make_private, validate_module
from trainguard.train.models import MODELS, build_model
from trainguard.train.vocab import PAD_ID, Vocab

DEFAULT_LR = {"linear": 1e-2, "textcnn": 2e-3}
DEFAULT_BATCH = 64


@dataclass(frozen=True)
class DPPreset:
    """Defaults a model gets under DP-SGD where the caller gave none (anything the caller gives wins)."""

    lr: float
    batch_size: int
    model_options: dict[str, Any]


# Kim's TextCNN (ReLU, max-pool, dropout 0.5) does not train under DP-SGD noise: it stayed at the majority class.
# This variant does: few parameters, tanh (bounded, Papernot et al. 2021), a mean over every window besides the
# max (gradient reaches every token, as in the bag-of-words model that does train), GroupNorm, no dropout (the
# noise regularises), big Poisson batches, a high Adam rate. Chosen on a held-out split of SST-2 *train* (not
# dev); see docs/dp-training.md.
DP_PRESETS: dict[str, DPPreset] = {
    "textcnn": DPPreset(lr=0.1, batch_size=1024, model_options={
        "embed_dim": 16, "filters": 16, "activation": "tanh", "pool": "mean", "groups": 4, "dropout": 0.0}),
}


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float  # mean training loss over the epoch's examples
    seconds: float
    epsilon: float | None = None  # privacy spent so far (DP runs)
    eval_accuracy: float | None = None


@dataclass
class TrainResult:
    classifier: TextClassifier
    history: list[EpochStats]
    epsilon: float | None  # total spent at `delta`; None without DP (no guarantee, "infinite")
    delta: float | None
    noise_multiplier: float | None
    max_grad_norm: float | None
    steps: int
    sample_rate: float
    seconds: float
    eval_accuracy: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "classifier"}
        out["dp"] = self.epsilon is not None
        out["labels"] = list(self.classifier.labels)
        return out


def _label_names(labels: Sequence[Any]) -> list[str]:
    from trainguard.attacks.base import natural_key

    return sorted({str(y) for y in labels}, key=natural_key)


def train_classifier(
    texts: Sequence[str],
    labels: Sequence[Any],
    *,
    model: str = "textcnn",
    epochs: int = 5,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    max_len: int = 64,
    dp: DPConfig | None = None,
    progress: bool = True,
    eval_texts: Sequence[str] | None = None,
    eval_labels: Sequence[Any] | None = None,
    min_count: int = 1,
    max_vocab: int | None = 20_000,
    model_options: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a small text classifier; the same seed gives the same weights (CPU).

    With `dp`, training is DP-SGD (opacus): Poisson-sampled batches of expected
    size `batch_size`, per-example clipping to `dp.max_grad_norm`, Gaussian noise,
    and epsilon measured by the accountant after every epoch. Under DP a model in
    `DP_PRESETS` gets that preset's learning rate, batch size and model options
    wherever the caller left them unset; otherwise batch 64 and `DEFAULT_LR`.
    """
    preset = DP_PRESETS.get(model) if dp is not None else None
    if batch_size is None:
        batch_size = preset.batch_size if preset else DEFAULT_BATCH
    if lr is None and preset:
        lr = preset.lr
    if preset:
        model_options = {**preset.model_options, **(model_options or {})}
    _check_args(texts, labels, model, epochs, batch_size, lr, max_len, eval_texts, eval_labels)
    # Init, dropout, and opacus' Poisson sampling and noise all draw from torch's global RNG; a forked RNG
    # seeds them without moving the caller's RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train(texts, labels, model=model, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                      max_len=max_len, dp=dp, progress=progress, eval_texts=eval_texts, eval_labels=eval_labels,
                      min_count=min_count, max_vocab=max_vocab, model_options=model_options)


def _train(texts, labels, *, model, epochs, batch_size, lr, seed, max_len, dp, progress, eval_texts, eval_labels,
           min_count, max_vocab, model_options) -> TrainResult:
    names = _label_names(labels)
    if len(names) < 2:
        raise ConfigError(f"training needs at least 2 distinct labels, got {names}")
    index = {n: i for i, n in enumerate(names)}
    vocab = Vocab.build(texts, min_count=min_count, max_size=max_vocab)
    ids = vocab.encode(texts, max_len)
    y = torch.tensor([index[str(v)] for v in labels], dtype=torch.long)
    module = build_model({"name": model, "vocab_size": len(vocab), "num_classes": len(names),
                          **(model_options or {})})
    lr = DEFAULT_LR[model] if lr is None else lr
    settings = {"model": model, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                "max_len": max_len, "min_count": min_count, "max_vocab": max_vocab, "rows": len(texts),
                "dp": asdict(dp) if dp else None}
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(ids, y), batch_size=batch_size, shuffle=True, generator=gen)
    run = None
    if dp is not None:
        dp.check_delta(len(texts))
        module = validate_module(module)
        optimizer = torch.optim.Adam(module.parameters(), lr=lr)
        run = make_private(module, optimizer, loader, dp, epochs)
        train_module, optimizer, loader, loss_fn = run.module, run.optimizer, run.loader, run.criterion
    else:
        train_module, optimizer = module, torch.optim.Adam(module.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss()
    classifier = TextClassifier(vocab, module, names, max_len)
    history: list[EpochStats] = []
    steps = 0
    start = time.perf_counter()
    with meter("training", epochs * len(loader), enabled=progress) as bar:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            train_module.train()
            total, seen = 0.0, 0
            for xb, yb in loader:
                real = len(yb)
                if not real:
                    # An empty Poisson batch must still be a (noise-only) step for the accounting to hold;
                    # opacus' clipping cannot take a 0-row batch, so one all-<pad> row stands in (as
                    # opacus' own rand_on_empty does): no real row is used.
                    xb, yb = torch.full((1, 1), PAD_ID, dtype=torch.long), torch.zeros(1, dtype=torch.long)
                xb = _trim(xb)
                optimizer.zero_grad(set_to_none=True)
                logits = train_module(xb)
                loss = loss_fn(logits, yb)
                with warnings.catch_warnings():
                    # opacus' hooks fire on outputs only: inputs are token ids, which have no gradient.
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    loss.backward()
                optimizer.step()
                steps += 1
                total += float(loss.detach()) * real
                seen += real
                bar.advance()
            eps = run.epsilon(dp.delta) if run is not None else None  # type: ignore[union-attr]
            acc = classifier.accuracy(eval_texts, eval_labels) if eval_texts is not None else None  # type: ignore[arg-type]
            history.append(EpochStats(epoch, total / max(seen, 1), time.perf_counter() - t0, eps, acc))
            bar.describe(f"epoch {epoch}/{epochs} loss {history[-1].loss:.3f}" + (f" eps {eps:.2f}" if eps else ""))
    if run is not None:
        run.module.remove_hooks()
        run.module.to_standard_module()  # drops grad_sample attributes from the parameters
    module.eval()
    epsilon = history[-1].epsilon if run is not None else None
    classifier.training = {**settings, "epsilon": epsilon,
                           "noise_multiplier": run.noise_multiplier if run is not None else None}
    return TrainResult(
        classifier=classifier, history=history, epsilon=epsilon, delta=dp.delta if dp else None,
        noise_multiplier=run.noise_multiplier if run is not None else None,
        max_grad_norm=dp.max_grad_norm if dp else None, steps=steps,
        sample_rate=min(1.0, batch_size / len(texts)), seconds=time.perf_counter() - start,
        eval_accuracy=history[-1].eval_accuracy, settings=settings)


def _trim(xb: torch.Tensor) -> torch.Tensor:
    """Drop all-pad columns at the end of a batch (rows are right-padded)."""
    width = int((xb != PAD_ID).sum(dim=1).max())
    return xb[:, : max(width, 1)].contiguous()


def _check_args(texts, labels, model, epochs, batch_size, lr, max_len, eval_texts, eval_labels) -> None:
    if isinstance(texts, str):
        raise ConfigError("texts must be a list of strings, not one string")
    if len(texts) != len(labels):
        raise ConfigError(f"{len(texts)} texts but {len(labels)} labels")
    if not texts:
        raise ConfigError("no training rows")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise ConfigError(f"text {bad} is a {type(texts[bad]).__name__}, not a string")
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; expected one of: {', '.join(MODELS)}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("max_len", max_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be a positive number, got {lr!r}")
    if (eval_texts is None) != (eval_labels is None):
        raise ConfigError("give both eval_texts and eval_labels, or neither")
    if eval_texts is not None and len(eval_texts) != len(eval_labels):  # type: ignore[arg-type]
        raise ConfigError(f"{len(eval_texts)} eval texts but {len(eval_labels)} eval labels")  # type: ignore[arg-type]
