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


# tanh: bounded activations keep activations and gradients on one scale under clipping + noise
# (Papernot et al. 2021, "Tempered sigmoid activations for deep learning with differential privacy").
ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh}
# Max-pooling over time passes gradient to one window per filter; a mean also passes it to every window, which
# is the signal DP noise drowns least (the linear bag-of-words trains under DP, max-pooled CNNs did not).
POOLS = ("max", "mean", "max+mean")


class TextCNN(_TextModule):
    """Kim (2014): convolutions of widths 3/4/5 over word embeddings, max-pool over time, dropout, linear."""

    name = "textcnn"

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 64, filters: int = 64,
                 widths: tuple[int, ...] = (3, 4, 5), dropout: float = 0.5, activation: str = "relu",
                 groups: int = 0, pool: str = "max") -> None:
        super().__init__()
        _positive(vocab_size=vocab_size, num_classes=num_classes, embed_dim=embed_dim, filters=filters)
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ConfigError(f"conv widths must be positive integers, got {widths!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        if pool not in POOLS:
            raise ConfigError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
        total = filters * len(widths) * (2 if pool == "max+mean" else 1)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 0 or (groups and total % groups):
            raise ConfigError(f"groups must be 0 (no GroupNorm) or divide {total} pooled features, got {groups!r}")
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.widths = tuple(int(w) for w in widths)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, filters, w) for w in self.widths)
        self.activation, self.pool = activation, pool
        # GroupNorm (not BatchNorm: it mixes examples, which breaks per-example clipping) keeps the pooled
        # features on one scale however far DP noise pushes the filters.
        self.norm = nn.GroupNorm(groups, total) if groups else None
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(total, num_classes)

    def forward_embeds(self, embeds: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from [B, L, D] embeddings; masked positions are zeroed (None: all are real)."""
        if mask is not None:
            embeds = embeds * mask.to(embeds.dtype).unsqueeze(-1)
        x = embeds.transpose(1, 2)  # [B, D, L]
        # max: texts shorter than the widest filter still get every filter; mean: every real token starts a
        # window of every width, so a text's mean does not depend on how far its batch is padded
        short = max(self.widths) - x.shape[-1] if self.pool == "max" else max(self.widths) - 1
        if short > 0:
            x = F.pad(x, (0, short))
        act = ACTIVATIONS[self.activation]
        h = torch.cat([self._pool(act(conv(x)), mask) for conv in self.convs], dim=-1)
        if self.norm is not None:
            h = self.norm(h)
        return self.fc(self.dropout(h))

    def _pool(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """[B, F, L'] -> [B, F] (max) or [B, 2F] (max+mean); the mean counts windows that start on a real token."""
        if self.pool == "max":
            return h.amax(dim=-1)
        if mask is None:
            return h.mean(dim=-1) if self.pool == "mean" else torch.cat([h.amax(dim=-1), h.mean(dim=-1)], dim=-1)
        m = mask.to(h.dtype)
        m = F.pad(m, (0, max(0, h.shape[-1] - m.shape[-1])))[:, : h.shape[-1]]
        m[:, 0] = 1.0  # an empty text still has its one (all-pad) window
        mean = (h * m.unsqueeze(1)).sum(dim=-1) / m.sum(dim=-1, keepdim=True)
        if self.pool == "mean":
            return mean
        return torch.cat([h.masked_fill(m.unsqueeze(1) == 0, float("-inf")).amax(dim=-1), mean], dim=-1)

    def config(self) -> dict[str, Any]:
        conv = self.convs[0]
        return {"name": self.name, "vocab_size": self.embedding.num_embeddings,
                "num_classes": self.fc.out_features, "embed_dim": self.embedding.embedding_dim,
                "filters": conv.out_channels, "widths": list(self.widths), "dropout": self.dropout.p,
                "activation": self.activation, "groups": self.norm.num_groups if self.norm is not None else 0, "pool": self.pool}


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
