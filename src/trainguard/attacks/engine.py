"""`poison()`: pick victims, poison each with its own seeded RNG, record the ground truth.

Every victim row gets an RNG derived from (seed, row index), so how one row is
poisoned does not depend on which other rows were picked, and the same seed
always gives the same rows, triggers and positions. Rows are validated with
the loader's own rules first, so a bad row fails with file, row and field
before anything is written.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from trainguard._version import __version__
from trainguard.attacks.base import Attack, Context, get
from trainguard.attacks.slots import Slots
from trainguard.errors import ConfigError, DataError
from trainguard.io.mapping import FieldMap, RecordBuilder, detect_kind, fieldmap_for
from trainguard.records import Kind

TRUTH_SCHEMA = "trainguard.attack-truth/1"
DETECT_ROWS = 32


@dataclass
class PoisonResult:
    rows: list[dict[str, Any]]  # same length and order as the input; untouched rows are the input's objects
    truth: dict[str, Any]

    @property
    def poisoned_rows(self) -> list[int]:
        return list(self.truth["poisoned_rows"])

    @property
    def entries(self) -> list[dict[str, Any]]:
        return self.truth["entries"]


def resolve_count(n: int, rate: float | None, count: int | None) -> int:
    """Rows to poison: `count`, or round-half-up(rate * n) but at least 1."""
    if (rate is None) == (count is None):
        raise ConfigError("give exactly one of rate (fraction of all rows) or count (number of rows)")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= n:
            raise ConfigError(f"count must be an integer from 1 to the number of rows ({n:,}), got {count!r}")
        return int(count)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1 or math.isnan(rate):
        raise ConfigError(f"rate must be a fraction in (0, 1], got {rate!r}")
    return max(1, math.floor(rate * n + 0.5))


def _resolve_fields(rows: Sequence[Mapping[str, Any]], kind: str | Kind, fieldmap: FieldMap | None,
                    fields: Mapping[str, str] | None) -> tuple[Kind, FieldMap]:
    auto = kind in ("auto", None)
    if not auto:
        try:
            kind = Kind(kind)
        except ValueError:
            names = ", ".join(["auto", *(k.value for k in Kind)])
            raise ConfigError(f"unknown kind {kind!r}; expected one of: {names}") from None
    if fieldmap is not None:
        if auto:
            raise ConfigError("a fieldmap needs an explicit kind")
        return kind, fieldmap  # type: ignore[return-value]
    keys = {key for row in rows[:DETECT_ROWS] if isinstance(row, dict) for key in row}  # as the loader does
    if auto:
        return detect_kind(keys, fields)
    return kind, fieldmap_for(kind, keys, fields)  # type: ignore[arg-type]


def build_context(rows: Sequence[Any], kind: Kind, fm: FieldMap, source: str,
                  lines: Sequence[int | None] | None) -> Context:
    # Field slots exist for classification and instruction rows; preference and documents
    # attacks (trainguard.attacks.llm) edit their own fields and get slots=None.
    slots = Slots.for_data(kind, fm, source) if kind in (Kind.CLASSIFICATION, Kind.INSTRUCTION) else None
    builder = RecordBuilder(source, kind, fm)
    keys: list[str] = []
    raw_label: dict[str, Any] = {}
    for i, row in enumerate(rows):
        line = lines[i] if lines is not None else None
        if not isinstance(row, dict):
            raise DataError(source, f"expected an object, got {type(row).__name__}", row=i, line=line)
        rec = builder.build(row, i, line)
        if kind is Kind.CLASSIFICATION:
            assert rec.label is not None
            keys.append(rec.label)
            raw_label.setdefault(rec.label, row[fm.label])
        else:
            keys.append(rec.response or rec.chosen or rec.text)
    return Context(rows=list(rows), kind=kind, fieldmap=fm, slots=slots, keys=keys,  # type: ignore[arg-type]
                   raw_label=raw_label)


def poison(
    rows: Sequence[dict[str, Any]],
    attack: str | Attack,
    *,
    kind: str | Kind = "auto",
    fieldmap: FieldMap | None = None,
    fields: Mapping[str, str] | None = None,
    rate: float | None = None,
    count: int | None = None,
    seed: int = 0,
    source: str = "<rows>",
    lines: Sequence[int | None] | None = None,
    **params: Any,
) -> PoisonResult:
    """Poison raw rows; the input list and its dicts are never modified.

    `params` are the attack's settings (e.g. triggers, target, position);
    `fields` are ROLE=COLUMN overrides used when `fieldmap` is not given.
    """
    if isinstance(attack, Attack):
        if params:
            raise ConfigError("pass settings to the Attack instance, not to poison()")
        atk = attack
    else:
        atk = get(attack)(**params)
    if not rows:
        raise ConfigError(f"{source}: no rows to poison")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    k, fm = _resolve_fields(rows, kind, fieldmap, fields)
    if k not in atk.kinds:
        served = ", ".join(sorted(x.value for x in atk.kinds))
        raise ConfigError(f"attack {atk.name} does not handle {k.value} data (it serves: {served})")
    ctx = build_context(rows, k, fm, source, lines)
    resolved = atk.prepare(ctx)
    n_poison = resolve_count(len(rows), rate, count)
    pool = atk.eligible(ctx)
    if n_poison > len(pool):
        raise ConfigError(f"{atk.name}: asked to poison {n_poison:,} rows but only {len(pool):,} of {len(rows):,} "
                          "are eligible (see docs/attacks.md for who can be a victim); lower the rate or count")
    picker = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    victims = np.sort(picker.choice(pool, size=n_poison, replace=False))
    out = list(rows)
    entries = []
    for i in victims.tolist():
        row = copy.deepcopy(rows[i])
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1, i]))
        changes, spots, extras = atk.apply(ctx, i, row, rng)
        out[i] = row
        entry: dict[str, Any] = {"row": i}
        if lines is not None and lines[i] is not None:
            entry["line"] = lines[i]
        entry["changes"] = [{"field": c.field, "before": c.before, "after": c.after} for c in changes]
        entry["triggers"] = [{"field": s.field, "trigger": s.trigger, "offset": s.offset} for s in spots]
        entry.update(extras)
        entries.append(entry)
    truth = {
        "schema": TRUTH_SCHEMA,
        "tool": {"name": "trainguard", "version": __version__},
        "attack": atk.name,
        "attack_version": atk.version,
        "atlas": list(atk.atlas),
        "kind": k.value,
        "fields": fm.used(),
        "seed": int(seed),
        "rate": rate,
        "count": n_poison,
        "rows": len(rows),
        "eligible": len(pool),
        "params": {**atk.settings_dict(), **resolved},
        "input": None,
        "output": None,
        "poisoned_rows": victims.tolist(),
        "entries": entries,
    }
    return PoisonResult(rows=out, truth=truth)
