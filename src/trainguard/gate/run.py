"""`trainguard gate`: provenance check + scan + policy -> pass / quarantine / fail.

Exit codes for CI: 0 pass, 1 fail, 3 quarantine (rows wait in the review queue),
2 bad usage or unreadable input. The gate fails closed: an unrecorded file, a
source without the required metadata, a detector that crashed, no detector
that ran, or a file that changed while it was being gated all give `fail`.
Nothing is deleted: quarantined rows go to the review queue. A row whose record
(leaf hash) and reasons a person already judged on an earlier run takes that
decision instead of waiting again (policy `review.carry_over`, docs/review.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from trainguard.findings import Finding
from trainguard.gate.policy import Policy
from trainguard.gate.review import carried_decisions
from trainguard.ledger.hashing import hash_file
from trainguard.ledger.ops import dataset_name, default_actor
from trainguard.ledger.store import Ledger
from trainguard.report.model import Report
from trainguard.scan import scan

EXIT_CODES = {"pass": 0, "fail": 1, "quarantine": 3}


@dataclass
class GateResult:
    verdict: str
    reasons: list[str]
    run_id: int
    version: dict[str, Any] | None
    quarantined: list[int]
    report: Report
    policy: Policy
    records: int
    notes: list[str] = field(default_factory=list)
    carried: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        v = self.version
        return {
            "verdict": self.verdict, "exit_code": self.exit_code, "reasons": self.reasons, "notes": self.notes,
            "gate_run": self.run_id,
            "version": {"dataset": v["dataset"], "version": v["number"], "merkle_root": v["merkle_root"]} if v else None,
            "records": self.records, "quarantined_rows": self.quarantined,
            "carried": {"count": len(self.carried),
                        "approved": sum(c["decision"] == "approved" for c in self.carried),
                        "rejected": sum(c["decision"] == "rejected" for c in self.carried),
                        "rows": self.carried},
            "policy": {"origin": self.policy.origin, "sha256": self.policy.digest},
            "findings": len(self.report.findings), "by_severity": self.report.severity_counts(),
        }


def _finding_brief(f: Finding, detector_version: str) -> dict[str, Any]:
    return {"fingerprint": f.fingerprint, "detector": f.detector, "detector_version": detector_version,
            "rule": f.rule, "title": f.title,
            "severity": str(f.severity), "confidence": str(f.confidence), "score": round(f.score, 6)}


def find_version(ledger: Ledger, path: str | Path, root: str, name: str | None) -> dict[str, Any] | None:
    """The recorded version with this exact content, preferring the file's own dataset name."""
    candidates = ledger.versions_by_root(root)
    ds = dataset_name(path, name)
    mine = [v for v in candidates if v["dataset"] == ds]
    if mine:
        return mine[0]
    return candidates[0] if candidates and name is None else None


def gate(ledger: Ledger, path: str | Path, policy: Policy, *, name: str | None = None, by: str | None = None,
         kind: str = "auto", fields: Mapping[str, str] | None = None, detectors: Any = None) -> GateResult:
    """Run the gate and store the run, its report and its review queue in the ledger."""
    actor = by or default_actor()
    fl = hash_file(path)
    root = fl.merkle_root
    fails: list[str] = []
    notes: list[str] = []
    version = find_version(ledger, path, root, name)
    prov = policy["provenance"]
    if version is None:
        msg = (f"provenance: the content of {Path(path).name} is not a recorded version "
               f"(Merkle root {root[:16]}...); ingest it, or run `trainguard verify` to see what changed")
        (fails if prov["require_recorded"] else notes).append(msg)
    else:
        src = ledger.source(version["source_id"])
        wanted = prov["require_source"]
        if src is None and wanted:
            fails.append(f"provenance: {version['dataset']}@{version['number']} has no source recorded "
                         f"(policy requires {', '.join(wanted)})")
        elif src is not None:
            missing = [f for f in wanted if not src.get(f)]
            if missing:
                fails.append(f"provenance: source {src['name']!r} lacks {', '.join(missing)} (required by policy)")
    report = scan(path, detectors=detectors if detectors is not None else policy["detectors"],
                  settings=policy["settings"] if detectors is None else None, kind=kind, fields=fields)
    if report.dataset.get("sha256") != fl.file_sha256:
        fails.append("integrity: the file changed while it was being gated")
    for run in report.failed:
        fails.append(f"scan: detector {run.name} failed ({run.message}); the gate fails closed")
    if not any(d.status == "ok" for d in report.detectors):
        fails.append("scan: no detector ran on this dataset; nothing was checked")
    fail_at = policy.fail_at
    if fail_at is not None:
        severe = report.at_or_above(fail_at)
        if severe:
            rows = sorted({r for f in severe for r in f.rows})
            fails.append(f"scan: {len(severe)} finding(s) at or above {fail_at} "
                         f"({', '.join(sorted({f.detector for f in severe}))}) on {len(rows)} row(s)")
    # The version of the detector class that ran (findings rarely set their own): a changed
    # detector re-opens the rows it holds, because the reviewer judged the old one's reasons.
    versions = {d.name: d.version for d in report.detectors}
    per_row: dict[int, list[dict[str, Any]]] = {}
    for f in report.at_or_above(policy.quarantine_at):
        brief = _finding_brief(f, versions.get(f.detector, f.detector_version))
        for r in f.rows:
            per_row.setdefault(r, []).append(brief)
    records = fl.count
    bad_rows = [r for r in per_row if not 0 <= r < records]
    if bad_rows:
        fails.append(f"integrity: findings name rows {bad_rows[:5]} outside the {records} hashed records")
    queue = [(r, fl.leaf(r).hex(), per_row[r]) for r in sorted(per_row) if 0 <= r < records]
    limit = policy["limits"]["max_quarantine_share"]
    with ledger.transaction():
        carried = carried_decisions(ledger, queue) if policy["review"]["carry_over"] else {}
        pending = [r for r, _, _ in queue if r not in carried]
        share = len(pending) / records if records else 0.0
        run_fails = list(fails)
        if share > limit:
            run_fails.append(f"policy: {len(pending)} of {records} rows ({share:.1%}) need review, over the "
                             f"max_quarantine_share of {limit:.1%}")
        run_notes = notes + ([_carried_note(carried)] if carried else [])
        verdict = "fail" if run_fails else "quarantine" if pending else "pass"
        run_id = ledger.add_gate_run(
            version_id=version["id"] if version else None, path=str(path), merkle_root=root, verdict=verdict,
            reasons=run_fails + run_notes, policy=policy.data, report=report.to_dict(), records=records,
            queue=queue, actor=actor)
        for row, origin in carried.items():
            ledger.carry_decision(run_id, row, origin)
    moved = [{"row": row, "decision": o["status"], "by": o["decided_by"], "at": o["decided_at"],
              "reason": o["reason"], "from_run": o["gate_run_id"], "from_row": o["row"]}
             for row, o in sorted(carried.items())]
    return GateResult(verdict, run_fails, run_id, version, pending, report, policy, records, run_notes, moved)


def _carried_note(carried: dict[int, dict[str, Any]]) -> str:
    runs = sorted({o["gate_run_id"] for o in carried.values()})
    rejected = sum(o["status"] == "rejected" for o in carried.values())
    return (f"{len(carried)} row(s) carried decisions from gate run{'s' if len(runs) > 1 else ''} "
            f"{', '.join(map(str, runs))} ({len(carried) - rejected} approved, {rejected} rejected); "
            "same record, same or fewer reasons, so not queued again")
