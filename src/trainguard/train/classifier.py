"""`TextClassifier`: vocabulary + module + label names, saved without pickle.

A saved model is a directory of three files: `model.safetensors` (weights),
`config.json` (architecture, labels, max_len, how it was trained) and
`vocab.json`. Loading reads only those and builds the module from the config,
so nothing in the directory can choose what code runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from trainguard._version import __version__
from trainguard.errors import ConfigError, DataError
from trainguard.train.models import _TextModule, build_model
from trainguard.train.vocab import Vocab

FORMAT = "trainguard.text-classifier/1"
WEIGHTS, CONFIG, VOCAB = "model.safetensors", "config.json", "vocab.json"
FILES = (WEIGHTS, CONFIG, VOCAB)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".joblib")


@dataclass
class TextClassifier:
    vocab: Vocab
    module: _TextModule
    labels: list[str]
    max_len: int = 64
    training: dict[str, Any] = field(default_factory=dict)  # how it was trained (epochs, dp, epsilon...)

    def __post_init__(self) -> None:
        if len(self.labels) != self.module.config()["num_classes"]:
            raise ConfigError(f"{len(self.labels)} label names for a model with "
                              f"{self.module.config()['num_classes']} outputs")
        self.module.eval()

    @property
    def embedding(self) -> torch.nn.Embedding:
        return self.module.embedding

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self.vocab.encode(texts, self.max_len)

    def logits(self, texts: Sequence[str], batch_size: int = 512) -> np.ndarray:
        """[n, classes] raw scores, in eval mode and without gradients."""
        if isinstance(texts, str):
            raise ConfigError("pass a list of texts, not a single string")
        self.module.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                out.append(self.module(self.encode(texts[start : start + batch_size])).float().numpy())
        n_cls = len(self.labels)
        return np.concatenate(out) if out else np.zeros((0, n_cls), dtype=np.float32)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 512) -> np.ndarray:
        z = self.logits(texts, batch_size)
        z = z - z.max(axis=1, keepdims=True) if len(z) else z
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True) if len(p) else p

    def predict(self, texts: Sequence[str], batch_size: int = 512) -> list[str]:
        return [self.labels[i] for i in self.logits(texts, batch_size).argmax(axis=1)]

    def accuracy(self, texts: Sequence[str], labels: Sequence[Any]) -> float:
        if len(texts) != len(labels):
            raise ConfigError(f"{len(texts)} texts but {len(labels)} labels")
        if not texts:
            raise ConfigError("accuracy of an empty set is undefined")
        pred = self.predict(texts)
        return float(np.mean([p == str(y) for p, y in zip(pred, labels)]))

    # --- saving and loading -------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the three files into `directory` (created if needed); nothing else is written."""
        from safetensors.torch import save_file

        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise ConfigError(f"{d}: exists and is not a directory")
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(d / WEIGHTS), metadata={"format": FORMAT})
        config = {"format": FORMAT, "trainguard_version": __version__, "model": self.module.config(),
                  "labels": list(self.labels), "max_len": self.max_len, "training": self.training}
        (d / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (d / VOCAB).write_text(json.dumps(self.vocab.to_dict(), ensure_ascii=False) + "\n", encoding="utf-8")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "TextClassifier":
        d = Path(directory)
        if not d.is_dir():
            raise ConfigError(f"{d}: not a directory (a trainguard model is a directory with {', '.join(FILES)})")
        pickles = sorted(p.name for p in d.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        missing = [f for f in FILES if not (d / f).is_file()]
        if missing:
            hint = f"; found {', '.join(pickles)}, which trainguard never loads (pickle)" if pickles else ""
            raise ConfigError(f"{d}: not a trainguard model: missing {', '.join(missing)}{hint}")
        if pickles:
            raise ConfigError(f"{d}: refusing a model directory that also holds pickle files ({', '.join(pickles)})")
        config = _read_json(d / CONFIG)
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise DataError(str(d / CONFIG), f"not a trainguard model config (expected format {FORMAT!r})")
        for key, typ in (("model", dict), ("labels", list), ("max_len", int)):
            if not isinstance(config.get(key), typ):
                raise DataError(str(d / CONFIG), f"missing or not a {typ.__name__}", field=key)
        vocab = Vocab.from_dict(_read_json(d / VOCAB), source=str(d / VOCAB))
        try:
            module = build_model(config["model"])
        except ConfigError as e:
            raise DataError(str(d / CONFIG), str(e), field="model") from None
        if module.embedding.num_embeddings != len(vocab):
            raise DataError(str(d / CONFIG), f"vocab_size {module.embedding.num_embeddings} does not match "
                            f"{VOCAB} ({len(vocab)} tokens)", field="model")
        module.load_state_dict(_read_weights(d / WEIGHTS, module), strict=True)
        labels = [str(x) for x in config["labels"]]
        try:
            return cls(vocab, module, labels, config["max_len"], dict(config.get("training") or {}))
        except ConfigError as e:
            raise DataError(str(d / CONFIG), str(e), field="labels") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(str(path), f"not valid JSON: {e}") from None


def _read_weights(path: Path, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """safetensors only; every expected tensor present with the expected shape, nothing extra."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(str(path), f"not a readable safetensors file: {e}") from None
    expected = {k: v.shape for k, v in module.state_dict().items()}
    if set(state) != set(expected):
        raise DataError(str(path), f"tensors {sorted(state)} do not match the model's {sorted(expected)}")
    for k, shape in expected.items():
        if tuple(state[k].shape) != tuple(shape):
            raise DataError(str(path), f"tensor shape {tuple(state[k].shape)}, expected {tuple(shape)}", field=k)
    return state
