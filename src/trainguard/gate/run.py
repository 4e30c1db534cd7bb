"""`trainguard gate`: provenance check + scan + policy -> pass / quarantine / fail.

Exit codes for CI: 0 pass, 1 fail, 3 quarantine (rows wait in the review queue),
2 bad usage or unreadable input. The gate fails closed: an unrecorded file, a
source without the required metadata, a detector that crashed, no detector
that ran, or a file that changed while it was being gated all give `fail`.
Nothing is deleted: quarantined rows go to the review queue. A row whose record
(leaf hash) and reasons a person already judged on an earlier run takes that
decision instead of waiting again (policy `review.carry_over`, docs/review.md).

The scan half of the verdict is `trainguard.verdict.judge`, the same function
behind `scan`'s exit code. A default detector the policy leaves out that applies
to the data is recorded as DISABLED and fails the gate unless the policy's
`allow_disabled` names it. Every finding reported but below the quarantine bar
is listed (`below_bar`), so nothing the scanner saw is invisible; both are
stored with the run, in its report's `gate` section.

Reads of the file: the ledger's leaf hashes (one pass, with the whole-file
SHA-256 beside it) and the scan's load (one pass that hashes as it parses);
the two digests must agree, or the file changed while it was being gated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from trainguard.findings import Finding
from trainguard.gate.policy import Policy
from trainguard.gate.review import carried_decisions
from trainguard.io import LoadOptions, load
from trainguard.io.dataset import Dataset
from trainguard.ledger.hashing import hash_file
from trainguard.ledger.ops import dataset_name, default_actor
from trainguard.ledger.store import Ledger
from trainguard.report.model import Report
from trainguard.scan import DEFAULT_DETECTORS, scan
from trainguard.verdict import Verdict, add_disabled, disabled_runs, judge

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
    scan_verdict: Verdict | None = None
    data: Dataset | None = field(default=None, repr=False)

    @property
    def disabled(self) -> list[dict[str, Any]]:
        """Default detectors that applied to the data and did not run, and whether the policy allowed it."""
        runs = self.scan_verdict.disabled if self.scan_verdict else ()
        return [{"name": r.name, "version": r.version, "message": r.message,
                 "allowed": r.name in self.policy.allow_disabled} for r in runs]

    @property
    def below_bar(self) -> dict[str, Any]:
        """Findings reported but not quarantined: counts per severity and each finding with its rows."""
        if self.scan_verdict is None:
            return {"count": 0, "by_severity": {}, "findings": []}
        return self.scan_verdict.below_bar_summary()

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
            "dataset": {"kind": self.data.kind.value, "kind_reason": self.data.kind_reason,
                        "notes": list(self.data.notes)} if self.data is not None else None,
            "findings": len(self.report.findings), "by_severity": self.report.severity_counts(),
            "disabled": self.disabled, "below_bar": self.below_bar,
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
         options: LoadOptions | None = None, kind: str | None = None, fields: Mapping[str, str] | None = None,
         detectors: Any = None, jobs: int | str = 1) -> GateResult:
    """Run the gate and store the run, its report and its review queue in the ledger.

    `options` says how to read the file (or give `kind`/`fields`, not both);
    `detectors` replaces the policy's list (the policy's `allow_disabled` still applies);
    `jobs`: processes for the scan (`trainguard.scan.scan`).
    """
    opts = LoadOptions.of(options, kind=kind, fields=fields)
    actor = by or default_actor()
    data = load(path, opts)  # first: a file that cannot be read as a dataset fails before it is hashed
    fl = hash_file(path, fmt=opts.fmt, max_record_bytes=opts.max_record_bytes)
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
    chosen = detectors if detectors is not None else policy["detectors"]
    report = scan(data, detectors=chosen, settings=policy["settings"] if detectors is None else None, jobs=jobs)
    why = "the policy's detectors leave it out" if detectors is None else "not among the detectors asked for"
    add_disabled(report, disabled_runs(data, [r.name for r in report.detectors], DEFAULT_DETECTORS, why))
    if data.file_sha256 != fl.file_sha256:
        fails.append("integrity: the file changed while it was being gated")
    if data.skipped:
        fails.append(f"input: {len(data.skipped)} row(s) could not be read and were not scanned "
                     f"(--on-error skip; the first: {data.skipped[0]}); they would reach a release unchecked")
    verdict = judge(report, fail_at=policy.fail_at, quarantine_at=policy.quarantine_at,
                    allow_disabled=policy.allow_disabled)
    fails.extend(verdict.reasons)
    notes.extend(f"detector {d.name} is turned off by the policy (allow_disabled): the data was not checked "
                 "for what it finds" for d in verdict.disabled if d.name in policy.allow_disabled)
    if verdict.below_bar:
        counts = verdict.below_bar_summary(limit=0)["by_severity"]
        notes.append(f"{len(verdict.below_bar)} finding(s) below the quarantine bar ({policy.quarantine_at}) were "
                     "reported but not held: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    # The version of the detector class that ran (findings rarely set their own): a changed
    # detector re-opens the rows it holds, because the reviewer judged the old one's reasons.
    versions = {d.name: d.version for d in report.detectors}
    per_row: dict[int, list[dict[str, Any]]] = {}
    for f in verdict.held:
        brief = _finding_brief(f, versions.get(f.detector, f.detector_version))
        for r in f.rows:
            per_row.setdefault(r, []).append(brief)
    records = fl.count
    bad_rows = [r for r in per_row if not 0 <= r < records]
    if bad_rows:
        fails.append(f"integrity: findings name rows {bad_rows[:5]} outside the {records} hashed records")
    queue = [(r, fl.leaf(r).hex(), per_row[r]) for r in sorted(per_row) if 0 <= r < records]
    limit = policy["limits"]["max_quarantine_share"]
    stored = report.to_dict()
    with ledger.transaction():
        carried = carried_decisions(ledger, queue) if policy["review"]["carry_over"] else {}
        pending = [r for r, _, _ in queue if r not in carried]
        share = len(pending) / records if records else 0.0
        run_fails = list(fails)
        if share > limit:
            run_fails.append(f"policy: {len(pending)} of {records} rows ({share:.1%}) need review, over the "
                             f"max_quarantine_share of {limit:.1%}")
        run_notes = notes + ([_carried_note(carried)] if carried else [])
        outcome = "fail" if run_fails else "quarantine" if pending else "pass"
        result = GateResult(outcome, run_fails, 0, version, pending, report, policy, records, run_notes,
                            scan_verdict=verdict, data=data)
        # What the attestation needs and the report alone does not say: which defaults were off, and
        # what the scanner saw below the bar (`gate_runs.report` -> "gate").
        stored["gate"] = {"verdict": outcome, "disabled": result.disabled, "below_bar": result.below_bar,
                          "quarantine_at": str(policy.quarantine_at),
                          "fail_at": None if policy.fail_at is None else str(policy.fail_at)}
        run_id = ledger.add_gate_run(
            version_id=version["id"] if version else None, path=str(path), merkle_root=root, verdict=outcome,
            reasons=run_fails + run_notes, policy=policy.data, report=stored, records=records,
            queue=queue, actor=actor)
        for row, origin in carried.items():
            ledger.carry_decision(run_id, row, origin)
    result.run_id = run_id
    result.carried = [{"row": row, "decision": o["status"], "by": o["decided_by"], "at": o["decided_at"],
                       "reason": o["reason"], "from_run": o["gate_run_id"], "from_row": o["row"]}
                      for row, o in sorted(carried.items())]
    return result


def _carried_note(carried: dict[int, dict[str, Any]]) -> str:
    runs = sorted({o["gate_run_id"] for o in carried.values()})
    rejected = sum(o["status"] == "rejected" for o in carried.values())
    return (f"{len(carried)} row(s) carried decisions from gate run{'s' if len(runs) > 1 else ''} "
            f"{', '.join(map(str, runs))} ({len(carried) - rejected} approved, {rejected} rejected); "
            "same record, same or fewer reasons, so not queued again")
