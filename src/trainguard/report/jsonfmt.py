"""The JSON report: `Report.to_dict()`, made byte-stable and safe to read.

Choices (documented in docs/report-schema.md):
- keys sorted at every level, two-space indent, trailing newline: the same
  report always gives the same bytes, so reports diff cleanly in review;
- UTF-8 with ordinary non-ASCII kept readable (`ensure_ascii=False`), but every
  invisible, control, bidi, tag, private-use, separator or surrogate code point
  written as a `\\uXXXX` escape, so a trigger hidden in a record cannot hide in
  the report too (and a lone surrogate cannot make the file unencodable);
- strict JSON: no NaN/Infinity literals (see `_safe.jsonable`).
"""

from __future__ import annotations

import json
from typing import Any

from trainguard.report._safe import _HIDDEN, jsonable
from trainguard.report.model import Report


def _escape(m) -> str:
    ch = m.group()
    if ch in " \n":  # structural whitespace: json.dumps escapes these inside strings
        return ch
    cp = ord(ch)
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    cp -= 0x10000
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Deterministic, strict JSON with hidden code points escaped.

    json.dumps already escapes `"`, `\\` and C0 controls, and every character the
    post-pass replaces can only occur inside a string literal, so the output
    stays valid JSON that decodes to exactly `obj`.
    """
    text = json.dumps(jsonable(obj), ensure_ascii=False, sort_keys=True, indent=indent, allow_nan=False,
                      separators=(",", ": ") if indent is not None else (",", ":"))
    return _HIDDEN.sub(_escape, text)


def render(report: Report) -> str:
    return dumps(report.to_dict()) + "\n"
