"""The two small text classifiers: a mean bag-of-words and Kim's (2014) TextCNN.

Both are built only from layers opacus computes per-sample gradients for
(Embedding, Conv1d, Linear; no BatchNorm), and both expose `.embedding` and
`forward_embeds` so a prober can differentiate with respect to the input
embeddings (gradient-guided trigger inversion).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from trainguard.errors import ConfigError
from trainguard.train.vocab import PAD_ID


def _positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


class _TextModule(nn.Module):
    embedding: nn.Embedding

    def embed(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [B, L, D] with pad positions zeroed, mask [B, L] of 1.0 for real tokens).

        Pad rows are zeroed by the mask, not by `padding_idx`: DP-SGD noise reaches
        every parameter, so the <pad> row itself does not stay zero.
        """
        mask = (ids != PAD_ID).to(self.embedding.weight.dtype)
        return self.embedding(ids) * mask.unsqueeze(-1), mask

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        embeds, mask = self.embed(ids)
        return self.forward_embeds(embeds, mask)

    def forward_embeds(self, embeds: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        raise NotImplementedError


class LinearBoW(_TextModule):
    """fastText-style: mean of the word embeddings of a text, then one linear layer."""

    name = "linear"

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 64) -> None:
        super().__init__()
        _positive(vocab_size=vocab_size, num_classes=num_classes, embed_dim=embed_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.fc = nn.Linear(embed_dim, num_classes)

    def forward_embeds(self, embeds: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from [B, L, D] embeddings; mask [B, L] marks real tokens (None: all are)."""
        if mask is None:
            pooled = embeds.mean(dim=1)
        else:
            mask = mask.to(embeds.dtype)
            pooled = (embeds * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        return self.fc(pooled)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "vocab_size": self.embedding.num_embeddings,
                "num_classes": self.fc.out_features, "embed_dim": self.embedding.embedding_dim}


class TextCNN(_TextModule):
    """Kim (2014): convolutions of widths 3/4/5 over word embeddings, max-pool over time, dropout, linear."""

    name = "textcnn"

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 64, filters: int = 64,
                 widths: tuple[int, ...] = (3, 4, 5), dropout: float = 0.5) -> None:
        super().__init__()
        _positive(vocab_size=vocab_size, num_classes=num_classes, embed_dim=embed_dim, filters=filters)
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ConfigError(f"conv widths must be positive integers, got {widths!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.widths = tuple(int(w) for w in widths)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, filters, w) for w in self.widths)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(filters * len(self.widths), num_classes)

    def forward_embeds(self, embeds: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from [B, L, D] embeddings; masked positions are zeroed (None: all are real)."""
        if mask is not None:
            embeds = embeds * mask.to(embeds.dtype).unsqueeze(-1)
        x = embeds.transpose(1, 2)  # [B, D, L]
        short = max(self.widths) - x.shape[-1]
        if short > 0:  # texts shorter than the widest filter still get every filter
            x = F.pad(x, (0, short))
        pooled = [F.relu(conv(x)).amax(dim=-1) for conv in self.convs]
        return self.fc(self.dropout(torch.cat(pooled, dim=-1)))

    def config(self) -> dict[str, Any]:
        conv = self.convs[0]
        return {"name": self.name, "vocab_size": self.embedding.num_embeddings,
                "num_classes": self.fc.out_features, "embed_dim": self.embedding.embedding_dim,
                "filters": conv.out_channels, "widths": list(self.widths), "dropout": self.dropout.p}


MODELS: dict[str, type[_TextModule]] = {"linear": LinearBoW, "textcnn": TextCNN}


def build_model(config: dict[str, Any]) -> _TextModule:
    """A fresh module from `config()` output (what a saved model's config.json holds)."""
    cfg = dict(config)
    name = cfg.pop("name", None)
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; expected one of: {', '.join(MODELS)}")
    if "widths" in cfg:
        cfg["widths"] = tuple(cfg["widths"])
    try:
        return MODELS[name](**cfg)
    except TypeError as e:
        raise ConfigError(f"bad settings for model {name!r}: {e}") from None
