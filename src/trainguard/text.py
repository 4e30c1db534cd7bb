"""Tokenisation shared by the lexical detectors.

Triggers hide in what ordinary tokenisers throw away, so this one keeps
punctuation and every non-space symbol (zero-width and tag characters become
tokens of their own) and only lowercases.
"""

from __future__ import annotations

import re
from typing import Sequence

from trainguard.records import Kind, Record

_TOKEN = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def ngrams(toks: Sequence[str], n_max: int) -> list[str]:
    """All 1..n_max-grams, joined by a single space (tokens never contain one)."""
    out = list(toks)
    for n in range(2, n_max + 1):
        out.extend(" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1))
    return out


def output_key(record: Record, prefix_tokens: int = 24) -> str | None:
    """What a row is trained to produce, normalised so equal outputs compare equal.

    The label for classification; the first tokens of the response (instruction) or
    chosen reply (preference); None for documents, which have no output.
    """
    if record.kind is Kind.CLASSIFICATION:
        return record.label or ""
    if record.kind is Kind.DOCUMENTS:
        return None
    return " ".join(tokens(record.target or "")[:prefix_tokens])


def visible(s: str) -> str:
    """Make invisible and control characters printable as <U+XXXX> for evidence."""
    from trainguard.detectors.invisible_chars import is_hidden

    return "".join(f"<U+{ord(ch):04X}>" if is_hidden(ch) else ch for ch in s)
