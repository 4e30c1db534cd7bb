"""Trigger insertion that keeps every original character.

Splitting on whitespace and re-joining would silently rewrite newlines and
double spaces, so the diff between clean and poisoned rows would show more than
the attack. Instead triggers are spliced in at word boundaries (word triggers,
with one space as separator) or at any character position (invisible
triggers, no separator), and each trigger's final offset is returned so tests
and the truth file can point at it exactly.
"""

from __future__ import annotations

import re

import numpy as np

from trainguard.errors import ConfigError

POSITIONS = ("random", "start", "end")
_WORD_START = re.compile(r"(?<=\s)\S")
_CODEPOINTS = re.compile(r"(?:\s*[Uu]\+([0-9A-Fa-f]{4,6})\s*,?)+")
_ONE_CODEPOINT = re.compile(r"[Uu]\+([0-9A-Fa-f]{4,6})")


def word_boundaries(text: str) -> list[int]:
    """Offsets where a word trigger may go: start, each word start, end."""
    return sorted({0, len(text), *(m.start() for m in _WORD_START.finditer(text))})


def choose_offsets(text: str, n: int, position: str, words: bool, rng: np.random.Generator) -> list[int]:
    if position == "start":
        return [0] * n
    if position == "end":
        return [len(text)] * n
    if position != "random":
        raise ConfigError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
    if words:
        cands = word_boundaries(text)
        return [cands[int(k)] for k in rng.integers(0, len(cands), size=n)]
    return [int(k) for k in rng.integers(0, len(text) + 1, size=n)]


def splice(text: str, items: list[tuple[int, str]], words: bool) -> tuple[str, list[tuple[str, int]]]:
    """Insert (offset, trigger) pairs (offsets in `text`); returns new text and (trigger, new offset) in input order."""
    order = sorted(range(len(items)), key=lambda k: items[k][0])
    out: list[str] = []
    cur = pos = 0
    placed: dict[int, int] = {}
    n = len(text)
    for k in order:
        p, trig = items[k]
        seg = text[pos:p]
        out.append(seg)
        cur += len(seg)
        pos = p
        if not words:
            piece, at = trig, cur
        elif p == n:  # appended: the separator goes before, unless nothing precedes it
            sep = " " if cur else ""
            piece, at = sep + trig, cur + len(sep)
        else:
            piece, at = trig + " ", cur
        out.append(piece)
        cur += len(piece)
        placed[k] = at
    out.append(text[pos:])
    return "".join(out), [(items[k][1], placed[k]) for k in range(len(items))]


def decode_trigger(spec: str) -> str:
    """`U+200B` (or `U+E0001,U+E0063`) -> the characters; anything else is taken literally."""
    if _CODEPOINTS.fullmatch(spec):
        chars = []
        for m in _ONE_CODEPOINT.finditer(spec):
            cp = int(m.group(1), 16)
            if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                raise ConfigError(f"trigger {spec!r}: U+{cp:04X} is not a valid code point")
            chars.append(chr(cp))
        return "".join(chars)
    return spec


def describe(trigger: str) -> str:
    """Printable form for summaries: invisible characters as U+XXXX."""
    if trigger.isprintable() and not any(ord(c) in _INVISIBLE for c in trigger):
        return trigger
    return " ".join(f"U+{ord(c):04X}" for c in trigger)


_INVISIBLE = {0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, *range(0xE0000, 0xE0080)}
