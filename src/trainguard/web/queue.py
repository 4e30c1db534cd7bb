"""The review queue as pages: filtering in SQL, evidence from the stored scan report.

Filters run inside SQLite (JSON1 over each row's findings), so the first page
of a 10,000-row queue costs one indexed query plus reading the page's own rows.
Each gate run's report is parsed once and kept per run (runs never change) so
every finding's evidence is at hand by fingerprint.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from trainguard.findings import Severity
from trainguard.ledger.store import Ledger
from trainguard.web.highlight import evidence_chips, record_fields, terms_of
from trainguard.web.records import RecordReader

STATUSES = ("pending", "approved", "rejected", "all")
PER_PAGE = 25
MAX_PER_PAGE = 200
RUN_CACHE = 16


@dataclass(frozen=True)
class QueueFilter:
    status: str = "pending"
    run: int | None = None
    detector: str | None = None
    severity: str | None = None
    source: str | None = None
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
        for key, value in (("detector", self.detector), ("severity", self.severity)):
            if value:
                sql.append("EXISTS (SELECT 1 FROM json_each(r.findings) j WHERE json_extract(j.value, '$.%s') = ?)"
                           % key)
                args.append(value)
        if self.source:
            sql.append("s.name = ?")
            args.append(self.source)
        return " AND ".join(sql), args

    def query(self, **change: Any) -> dict[str, Any]:
        """Query-string parameters for a link to this view with some values changed."""
        d = {"status": self.status, "run": self.run, "detector": self.detector, "severity": self.severity,
             "source": self.source, "page": self.page, "per_page": self.per_page} | change
        return {k: v for k, v in d.items() if v not in (None, "") and not (k == "per_page" and v == PER_PAGE)
                and not (k == "page" and v == 1)}


def parse_filter(params: dict[str, str]) -> QueueFilter:
    """Lenient for a web page: an unknown value falls back to the default instead of an error page."""
    def num(key: str, default: int | None, lo: int, hi: int) -> int | None:
        try:
            return min(max(int(params[key]), lo), hi)
        except (KeyError, ValueError):
            return default

    status = params.get("status", "pending")
    sev = params.get("severity") or None
    return QueueFilter(
        status=status if status in STATUSES else "pending",
        run=num("run", None, 0, 2**62),
        detector=(params.get("detector") or None),
        severity=sev if sev in [str(s) for s in Severity] else None,
        source=(params.get("source") or None),
        page=num("page", 1, 1, 10**9) or 1,
        per_page=num("per_page", PER_PAGE, 1, MAX_PER_PAGE) or PER_PAGE,
    )


_FROM = ("FROM reviews r JOIN gate_runs g ON g.id = r.gate_run_id LEFT JOIN versions v ON v.id = g.version_id"
         " LEFT JOIN sources s ON s.id = v.source_id LEFT JOIN datasets d ON d.id = v.dataset_id")


class RunInfo:
    """Per gate run: each finding's full entry from the stored report, by fingerprint."""

    def __init__(self, run: dict[str, Any]) -> None:
        try:
            report = json.loads(run["report"])
        except ValueError:
            report = {}
        self.findings: dict[str, dict[str, Any]] = {}
        for f in report.get("findings") or []:
            if isinstance(f, dict) and "fingerprint" in f:
                f = {k: v for k, v in f.items() if k not in ("rows", "record_ids")} | {"n_rows": len(f.get("rows") or [])}
                self.findings[f["fingerprint"]] = f


class Queue:
    def __init__(self, reader: RecordReader) -> None:
        self.reader = reader
        self._runs: OrderedDict[int, RunInfo] = OrderedDict()
        self._lock = threading.Lock()

    def run_info(self, ledger: Ledger, run_id: int) -> RunInfo | None:
        with self._lock:
            if run_id in self._runs:
                self._runs.move_to_end(run_id)
                return self._runs[run_id]
        run = ledger.gate_run(run_id)
        if run is None:
            return None
        info = RunInfo(run)
        with self._lock:
            self._runs[run_id] = info
            while len(self._runs) > RUN_CACHE:
                self._runs.popitem(last=False)
        return info

    def options(self, ledger: Ledger) -> dict[str, list[Any]]:
        """Values the filter menus offer: what the queue actually holds."""
        conn = ledger.conn
        dets = [r[0] for r in conn.execute(
            "SELECT DISTINCT json_extract(j.value, '$.detector') FROM (SELECT findings FROM reviews"
            " GROUP BY findings) r, json_each(r.findings) j ORDER BY 1") if r[0]]
        srcs = [r[0] for r in conn.execute("SELECT name FROM sources ORDER BY name")]
        runs = [dict(r) for r in conn.execute(
            "SELECT g.id, g.verdict, d.name AS dataset, v.number AS version, g.at,"
            " SUM(r.status = 'pending') AS pending, COUNT(*) AS queued"
            " FROM gate_runs g JOIN reviews r ON r.gate_run_id = g.id LEFT JOIN versions v ON v.id = g.version_id"
            " LEFT JOIN datasets d ON d.id = v.dataset_id GROUP BY g.id ORDER BY g.id DESC")]
        return {"detectors": dets, "severities": [str(s) for s in sorted(Severity, reverse=True)],
                "sources": srcs, "runs": runs, "statuses": list(STATUSES)}

    def page(self, ledger: Ledger, flt: QueueFilter) -> tuple[list[dict[str, Any]], int]:
        where, args = flt.where()
        total = int(ledger.conn.execute(f"SELECT COUNT(*) {_FROM} WHERE {where}", args).fetchone()[0])
        rows = ledger.conn.execute(
            f"SELECT r.*, g.path, d.name AS dataset, v.number AS version, s.name AS source,"
            " (SELECT json_extract(e.payload, '$.carried_from.gate_run') FROM events e WHERE e.seq = r.event_seq)"
            f" AS carried_run {_FROM} WHERE {where}"
            " ORDER BY r.gate_run_id, r.row LIMIT ? OFFSET ?",
            [*args, flt.per_page, (flt.page - 1) * flt.per_page]).fetchall()
        by_path: dict[str, dict[int, str]] = {}
        for r in rows:
            by_path.setdefault(r["path"], {})[r["row"]] = r["leaf"]
        records = {p: self.reader.read(p, wanted) for p, wanted in by_path.items()}
        return [self._item(ledger, dict(r), records[r["path"]][r["row"]]) for r in rows], total

    def _item(self, ledger: Ledger, r: dict[str, Any], record: tuple[Any, str]) -> dict[str, Any]:
        info = self.run_info(ledger, r["gate_run_id"])
        findings, terms = [], []
        for brief in json.loads(r["findings"]):
            full = (info.findings.get(brief.get("fingerprint", "")) if info else None) or {}
            evidence = full.get("evidence") if isinstance(full.get("evidence"), dict) else {}
            terms += terms_of(evidence)
            findings.append(brief | {"chips": evidence_chips(evidence), "n_rows": full.get("n_rows"),
                                     "atlas": full.get("atlas") or []})
        value, status = record
        return r | {"findings": findings, "fields": record_fields(value, terms) if status == "ok" else [],
                    "record_status": status, "key": f"{r['gate_run_id']}-{r['row']}"}
