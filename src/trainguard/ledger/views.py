"""Read-only views of the ledger with typed rows: what pages show, without SQL in the pages.

The review web page (and anything else that only shows the ledger) reads through
these functions, so a change to the schema, or to which rows count as waiting for
review, is made here once. Nothing in this module writes.

Which rows the review queue holds is decided in one place, `queue_rows` (its
WHERE clause is `QueueFilter.where`); the finding page and the filter menus use it
or its `_QUEUE_FROM` too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from trainguard.ledger.store import Ledger

MAX_ID = 2**63 - 1  # SQLite INTEGER range: a larger id can name nothing
PER_PAGE = 25
MAX_PER_PAGE = 200
QUEUE_STATUSES = ("pending", "approved", "rejected", "superseded", "all")
AUDIT_KINDS = ("review", "supersede", "release", "gate", "user")


@dataclass(frozen=True, slots=True)
class VersionOverview:
    """One dataset version as the Datasets page lists it (latest gate run, rows still pending)."""

    id: int
    dataset: str
    number: int
    path: str
    records: int
    merkle_root: str
    ingested_by: str
    ingested_at: str
    source: str | None
    licence: str | None
    owner: str | None
    gate: str | None
    gate_run: int | None
    pending: int
    releases: int


def version_overviews(ledger: Ledger) -> list[VersionOverview]:
    rows = ledger.conn.execute(
        "SELECT v.id, d.name AS dataset, v.number, v.path, v.records, v.merkle_root, v.ingested_by, v.ingested_at,"
        " s.name AS source, s.licence, s.owner,"
        " (SELECT g.verdict FROM gate_runs g WHERE g.version_id = v.id ORDER BY g.id DESC LIMIT 1) AS gate,"
        " (SELECT g.id FROM gate_runs g WHERE g.version_id = v.id ORDER BY g.id DESC LIMIT 1) AS gate_run,"
        " (SELECT COUNT(*) FROM reviews r JOIN gate_runs g ON g.id = r.gate_run_id WHERE g.version_id = v.id"
        "  AND r.status = 'pending') AS pending,"
        " (SELECT COUNT(*) FROM releases x WHERE x.version_id = v.id) AS releases"
        " FROM versions v JOIN datasets d ON d.id = v.dataset_id LEFT JOIN sources s ON s.id = v.source_id"
        " ORDER BY d.name, v.number DESC").fetchall()
    return [VersionOverview(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A gate run as its version's page shows it: verdict, reasons and how many queued rows are in each state."""

    id: int
    verdict: str
    by: str
    at: str
    records: int
    queued: int
    policy_sha256: str
    report_sha256: str
    reasons: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)


def run_summaries(ledger: Ledger, version_id: int) -> list[RunSummary]:
    """The version's gate runs, newest first."""
    runs = ledger.conn.execute(
        "SELECT id, verdict, by, at, records, queued, policy_sha256, report_sha256, reasons FROM gate_runs"
        " WHERE version_id = ? ORDER BY id DESC", (version_id,)).fetchall()
    counts: dict[int, dict[str, int]] = {}
    for run_id, status, n in ledger.conn.execute(
            "SELECT r.gate_run_id, r.status, COUNT(*) FROM reviews r JOIN gate_runs g ON g.id = r.gate_run_id"
            " WHERE g.version_id = ? GROUP BY r.gate_run_id, r.status", (version_id,)):
        counts.setdefault(run_id, {})[status] = int(n)
    return [RunSummary(**(dict(r) | {"reasons": tuple(json.loads(r["reasons"])), "counts": counts.get(r["id"], {})}))
            for r in runs]


@dataclass(frozen=True, slots=True)
class AuditEvent:
    seq: int
    ts: str
    kind: str
    actor: str
    hash: str
    p: dict[str, Any]  # the event's payload, parsed


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[AuditEvent]
    total: int


def audit_events(ledger: Ledger, page: int, per_page: int) -> AuditPage:
    """Events people care about (reviews, rows a newer gate run closed, releases, gate runs, accounts), newest
    first, one page."""
    marks = ", ".join("?" * len(AUDIT_KINDS))
    total = int(ledger.conn.execute(f"SELECT COUNT(*) FROM events WHERE kind IN ({marks})", AUDIT_KINDS).fetchone()[0])
    rows = ledger.conn.execute(
        f"SELECT seq, ts, kind, actor, payload, hash FROM events WHERE kind IN ({marks})"
        " ORDER BY seq DESC LIMIT ? OFFSET ?", (*AUDIT_KINDS, per_page, (max(page, 1) - 1) * per_page)).fetchall()
    return AuditPage([AuditEvent(r["seq"], r["ts"], r["kind"], r["actor"], r["hash"], json.loads(r["payload"]))
                      for r in rows], total)


