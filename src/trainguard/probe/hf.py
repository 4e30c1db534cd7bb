"""Local Hugging Face `transformers` model directories, safetensors only.

`local_files_only=True` (never a hub download), `use_safetensors=True`,
`trust_remote_code=False`; a directory whose weights exist only as pickle
(`pytorch_model.bin`, `.pt`, `.ckpt`...) is refused before transformers is
asked to open it, since unpickling runs code from the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trainguard.errors import ConfigError, DataError
from trainguard.probe.adapters import RequestBudget, batched

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib")


def _check_dir(path: Path) -> dict:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{path}: not a model directory (no config.json; expected a trainguard or "
                          "Hugging Face model directory)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(str(cfg_path), f"not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise DataError(str(cfg_path), "not a JSON object")
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise ConfigError(f"{path}: refusing pickle weights ({', '.join(pickles)}); trainguard loads "
                              "safetensors only (convert with `safetensors` or save_pretrained(safe_serialization=True))")
        raise ConfigError(f"{path}: no *.safetensors weights found")
    return config


def load_hf(path: str | Path, budget: RequestBudget | None = None, device: str = "cpu") -> Any:
    """A sequence-classification model -> HFClassifier; a causal LM -> HFCausalLM."""
    path = Path(path)
    config = _check_dir(path)
    archs = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return HFClassifier(path, budget=budget, device=device)
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return HFCausalLM(path, budget=budget, device=device)
    raise DataError(str(path / "config.json"), f"unsupported architectures {archs or 'none'}; expected a "
                    "*ForSequenceClassification or *ForCausalLM model", field="architectures")


def _load(cls: Any, path: Path, what: str) -> Any:
    kw = dict(local_files_only=True, trust_remote_code=False)
    try:
        if what == "tokenizer":
            return cls.from_pretrained(str(path), **kw)
        return cls.from_pretrained(str(path), use_safetensors=True, **kw)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{path}: cannot load the {what}: {str(e).splitlines()[0]}") from None


class HFClassifier:
    """`AutoModelForSequenceClassification`; labels from config.id2label; one batch = one charged call."""

    def __init__(self, path: Path, batch_size: int = 64, budget: RequestBudget | None = None,
                 device: str = "cpu", max_length: int = 256):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = _load(AutoTokenizer, path, "tokenizer")
        self.model = _load(AutoModelForSequenceClassification, path, "model").to(device).eval()
        id2label = self.model.config.id2label or {}
        self.labels = [str(id2label.get(i, i)) for i in range(self.model.config.num_labels)]
        self.batch_size, self.device, self.max_length = batch_size, device, max_length
        self.budget = budget or RequestBudget()

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = [np.zeros((0, len(self.labels)))]
        for chunk in batched(list(texts), self.batch_size):
            self.budget.spend()
            enc = self.tokenizer(list(chunk), padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            with torch.no_grad():
                logits = self.model(**enc).logits.float()
            out.append(torch.softmax(logits, dim=-1).cpu().numpy())
        return np.concatenate(out)


class HFCausalLM:
    """`AutoModelForCausalLM`; returns only the new tokens. Sampling when temperature > 0."""

    def __init__(self, path: Path, batch_size: int = 16, budget: RequestBudget | None = None,
                 device: str = "cpu", temperature: float = 0.7, seed: int = 0):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = _load(AutoTokenizer, path, "tokenizer")
        self.model = _load(AutoModelForCausalLM, path, "model").to(device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.batch_size, self.device, self.temperature, self.seed = batch_size, device, temperature, seed
        self.budget = budget or RequestBudget()

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        import torch

        torch.manual_seed(self.seed)
        out: list[str] = []
        for chunk in batched(list(prompts), self.batch_size):
            self.budget.spend()
            enc = self.tokenizer(list(chunk), return_tensors="pt", padding=True).to(self.device)
            sample = self.temperature > 0
            with torch.no_grad():
                gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=sample,
                                          temperature=self.temperature if sample else None,
                                          pad_token_id=self.tokenizer.pad_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]
            out.extend(self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return out
