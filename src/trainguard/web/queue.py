"""The review queue as pages: rows from the ledger's read API, evidence from the stored scan report.

Filters run inside SQLite (`ledger.views.queue_rows`), so the first page of a
10,000-row queue costs one indexed query plus reading the page's own rows.
Each gate run's report is parsed once and kept per run (runs never change) so
every finding's evidence is at hand by fingerprint.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from typing import Any

from trainguard.findings import Severity
from trainguard.ledger import views
from trainguard.ledger.store import Ledger
from trainguard.ledger.views import MAX_PER_PAGE, PER_PAGE, QUEUE_STATUSES, QueueFilter
from trainguard.report.highlight import evidence_chips, record_fields, terms_of
from trainguard.web.records import RecordReader

RUN_CACHE = 16
MAX_PAGE = 10**9  # page numbers beyond this are clamped (the offset must stay an SQLite integer)


def parse_filter(params: dict[str, str]) -> QueueFilter:
    """Lenient for a web page: an unknown or out-of-range value falls back to the default or the nearest bound."""
    def num(key: str, default: int | None, lo: int, hi: int) -> int | None:
        try:
            return min(max(int(params[key]), lo), hi)
        except (KeyError, ValueError):
            return default

    status = params.get("status", "pending")
    sev = params.get("severity") or None
    return QueueFilter(
        status=status if status in QUEUE_STATUSES else "pending",
        run=num("run", None, 0, views.MAX_ID),
        detector=(params.get("detector") or None),
        severity=sev if sev in [str(s) for s in Severity] else None,
        source=(params.get("source") or None),
        page=num("page", 1, 1, MAX_PAGE) or 1,
        per_page=num("per_page", PER_PAGE, 1, MAX_PER_PAGE) or PER_PAGE,
    )


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

    def options(self, ledger: Ledger) -> dict[str, Any]:
        """Values the filter menus offer: what the queue actually holds."""
        opts = views.queue_options(ledger)
        return {"detectors": opts.detectors, "severities": [str(s) for s in sorted(Severity, reverse=True)],
                "sources": opts.sources, "runs": opts.runs, "statuses": list(QUEUE_STATUSES)}

    def page(self, ledger: Ledger, flt: QueueFilter) -> tuple[list[dict[str, Any]], int]:
        """One page of queued rows, each with its record read back from the gated file and highlighted."""
        rows, total = views.queue_rows(ledger, flt)
        by_path: dict[str, dict[int, str]] = {}
        for r in rows:
            by_path.setdefault(r.path, {})[r.row] = r.leaf
        records = {p: self.reader.read(p, wanted) for p, wanted in by_path.items()}
        return [self._item(ledger, r, records[r.path][r.row]) for r in rows], total

    def _item(self, ledger: Ledger, r: views.QueueRow, record: tuple[Any, str]) -> dict[str, Any]:
        info = self.run_info(ledger, r.gate_run_id)
        findings, terms = [], []
        for brief in r.findings:
            full = (info.findings.get(brief.get("fingerprint", "")) if info else None) or {}
            evidence = full.get("evidence") if isinstance(full.get("evidence"), dict) else {}
            terms += terms_of(evidence)
            findings.append(brief | {"chips": evidence_chips(evidence), "n_rows": full.get("n_rows"),
                                     "atlas": full.get("atlas") or []})
        value, status = record
        return dataclasses.asdict(r) | {"findings": findings, "record_status": status,
                                        "fields": record_fields(value, terms) if status == "ok" else [],
                                        "key": f"{r.gate_run_id}-{r.row}"}
