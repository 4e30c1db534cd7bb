"""Word vocabulary for the small classifiers.

Tokens come from `trainguard.text.tokens` (lowercased, punctuation and
invisible characters kept) so a trigger the scanner sees is a token the model
sees too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch

from trainguard.errors import ConfigError
from trainguard.text import tokens as tokenize

PAD = "<pad>"
UNK = "<unk>"
PAD_ID = 0
UNK_ID = 1
FORMAT = "trainguard.vocab/1"


@dataclass
class Vocab:
    """Token list; index 0 is <pad>, 1 is <unk>, the rest by descending count then alphabetically."""

    itos: list[str]
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.itos) < 2 or self.itos[PAD_ID] != PAD or self.itos[UNK_ID] != UNK:
            raise ConfigError(f"a vocabulary must start with {PAD!r}, {UNK!r}")
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ConfigError("a vocabulary must not repeat a token")

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1, max_size: int | None = 20_000) -> "Vocab":
        if min_count < 1:
            raise ConfigError(f"min_count must be >= 1, got {min_count}")
        if max_size is not None and max_size < 3:
            raise ConfigError(f"max_size must be >= 3 (room for <pad>, <unk> and one word), got {max_size}")
        counts = Counter(t for text in texts for t in tokenize(text))
        counts.pop(PAD, None)
        counts.pop(UNK, None)
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max_size - 2]
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self.itos)

    def ids(self, text: str) -> list[int]:
        return [self.stoi.get(t, UNK_ID) for t in tokenize(text)]

    def encode(self, texts: Sequence[str], max_len: int, min_len: int = 1) -> torch.LongTensor:
        """[n, L] ids, right-padded; L is the longest text (capped at max_len, at least min_len)."""
        if max_len < 1:
            raise ConfigError(f"max_len must be >= 1, got {max_len}")
        rows = [self.ids(t)[:max_len] for t in texts]
        width = max(min_len, max((len(r) for r in rows), default=0))
        out = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out  # type: ignore[return-value]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids if i != PAD_ID]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "tokens": list(self.itos)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "<vocab>") -> "Vocab":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"{source}: not a trainguard vocabulary (expected format {FORMAT!r})")
        toks = data.get("tokens")
        if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
            raise ConfigError(f"{source}: 'tokens' must be a list of strings")
        try:
            return cls(toks)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
