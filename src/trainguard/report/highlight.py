"""Evidence in the record's own text: trigger tokens marked, hidden characters shown.

The output is a list of (text, css class) pieces; templates print each piece
with jinja2 autoescaping, so no data-derived string is ever trusted as markup.
A hidden code point becomes the piece `<U+200B>` with class `cp` (a visible
badge); inside a trigger it is both `cp` and `mark`. Line feeds and tabs stay
as they are (the page keeps line breaks), so multi-line text reads as text.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from trainguard.report._safe import _HIDDEN, jsonable, short, visible

_CP = re.compile(r"<U\+([0-9A-Fa-f]{4,6})>")
MAX_TERMS = 24
MAX_TEXT = 20_000  # characters of one field shown; the rest is cut with a note
MAX_DEPTH, MAX_ITEMS = 4, 50  # nested evidence shown this deep / this many entries per level
_PLAIN = frozenset("\n\t ")  # whitespace shown as itself, not as a badge

# Evidence keys worth a chip, in display order; other keys stay in the raw evidence.
EVIDENCE_KEYS = ("trigger", "target", "harm_category", "category", "code_points", "names", "associated_output",
                 "question", "annotator", "top_output", "example_input", "llr", "purity", "rows_with_trigger")


def _real(term: str) -> str:
    """Turn the `<U+200B>` form a detector may report back into the character itself."""
    return _CP.sub(lambda m: chr(int(m.group(1), 16)), term)


def terms_of(evidence: dict[str, Any]) -> list[str]:
    """Strings a detector says are the trigger, to be marked in the text."""
    out: list[str] = []
    for key in ("trigger", "feature"):
        v = evidence.get(key)
        if isinstance(v, str) and v.strip():
            out.append(_real(v))
    for v in evidence.get("related_features") or []:
        if isinstance(v, str) and v.strip():
            out.append(_real(v))
    cps = evidence.get("code_points")
    if isinstance(cps, str):
        out += [chr(int(m, 16)) for m in re.findall(r"U\+([0-9A-Fa-f]{4,6})", cps)]
    seen: dict[str, None] = {}
    for t in out:
        seen.setdefault(t, None)
    return list(seen)[:MAX_TERMS]


def _pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    parts = []
    for t in sorted(set(terms), key=len, reverse=True):
        words = t.split()
        body = r"\s+".join(re.escape(w) for w in words) if words else re.escape(t)
        if not body:
            continue
        left = r"(?<!\w)" if re.match(r"\w", t) else ""
        right = r"(?!\w)" if re.search(r"\w$", t) else ""
        parts.append(left + body + right)
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def segments(text: str, terms: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(piece, class) with class in "", "mark", "cp", "cp mark"."""
    cut = len(text) > MAX_TEXT
    text = text[:MAX_TEXT]
    spans: list[tuple[int, int]] = []
    pat = _pattern(terms)
    if pat is not None:
        spans = [(m.start(), m.end()) for m in pat.finditer(text) if m.end() > m.start()]
    out: list[tuple[str, str]] = []
    pos = 0
    for start, end in spans + [(len(text), len(text))]:
        if start > pos:
            out += _split_hidden(text[pos:start], "")
        if end > start:
            out += _split_hidden(text[start:end], "mark")
        pos = max(pos, end)
    if cut:
        out.append((f" … (cut at {MAX_TEXT:,} characters)", "note"))
    return out


def _split_hidden(chunk: str, cls: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _HIDDEN.finditer(chunk):
        if m.group() in _PLAIN:
            continue
        if m.start() > pos:
            out.append((chunk[pos:m.start()], cls))
        out.append((f"<U+{ord(m.group()):04X}>", ("cp " + cls).strip()))
        pos = m.end()
    if pos < len(chunk):
        out.append((chunk[pos:], cls))
    return out


def _readable(value: Any) -> str:
    """A field's value as text: strings as they are, a chat (list of role/content messages) one turn a
    paragraph, anything else as indented JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        return "\n\n".join(f"{m.get('role', '?')}: {_readable(m['content'])}" for m in value)
    return json.dumps(jsonable(value), ensure_ascii=False, indent=2)


def record_fields(record: Any, terms: list[str]) -> list[tuple[str, list[tuple[str, str]]]]:
    """A record as (field name, highlighted pieces) pairs: prompt/response, chosen/rejected, passage, text/label."""
    if not isinstance(record, dict):
        return [("record", segments(str(record), terms))]
    return [(visible(str(key)), segments(_readable(value), terms)) for key, value in record.items()]


Node = dict[str, Any]


def _node(value: Any, depth: int) -> Node:
    """One evidence value for the key/value table: {"text": pieces}, {"table": [(key, node)]} or {"list": [node]}."""
    value = jsonable(value)
    if isinstance(value, dict) and value and depth < MAX_DEPTH:
        items = list(value.items())
        rows = [(visible(k), _node(v, depth + 1)) for k, v in items[:MAX_ITEMS]]
        return {"table": rows, "more": len(items) - len(rows)}
    if isinstance(value, list) and value and depth < MAX_DEPTH:
        if all(v is None or isinstance(v, (str, int, float, bool)) for v in value) and \
                sum(len(str(v)) for v in value) <= 200 and not any(isinstance(v, str) and "\n" in v for v in value):
            return {"text": segments(", ".join(_scalar(v) for v in value))}  # a short list reads best on one line
        return {"list": [_node(v, depth + 1) for v in value[:MAX_ITEMS]], "more": len(value) - MAX_ITEMS}
    if isinstance(value, (dict, list)):  # too deep or empty: compact JSON
        return {"text": segments(json.dumps(value, ensure_ascii=False))}
    return {"text": segments(_scalar(value))}


def _scalar(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def evidence_table(evidence: Any) -> list[tuple[str, Node]]:
    """A finding's evidence as (key, node) rows, every string escaped by the template and hidden
    characters shown as badges, line breaks kept (no JSON dump with `<U+000A>` badges)."""
    if not isinstance(evidence, dict):
        return [("evidence", _node(evidence, 1))] if evidence not in (None, "", [], {}) else []
    node = _node(evidence, 0)
    return node.get("table", [])


def evidence_chips(evidence: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, value) pairs a reviewer reads at a glance; values with hidden characters made visible."""
    chips = []
    for key in EVIDENCE_KEYS:
        v = evidence.get(key)
        if v is None or v == "" or v == []:
            continue
        if isinstance(v, (list, dict)):
            v = json.dumps(jsonable(v), ensure_ascii=False)
        chips.append((key.replace("_", " "), short(visible(str(v)), 120)))
    return chips
