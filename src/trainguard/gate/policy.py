"""The gate policy: a small YAML file, validated strictly, merged over packaged defaults.

Unknown keys are errors (a misspelt key that silently does nothing is how a gate
ends up weaker than its author believes), and so are unknown detector names and
detector settings of the wrong type: each is one `ConfigError` naming the policy
file and key at load, never a `TypeError` halfway through a scan.

`detectors: default` (or a list holding `default`) means the scan's default
detectors. A default detector the policy leaves out that applies to the data is
recorded as DISABLED and fails the gate unless `allow_disabled` names it: an
example policy that lists three detectors must not quietly switch the rest off. The policy digest is the SHA-256 of
the resolved policy as canonical JSON, so comments and key order do not change it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from trainguard.errors import ConfigError
from trainguard.findings import Severity

DEFAULT_POLICY: dict[str, Any] = {
    "version": 1,
    "detectors": None,  # None: the scan's default detectors
    "allow_disabled": [],  # default detectors this policy may leave out (else the gate fails closed)
    "settings": {},  # per-detector settings: {detector: {key: value}}
    "thresholds": {"fail": "critical", "quarantine": "medium"},
    "provenance": {"require_recorded": True, "require_source": ["licence"]},
    "limits": {"max_quarantine_share": 0.05},
    "release": {"allow_pending": False},
    "signatures": {"required": 1},
    # A person's decision on a record sticks to later gate runs while the record and its reasons
    # are unchanged (docs/review.md, "Decisions that carry over").
    "review": {"carry_over": True},
}

SOURCE_FIELDS = ("licence", "owner", "origin")


def _severity(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("expected a severity name")
    return str(Severity.parse(v))


def _opt_severity(v: Any) -> str | None:
    return None if v is None or v == "none" else _severity(v)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("expected true or false")
    return v


def _share(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
        raise ValueError("expected a number between 0 and 1")
    return float(v)


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError("expected a whole number >= 0")
    return v


def _known_detectors(names: list[str]) -> list[str]:
    from trainguard.detectors.base import registry

    known = registry()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown detector(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
    return names


def _detectors(v: Any) -> list[str] | None:
    """None or `default`: the defaults; a list may hold `default` to add detectors to them."""
    from trainguard.scan import DEFAULT_DETECTORS

    if v is None or v == "default":
        return None
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise ValueError("expected `default` or a non-empty list of detector names")
    names: list[str] = []
    for x in v:
        for n in (DEFAULT_DETECTORS if x == "default" else (x,)):
            if n not in names:
                names.append(n)
    return _known_detectors(names)


def _names(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ValueError("expected a list of detector names")
    return _known_detectors(list(v))


def _settings(v: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(v, dict) or not all(isinstance(s, dict) for s in v.values()):
        raise ValueError("expected {detector: {setting: value}}")
    return {str(k): dict(s) for k, s in v.items()}


def _source_fields(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(x in SOURCE_FIELDS for x in v):
        raise ValueError(f"expected a list drawn from {list(SOURCE_FIELDS)}")
    return list(v)


def _version(v: Any) -> int:
    if v != 1:
        raise ValueError("only policy version 1 is known")
    return 1


SCHEMA: dict[str, Any] = {
    "version": _version,
    "detectors": _detectors,
    "allow_disabled": _names,
    "settings": _settings,
    "thresholds": {"fail": _opt_severity, "quarantine": _severity},
    "provenance": {"require_recorded": _bool, "require_source": _source_fields},
    "limits": {"max_quarantine_share": _share},
    "release": {"allow_pending": _bool},
    "signatures": {"required": _count},
    "review": {"carry_over": _bool},
}


@dataclass(frozen=True)
class Policy:
    data: dict[str, Any]
    origin: str = "<default>"

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @property
    def fail_at(self) -> Severity | None:
        v = self.data["thresholds"]["fail"]
        return None if v is None else Severity.parse(v)

    @property
    def allow_disabled(self) -> frozenset[str]:
        return frozenset(self.data.get("allow_disabled") or ())

    @property
    def quarantine_at(self) -> Severity:
        return Severity.parse(self.data["thresholds"]["quarantine"])

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


def _validate(value: Any, schema: dict[str, Any], base: dict[str, Any], where: str, prefix: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the policy'} must be a mapping")
    out = copy.deepcopy(base)
    for key, v in value.items():
        spec = schema.get(key)
        name = f"{prefix}{key}"
        if spec is None:
            raise ConfigError(f"{where}: unknown key {name!r}; known keys here: {', '.join(schema)}")
        if isinstance(spec, dict):
            out[key] = _validate(v, spec, base[key], where, name + ".")
        else:
            try:
                out[key] = _check(spec, v)
            except ValueError as e:
                raise ConfigError(f"{where}: key {name!r}: {e} (got {v!r})") from None
    return out


def _check(spec: Callable[[Any], Any], v: Any) -> Any:
    return spec(v)


def from_dict(value: dict[str, Any], origin: str = "<dict>") -> Policy:
    data = _validate(value, SCHEMA, DEFAULT_POLICY, origin, "")
    q, f = Severity.parse(data["thresholds"]["quarantine"]), data["thresholds"]["fail"]
    if f is not None and Severity.parse(f) < q:
        raise ConfigError(f"{origin}: thresholds.fail ({f}) is below thresholds.quarantine ({q})")
    data["settings"] = _typed_settings(data["settings"], data["detectors"], origin)
    return Policy(data, origin)


def _typed_settings(settings: dict[str, dict[str, Any]], detectors: list[str] | None,
                    origin: str) -> dict[str, dict[str, Any]]:
    """Each detector's settings checked against its Settings types (`settings_text.check_values`).

    Settings for a detector the policy does not run are refused: they would do nothing.
    """
    from trainguard import settings_text
    from trainguard.detectors.base import registry
    from trainguard.scan import DEFAULT_DETECTORS

    known = registry()
    running = detectors if detectors is not None else list(DEFAULT_DETECTORS)
    out = {}
    for name, values in settings.items():
        where = f"{origin}: key 'settings.{name}'"
        if name not in known:
            raise ConfigError(f"{where}: unknown detector; known: {', '.join(sorted(known))}")
        if name not in running:
            raise ConfigError(f"{where}: the policy does not run {name}; add it to `detectors` or drop its settings")
        typed = settings_text.check_values(values, settings_text.specs(known[name].Settings), owner=where)
        # JSON-shaped (tuples as lists) so the stored policy and its digest do not depend on Python types.
        out[name] = json.loads(json.dumps(typed))
    return out


def load(path: str | Path | None) -> Policy:
    """The packaged default when `path` is None."""
    if path is None:
        return Policy(copy.deepcopy(DEFAULT_POLICY))
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read policy ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: policy is not UTF-8 text") from None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{at} invalid YAML: {getattr(e, 'problem', e)}") from None
    if value is None:
        value = {}
    return from_dict(value, str(p))
