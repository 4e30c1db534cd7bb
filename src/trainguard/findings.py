"""Findings and the report that carries them.

Severity and confidence are separate axes (bandit's lesson): a gate decides on
severity, a reviewer sorts by confidence. A finding's fingerprint is built from
the detector, its rule and the record ids, never from row numbers or raw text,
so it survives reordering and can be stored next to a reviewer's verdict
without copying the (possibly harmful) payload.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Mapping

import numpy as np


class _Level(IntEnum):
    """An ordered level written by its lower-case name ("high"), parsed back strictly."""

    @classmethod
    def parse(cls, value: Any) -> Any:
        if isinstance(value, cls):
            return value
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            names = ", ".join(m.name.lower() for m in cls)
            raise ValueError(f"unknown {cls.__name__.lower()} {value!r}; expected one of: {names}") from None

    def __str__(self) -> str:
        return self.name.lower()


class Severity(_Level):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class Confidence(_Level):
    LOW = 1
    MEDIUM = 2
    HIGH = 3


# MITRE ATLAS technique ids used by the built-in detectors.
ATLAS_POISON_TRAINING_DATA = "AML.T0020"
ATLAS_BACKDOOR_TRIGGER = "AML.T0043.004"
ATLAS_ERODE_INTEGRITY = "AML.T0059"
ATLAS_PUBLISH_POISONED = "AML.T0019"


@dataclass(frozen=True, slots=True, eq=False)
class Finding:
    """An engine-stamped finding: file rows, record ids and (when the reader knew them) source lines.

    Two findings are equal, and hash alike, when their fingerprints are: the
    same detector and rule about the same records, whatever the row numbers.
    """

    detector: str
    rule: str
    title: str
    rows: tuple[int, ...]
    record_ids: tuple[str, ...]
    score: float
    severity: Severity
    confidence: Confidence
    atlas: tuple[str, ...]
    evidence: Mapping[str, Any] = field(default_factory=dict)
    detector_version: str = "0"
    lines: tuple[int | None, ...] = ()  # 1-based source line per row; () when the reader gave none

    def __post_init__(self) -> None:
        if not (0.0 <= self.score <= 1.0) or math.isnan(self.score):
            raise ValueError(f"{self.detector}: finding score must be in [0, 1], got {self.score}")
        if len(self.rows) != len(self.record_ids):
            raise ValueError(f"{self.detector}: rows and record_ids differ in length")
        if self.lines and len(self.lines) != len(self.rows):
            raise ValueError(f"{self.detector}: rows and lines differ in length")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Finding) and self.fingerprint == other.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(f"{self.detector}\x1f{self.rule}\x1f".encode())
        for rid in sorted(self.record_ids):
            h.update(rid.encode())
        return h.hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "detector": self.detector,
            "detector_version": self.detector_version,
            "rule": self.rule,
            "title": self.title,
            "severity": str(self.severity),
            "confidence": str(self.confidence),
            "score": round(self.score, 6),
            "atlas": list(self.atlas),
            "rows": list(self.rows),
            "record_ids": list(self.record_ids),
            "lines": list(self.lines),
            "evidence": dict(self.evidence),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Finding":
        """The inverse of `to_dict` (a stored report read back); a wrong shape raises ValueError."""
        try:
            f = cls(detector=str(d["detector"]), rule=str(d["rule"]), title=str(d["title"]),
                    rows=tuple(int(r) for r in d["rows"]), record_ids=tuple(str(i) for i in d["record_ids"]),
                    score=float(d["score"]), severity=Severity.parse(d["severity"]),
                    confidence=Confidence.parse(d["confidence"]), atlas=tuple(str(a) for a in d.get("atlas") or ()),
                    evidence=dict(d.get("evidence") or {}), detector_version=str(d.get("detector_version", "0")),
                    lines=tuple(None if x is None else int(x) for x in d.get("lines") or ()))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a trainguard finding: {type(e).__name__} {e}") from None
        if "fingerprint" in d and d["fingerprint"] != f.fingerprint:
            raise ValueError(f"finding fingerprint {d['fingerprint']!r} does not match its detector, rule and ids")
        return f


@dataclass(frozen=True, slots=True)
class Alert:
    """What a detector says about some records: positions into `Dataset.records`, never file rows.

    The engine owns a finding's identity (bandit's lesson): it maps positions to
    file rows and record ids and stamps detector, version and ATLAS ids, so no
    detector can get them wrong. `atlas`, when set, replaces the detector's
    class-level techniques for this alert. Evidence may refer to other records
    by a `positions` list; the engine rewrites it as `rows`.
    """

    rule: str
    title: str
    positions: tuple[int, ...]
    score: float
    severity: Severity
    confidence: Confidence
    evidence: Mapping[str, Any] = field(default_factory=dict)
    atlas: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (0.0 <= self.score <= 1.0) or math.isnan(self.score):
            raise ValueError(f"{self.rule}: alert score must be in [0, 1], got {self.score}")
        if not self.positions:
            raise ValueError(f"{self.rule}: an alert names at least one record position")


@dataclass(frozen=True, slots=True)
class DetectorResult:
    """What a detector returns: alerts, plus one 0-1 suspicion score per record position.

    Row scores are what benchmarks rank by (AUROC) and what fusion combines;
    they are kept in memory and not serialised by default.
    """

    alerts: tuple[Alert, ...] = ()
    row_scores: np.ndarray | None = None
    summary: Mapping[str, Any] = field(default_factory=dict)


class DetectorStatus(StrEnum):
    """How a detector's turn in a scan ended. Only OK means its check was done.

    SKIPPED: the detector does not apply to this data (another kind, one label).
    DISABLED: it applies, but a policy or the user turned it off; the gate and
    the attestation say so, because the data went unchecked for what it finds.
    FAILED: it could not run (crashed, cannot run sharded, a missing need); the
    gate fails closed.
    """

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class DetectorRun:
    """One detector's turn in a scan: status, the settings it ran with, its time and summary."""

    name: str
    version: str
    status: DetectorStatus
    settings: Mapping[str, Any]
    seconds: float = 0.0
    message: str = ""
    summary: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Plain strings ("ok") are accepted and checked: an unknown status is an error, never "ok".
        object.__setattr__(self, "status", DetectorStatus(self.status))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "status": str(self.status),
            "settings": dict(self.settings),
            "seconds": round(self.seconds, 4),
            "message": self.message,
            "summary": dict(self.summary),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DetectorRun":
        """The inverse of `to_dict`; an unknown status raises ValueError (never read as ok)."""
        try:
            return cls(name=str(d["name"]), version=str(d["version"]), status=DetectorStatus(d["status"]),
                       settings=dict(d.get("settings") or {}), seconds=float(d.get("seconds") or 0.0),
                       message=str(d.get("message") or ""), summary=dict(d.get("summary") or {}))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a trainguard detector run: {type(e).__name__} {e}") from None
