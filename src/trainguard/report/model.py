"""The scan report: what ran, with which settings, on which bytes, and what it found."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from trainguard._version import __version__
from trainguard.findings import DetectorRun, DetectorStatus, Finding, Severity

SCHEMA = "https://trainguard.dev/schemas/report/v1"


@dataclass(frozen=True)
class DatasetInfo:
    """What was scanned: path, kind, size, the fields used, the bytes' sha256 and every skipped row.

    `skipped` holds each skipped row as its report dict (path, row, line,
    field, message); `kind_reason` says how the kind was resolved and `notes`
    what the reader normalised; `shard_rows` is set by sharded scans only,
    `model` by probe reports (the model probed). Optional fields are written
    only when set, so older reports read back byte for byte.
    """

    path: str
    kind: str
    records: int
    fields: Mapping[str, str] = field(default_factory=dict)
    sha256: str | None = None
    skipped: tuple[Mapping[str, Any], ...] = ()
    shard_rows: int | None = None
    model: str | None = None
    kind_reason: str = ""
    notes: tuple[str, ...] = ()

    @classmethod
    def of(cls, data: Any, shard_rows: int | None = None) -> "DatasetInfo":
        """From a loaded `Dataset` (or anything with its attributes)."""
        return cls(path=str(data.path), kind=data.kind.value, records=len(data.records),
                   fields=dict(data.fieldmap.used()), sha256=data.file_sha256,
                   skipped=tuple(e.to_dict() for e in data.skipped), shard_rows=shard_rows,
                   kind_reason=str(getattr(data, "kind_reason", "") or ""),
                   notes=tuple(str(n) for n in getattr(data, "notes", ()) or ()))

    def to_dict(self) -> dict[str, Any]:
        out = {"path": self.path, "kind": self.kind, "records": self.records, "fields": dict(self.fields),
               "sha256": self.sha256, "skipped": [dict(e) for e in self.skipped]}
        if self.shard_rows is not None:
            out["shard_rows"] = self.shard_rows
        if self.model is not None:
            out["model"] = self.model
        if self.kind_reason:
            out["kind_reason"] = self.kind_reason
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DatasetInfo":
        try:
            return cls(path=str(d["path"]), kind=str(d["kind"]), records=int(d["records"]),
                       fields={str(k): str(v) for k, v in (d.get("fields") or {}).items()},
                       sha256=d.get("sha256"), skipped=tuple(dict(e) for e in d.get("skipped") or ()),
                       shard_rows=None if d.get("shard_rows") is None else int(d["shard_rows"]),
                       model=None if d.get("model") is None else str(d["model"]),
                       kind_reason=str(d.get("kind_reason") or ""), notes=tuple(str(n) for n in d.get("notes") or ()))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a trainguard dataset description: {type(e).__name__} {e}") from None

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style read for callers written against the old `dict` (prefer the attributes)."""
        return self.to_dict().get(key, default)


@dataclass
class Report:
    dataset: DatasetInfo
    detectors: list[DetectorRun]
    findings: list[Finding]
    row_scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    tool_version: str = __version__
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        # A plain mapping (a stored report, a test) is checked and typed once here.
        if not isinstance(self.dataset, DatasetInfo):
            self.dataset = DatasetInfo.from_dict(self.dataset)

    @property
    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    @property
    def failed(self) -> list[DetectorRun]:
        return [d for d in self.detectors if d.status is DetectorStatus.FAILED]

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
            "dataset": self.dataset.to_dict(),
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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Report":
        """A stored JSON report read back; per-row scores are not stored, so `row_scores` is empty.

        The inverse of `to_dict`: `Report.from_dict(r.to_dict()).to_dict() == r.to_dict()`.
        A wrong shape raises ValueError naming what is missing.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"a trainguard report is a JSON object, not {type(d).__name__}")
        try:
            return cls(dataset=DatasetInfo.from_dict(d["dataset"]),
                       detectors=[DetectorRun.from_dict(x) for x in d["detectors"]],
                       findings=[_finding(i, f) for i, f in enumerate(d["findings"])],
                       tool_version=str(d["tool"]["version"]), created=str(d["created"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a trainguard report: missing or wrong {e}") from None


def _finding(i: int, d: Any) -> Finding:
    """findings[i] of a stored report; a bad one names its index (a float("x") error names no field)."""
    try:
        return Finding.from_dict(d)
    except ValueError as e:
        raise ValueError(f"report findings[{i}]: {e}") from None
