"""The scan report: what ran, with which settings, on which bytes, and what it found."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainguard._version import __version__
from trainguard.findings import DetectorRun, Finding, Severity

SCHEMA = "https://trainguard.dev/schemas/report/v1"


@dataclass
class Report:
    dataset: dict[str, Any]
    detectors: list[DetectorRun]
    findings: list[Finding]
    row_scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    tool_version: str = __version__
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    @property
    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    @property
    def failed(self) -> list[DetectorRun]:
        return [d for d in self.detectors if d.status == "failed"]

    def at_or_above(self, severity: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity >= severity]

    def flagged_rows(self, severity: Severity = Severity.LOW) -> set[int]:
        return {r for f in self.at_or_above(severity) for r in f.rows}

    def severity_counts(self) -> dict[str, int]:
        counts = {str(s): 0 for s in Severity}
        for f in self.findings:
            counts[str(f.severity)] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "$schema": SCHEMA,
            "tool": {"name": "trainguard", "version": self.tool_version},
            "created": self.created,
            "dataset": self.dataset,
            "summary": {
                "findings": len(self.findings),
                "by_severity": self.severity_counts(),
                "flagged_rows": len(self.flagged_rows()),
                "max_severity": str(self.max_severity) if self.max_severity is not None else None,
                "failed_detectors": [d.name for d in self.failed],
            },
            "detectors": [d.to_dict() for d in self.detectors],
            "findings": [f.to_dict() for f in self.findings],
        }
