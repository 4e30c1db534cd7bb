"""Helpers every renderer shares to show poisoned text without obeying it.

Records are attacker-controlled. Whatever a detector copies into a title or
evidence may carry terminal escapes, rich markup, HTML, or characters that
render as nothing. Renderers pass data-derived strings through `visible` (and
their own escaping) so a reviewer sees exactly which code points are there.
"""

from __future__ import annotations

import enum
import json
import math
from pathlib import PurePath
from typing import Any

import numpy as np

from trainguard.findings import Severity
from trainguard.text import UNSEEN, split_visible, visible  # noqa: F401 - renderers import them here

# Which code points hide is defined once, in trainguard.text; renderers use these names.
_HIDDEN = UNSEEN


def jsonable(obj: Any) -> Any:
    """Plain JSON types with string keys, whatever a detector put in its evidence.

    numpy scalars and arrays, tuples, sets, enums and paths are converted; a
    non-finite float becomes the string "NaN"/"Infinity"/"-Infinity" (strict
    JSON has no such numbers and silently nulling them would lose data).
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return str(obj)
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isfinite(f):
            return f
        return "NaN" if math.isnan(f) else ("Infinity" if f > 0 else "-Infinity")
    if isinstance(obj, dict) or hasattr(obj, "items"):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (set, frozenset)):
        items = [jsonable(v) for v in obj]
        return sorted(items, key=lambda v: (type(v).__name__, repr(v)))
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    return repr(obj)


def short(s: str, limit: int) -> str:
    return s if len(s) <= limit else s[: max(limit - 1, 0)] + "…"


def evidence_summary(evidence: Any, limit: int = 160) -> str:
    """One line `key=value; ...` with hidden characters made visible, for tables."""
    ev = jsonable(evidence)
    if not isinstance(ev, dict):
        return short(visible(str(ev)), limit)
    parts = []
    for key, value in ev.items():
        if isinstance(value, (dict, list)):
            text = _compact(value)
        else:
            text = str(value)
        parts.append(f"{key}={short(text, 60)}")
    return short(visible("; ".join(parts)), limit)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def rows_preview(rows: tuple[int, ...] | list[int], first: int = 5) -> str:
    head = ", ".join(str(r) for r in rows[:first])
    more = f", … (+{len(rows) - first})" if len(rows) > first else ""
    return f"{len(rows)}: {head}{more}" if rows else "0"


SARIF_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}

# GitHub code scanning reads rule property `security-severity` (CVSS-like 0-10).
SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "0.0",
}

ATLAS_URL = "https://atlas.mitre.org/techniques/{}"
