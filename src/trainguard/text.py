"""Text basics every detector and renderer shares: which code points hide, and tokenisation.

The one place that says which code points hide (two sets, one a subset of
the other):
- `is_suspicious`: what can carry a trigger a reviewer cannot see in data
  (zero-width, bidi, tag, variation selectors, controls, private use); the
  invisible-characters and rag-poisoning detectors look for these;
- `UNSEEN`: everything a screen shows as nothing or may act on (all of the
  above plus every format, unassigned, separator and non-ASCII space code
  point); renderers show these as `U+XXXX` through `visible`.
Detectors put raw strings in evidence; only renderers escape them.

Triggers hide in what ordinary tokenisers throw away, so `tokens` keeps
punctuation and every non-space symbol (zero-width and tag characters become
tokens of their own) and only lowercases.
"""

from __future__ import annotations

import re
from itertools import chain
from typing import Iterable, Sequence

import numpy as np
import regex

from trainguard.records import Kind, Record

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u180e\u034f\u115f\u1160\u3164\uffa0\u2061\u2062\u2063\u2064"
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
SUSPICIOUS_CLASS = (
    f"[{ZERO_WIDTH}{BIDI}\U000e0000-\U000e007f\ufe00-\ufe0f\U000e0100-\U000e01ef"
    "\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u00ad\ue000-\uf8ff]"
)
SUSPICIOUS = re.compile(SUSPICIOUS_CLASS)

# Controls (Cc), format characters incl. zero-width and bidi (Cf), private use (Co), surrogates (Cs),
# line/paragraph separators, unassigned code points, spaces other than U+0020, variation selectors,
# tag characters and the fillers that render blank. A superset of SUSPICIOUS (tested).
UNSEEN = regex.compile(
    r"[\p{Cc}\p{Cf}\p{Co}\p{Cs}\p{Zl}\p{Zp}\p{Cn}\p{Zs}\uFE00-\uFE0F\U000E0000-\U000E01EF"
    r"\u034F\u115F\u1160\u3164\uFFA0\u180B-\u180F]",
    regex.V1,
)


def is_suspicious(ch: str) -> bool:
    """A code point that can carry a hidden trigger in data (the detectors' set)."""
    return bool(SUSPICIOUS.fullmatch(ch))


def visible(s: str) -> str:
    """Every unseen code point as `<U+XXXX>`, plain spaces kept: for renderers and one-line titles."""
    if s.isascii() and s.isprintable():
        return s
    return UNSEEN.sub(lambda m: " " if m.group() == " " else f"<U+{ord(m.group()):04X}>", s)


def split_visible(s: str) -> Iterable[tuple[str, bool]]:
    """(chunk, is_unseen) pieces, unseen ones as `U+XXXX`, for renderers that style them."""
    pos = 0
    for m in UNSEEN.finditer(s):
        if m.group() == " ":
            continue
        if m.start() > pos:
            yield s[pos : m.start()], False
        yield f"U+{ord(m.group()):04X}", True
        pos = m.end()
    if pos < len(s):
        yield s[pos:], False


_TOKEN = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def first_seen_ids(rows: Iterable[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
    """Every item of every row as an int64 id (row after row), and the distinct items in order of first
    occurrence, so ids do not depend on a hash seed or a sort: the same rows give the same ids anywhere."""
    flat = list(chain.from_iterable(rows))
    vocab = list(dict.fromkeys(flat))
    index = {w: i for i, w in enumerate(vocab)}
    return np.fromiter(map(index.__getitem__, flat), np.int64, len(flat)), vocab


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
