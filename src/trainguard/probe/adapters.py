"""What the prober needs from a model, and adapters for a plain Python callable.

Two black-box shapes (a classifier that returns per-label probabilities, a
generator that returns text) and one white-box extension (embedding matrix and
a forward pass from embeddings, for gradient-guided trigger search). Every
adapter counts its calls and charges them to a shared `RequestBudget`, so a
probe against a paid or rate-limited endpoint stops at a known cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from trainguard.errors import ConfigError, TrainguardError


class BudgetExhausted(TrainguardError):
    """The request budget is spent; callers keep what they measured so far."""

    def __init__(self, used: int, limit: int):
        self.used, self.limit = used, limit
        super().__init__(f"request budget spent: {used} of {limit} requests made; results are partial")


@dataclass
class RequestBudget:
    """A shared counter of model calls (HTTP requests, or batches for local models)."""

    limit: int | None = None
    used: int = 0

    def spend(self, n: int = 1) -> None:
        if self.limit is not None and self.used + n > self.limit:
            raise BudgetExhausted(self.used, self.limit)
        self.used += n

    @property
    def left(self) -> int | None:
        return None if self.limit is None else self.limit - self.used


@runtime_checkable
class ClassifierModel(Protocol):
    """Black-box classifier: probabilities (or scores) per label, columns in `labels` order."""

    labels: list[str]
    budget: RequestBudget

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class GenerativeModel(Protocol):
    """Black-box text generator (causal LM or chat endpoint)."""

    budget: RequestBudget

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]: ...


@runtime_checkable
class WhiteBoxClassifier(ClassifierModel, Protocol):
    """A torch classifier whose input embeddings the prober may differentiate through.

    `encode` maps texts to token-id lists in the model's own tokenisation;
    `vocabulary[i]` is the text of token id i (what gets inserted into a
    text when id i is proposed as a trigger); `special_ids` are never proposed.
    """

    vocabulary: list[str]
    special_ids: set[int]

    def encode(self, texts: Sequence[str]) -> list[list[int]]: ...

    def embedding_matrix(self) -> Any: ...  # torch.Tensor [V, d]

    def logits_from_embeds(self, embeds: Any, mask: Any) -> Any: ...  # [B, T, d], [B, T] -> [B, C]


def batched(items: Sequence[Any], size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def checked_scores(scores: Any, n_texts: int, n_labels: int, where: str) -> np.ndarray:
    """Validate a model's score matrix: one finite row per text, one column per label."""
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise TrainguardError(f"{where}: scores are not a numeric matrix") from None
    if arr.shape != (n_texts, n_labels):
        raise TrainguardError(f"{where}: expected scores of shape ({n_texts}, {n_labels}), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise TrainguardError(f"{where}: scores contain NaN or infinity")
    return arr


class CallableClassifier:
    """Wrap `fn(texts) -> array [n, n_labels]`; each batch is one charged call."""

    def __init__(self, fn: Callable[[list[str]], Any], labels: Sequence[str], batch_size: int = 256,
                 budget: RequestBudget | None = None):
        if not labels:
            raise ConfigError("a classifier needs at least one label")
        self.fn, self.labels, self.batch_size = fn, [str(x) for x in labels], batch_size
        self.budget = budget or RequestBudget()

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        out = [np.zeros((0, len(self.labels)))]
        for chunk in batched(list(texts), self.batch_size):
            self.budget.spend()
            out.append(checked_scores(self.fn(list(chunk)), len(chunk), len(self.labels), "callable classifier"))
        return np.concatenate(out)


class CallableGenerator:
    """Wrap `fn(prompts, max_new_tokens) -> list[str]`; each batch is one charged call."""

    def __init__(self, fn: Callable[[list[str], int], Sequence[str]], batch_size: int = 64,
                 budget: RequestBudget | None = None):
        self.fn, self.batch_size = fn, batch_size
        self.budget = budget or RequestBudget()

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        out: list[str] = []
        for chunk in batched(list(prompts), self.batch_size):
            self.budget.spend()
            got = list(self.fn(list(chunk), max_new_tokens))
            if len(got) != len(chunk) or not all(isinstance(g, str) for g in got):
                raise TrainguardError(f"callable generator: expected {len(chunk)} strings, got {len(got)} items")
            out.extend(got)
        return out
