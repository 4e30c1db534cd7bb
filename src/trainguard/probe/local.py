"""Local model adapters: the project's own TextClassifier (white-box) and model directories.

A directory is a trainguard TextClassifier when it holds `vocab.json` +
`config.json` in trainguard's format, a LoRA adapter over the packaged SmolLM2
when it holds `adapter_config.json` (see `lm.py`), otherwise a Hugging Face
model (see `hf.py`). Neither path ever unpickles: weights are safetensors only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trainguard.errors import ConfigError
from trainguard.probe.adapters import RequestBudget, batched


class TextClassifierModel:
    """White-box adapter over `trainguard.train.TextClassifier`; one batch = one charged call."""

    def __init__(self, classifier: Any, batch_size: int = 512, budget: RequestBudget | None = None):
        self.clf = classifier
        self.labels = list(classifier.labels)
        self.vocabulary = list(classifier.vocab.itos)
        from trainguard.train.vocab import PAD_ID, UNK_ID

        self.special_ids = {PAD_ID, UNK_ID}
        self.pad_id = PAD_ID
        self.batch_size = batch_size
        self.budget = budget or RequestBudget()

    @classmethod
    def load(cls, directory: str | Path, **kw: Any) -> "TextClassifierModel":
        from trainguard.train import TextClassifier

        return cls(TextClassifier.load(directory), **kw)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        out = [np.zeros((0, len(self.labels)))]
        for chunk in batched(list(texts), self.batch_size):
            self.budget.spend()
            out.append(self.clf.predict_proba(list(chunk), batch_size=self.batch_size))
        return np.concatenate(out)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.clf.vocab.ids(t)[: self.clf.max_len] for t in texts]

    def embedding_matrix(self) -> Any:
        return self.clf.module.embedding.weight

    def logits_from_embeds(self, embeds: Any, mask: Any) -> Any:
        self.clf.module.eval()
        return self.clf.module.forward_embeds(embeds, mask)


def is_textclassifier_dir(path: Path) -> bool:
    cfg = path / "config.json"
    if not (cfg.is_file() and (path / "vocab.json").is_file()):
        return False
    try:
        return str(json.loads(cfg.read_text(encoding="utf-8")).get("format", "")).startswith(
            "trainguard.text-classifier/")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False


def load_directory(path: str | Path, budget: RequestBudget | None = None) -> Any:
    """A model directory as a ClassifierModel or GenerativeModel."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: model not found (expected a model directory or an http(s):// endpoint)")
    if not p.is_dir():
        raise ConfigError(f"{p}: not a model directory (expected a trainguard or Hugging Face model directory)")
    if is_textclassifier_dir(p):
        return TextClassifierModel.load(p, budget=budget)
    from trainguard.probe.lm import LocalCausalLM, is_adapter_dir

    if is_adapter_dir(p):  # a LoRA adapter over the packaged SmolLM2 base
        return LocalCausalLM(p, budget=budget)
    from trainguard.probe.hf import load_hf

    return load_hf(p, budget=budget)
