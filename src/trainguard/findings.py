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


class Severity(IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: str | "Severity") -> "Severity":
        if isinstance(value, Severity):
            return value
        try:
            return cls[value.strip().upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown severity {value!r}; expected one of: {names}") from None

    def __str__(self) -> str:
        return self.name.lower()


class Confidence(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    def __str__(self) -> str:
        return self.name.lower()


# MITRE ATLAS technique ids used by the built-in detectors.
ATLAS_POISON_TRAINING_DATA = "AML.T0020"
ATLAS_BACKDOOR_TRIGGER = "AML.T0043.004"
ATLAS_ERODE_INTEGRITY = "AML.T0059"
ATLAS_PUBLISH_POISONED = "AML.T0019"


@dataclass(frozen=True, slots=True)
class Finding:
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

    def __post_init__(self) -> None:
        if not (0.0 <= self.score <= 1.0) or math.isnan(self.score):
            raise ValueError(f"{self.detector}: finding score must be in [0, 1], got {self.score}")
        if len(self.rows) != len(self.record_ids):
            raise ValueError(f"{self.detector}: rows and record_ids differ in length")

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
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class Alert:
    """What a detector says about some records: positions into `Dataset.records`, never file rows.

    The engine owns a finding's identity (bandit's lesson): it maps positions to
    file rows and record ids and stamps detector, version and ATLAS ids, so no
    detector can get them wrong. `atlas`, when set, replaces the detector's
    class-level techniques for this alert.
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
    name: str
    version: str
    status: DetectorStatus
    settings: Mapping[str, Any]
    seconds: float = 0.0
    message: str = ""
    summary: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "settings": dict(self.settings),
            "seconds": round(self.seconds, 4),
            "message": self.message,
            "summary": dict(self.summary),
        }