# --- the review queue -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """Which queued rows to list; `fingerprint` keeps the rows one finding held."""

    status: str = "pending"
    run: int | None = None
    detector: str | None = None
    severity: str | None = None
    source: str | None = None
    fingerprint: str | None = None
    page: int = 1
    per_page: int = PER_PAGE

    def where(self) -> tuple[str, list[Any]]:
        sql, args = ["1=1"], []
        if self.status != "all":
            sql.append("r.status = ?")
            args.append(self.status)
        if self.run is not None:
            sql.append("r.gate_run_id = ?")
            args.append(self.run)
        for key, value in (("detector", self.detector), ("severity", self.severity),
                           ("fingerprint", self.fingerprint)):
            if value:
                sql.append("EXISTS (SELECT 1 FROM json_each(r.findings) j WHERE json_extract(j.value, '$.%s') = ?)"
                           % key)
                args.append(value)
        if self.source:
            sql.append("s.name = ?")
            args.append(self.source)
        return " AND ".join(sql), args

    def query(self, **change: Any) -> dict[str, Any]:
        """Query-string parameters for a link to this view with some values changed (defaults left out)."""
        d = {"status": self.status, "run": self.run, "detector": self.detector, "severity": self.severity,
             "source": self.source, "page": self.page, "per_page": self.per_page} | change
        return {k: v for k, v in d.items() if v not in (None, "") and not (k == "per_page" and v == PER_PAGE)
                and not (k == "page" and v == 1)}


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One queued row: where it came from, why it was held (brief findings) and any decision on it."""

    gate_run_id: int
    row: int
    leaf: str
    status: str
    findings: tuple[dict[str, Any], ...]
    decided_by: str | None
    reason: str | None
    decided_at: str | None
    path: str
    dataset: str | None
    version: int | None
    source: str | None
    carried_run: int | None  # the gate run a carried decision was copied from


_QUEUE_FROM = ("FROM reviews r JOIN gate_runs g ON g.id = r.gate_run_id LEFT JOIN versions v ON v.id = g.version_id"
               " LEFT JOIN sources s ON s.id = v.source_id LEFT JOIN datasets d ON d.id = v.dataset_id")


def queue_rows(ledger: Ledger, flt: QueueFilter) -> tuple[list[QueueRow], int]:
    """One page of the review queue under `flt`, and how many rows match in all.

    The one place that decides which rows the queue holds: a rule such as "rows of a
    failed or superseded gate run leave the queue" belongs in `flt.where()`'s clause here.
    """
    where, args = flt.where()
    total = int(ledger.conn.execute(f"SELECT COUNT(*) {_QUEUE_FROM} WHERE {where}", args).fetchone()[0])
    rows = ledger.conn.execute(
        "SELECT r.gate_run_id, r.row, r.leaf, r.status, r.findings, r.decided_by, r.reason, r.decided_at, g.path,"
        " d.name AS dataset, v.number AS version, s.name AS source,"
        " (SELECT json_extract(e.payload, '$.carried_from.gate_run') FROM events e WHERE e.seq = r.event_seq)"
        f" AS carried_run {_QUEUE_FROM} WHERE {where} ORDER BY r.gate_run_id, r.row LIMIT ? OFFSET ?",
        [*args, flt.per_page, (max(flt.page, 1) - 1) * flt.per_page]).fetchall()
    return [QueueRow(**(dict(r) | {"findings": tuple(json.loads(r["findings"]))})) for r in rows], total


@dataclass(frozen=True, slots=True)
class RunOption:
    id: int
    verdict: str
    dataset: str | None
    version: int | None
    at: str
    pending: int
    queued: int


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """What the queue's filter menus offer: the values the queue actually holds."""

    detectors: list[str]
    sources: list[str]
    runs: list[RunOption]


def queue_options(ledger: Ledger) -> QueueOptions:
    conn = ledger.conn
    dets = [r[0] for r in conn.execute(
        "SELECT DISTINCT json_extract(j.value, '$.detector') FROM (SELECT findings FROM reviews"
        " GROUP BY findings) r, json_each(r.findings) j ORDER BY 1") if r[0]]
    srcs = [r[0] for r in conn.execute("SELECT name FROM sources ORDER BY name")]
    runs = [RunOption(**dict(r)) for r in conn.execute(
        "SELECT g.id, g.verdict, d.name AS dataset, v.number AS version, g.at,"
        " SUM(r.status = 'pending') AS pending, COUNT(*) AS queued"
        " FROM gate_runs g JOIN reviews r ON r.gate_run_id = g.id LEFT JOIN versions v ON v.id = g.version_id"
        " LEFT JOIN datasets d ON d.id = v.dataset_id GROUP BY g.id ORDER BY g.id DESC")]
    return QueueOptions(dets, srcs, runs)
