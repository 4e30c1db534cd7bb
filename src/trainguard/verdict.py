"""One verdict for a scan report, used by `scan`'s exit code and by the gate.

Two shells that judged the same report differently let poison through the
laxer one (`scan` once passed a file on which no detector ran while `gate`
failed it). The rules, in order:

1. a detector that failed -> fail (the check was not done);
2. no detector ran -> fail (nothing was checked);
3. a detector that applies to the data but was turned off (DISABLED) -> fail,
   unless the caller allows it by name (`allow_disabled`; `None` allows all,
   which `scan` uses: its user chose `--detectors` on the command line);
4. a finding at or above `fail_at` -> fail;
5. else findings at or above `quarantine_at` -> quarantine (their rows are held);
6. else pass.

Findings below the quarantine bar are kept in `below_bar`, so an output built
on the verdict can list everything the scanner saw and did not hold.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Iterable

from trainguard.findings import DetectorRun, DetectorStatus, Finding, Severity

if TYPE_CHECKING:
    from trainguard.io.dataset import Dataset
    from trainguard.report.model import Report

PASS, QUARANTINE, FAIL = "pass", "quarantine", "fail"


@dataclass(frozen=True)
class Verdict:
    outcome: str  # pass, quarantine or fail
    reasons: tuple[str, ...]  # why it fails (empty unless outcome is fail)
    held: tuple[Finding, ...]  # findings at or above the quarantine bar
    below_bar: tuple[Finding, ...]  # reported, not held
    disabled: tuple[DetectorRun, ...]  # applicable detectors that were turned off

    @property
    def failed(self) -> bool:
        return self.outcome == FAIL

    def below_bar_summary(self, limit: int | None = None) -> dict:
        """Counts per severity and each finding below the bar (rows included), for outputs and the ledger."""
        counts = Counter(str(f.severity) for f in self.below_bar)
        shown = self.below_bar if limit is None else self.below_bar[:limit]
        return {
            "count": len(self.below_bar),
            "by_severity": {str(s): counts.get(str(s), 0) for s in Severity},
            "findings": [{"fingerprint": f.fingerprint, "detector": f.detector, "rule": f.rule, "title": f.title,
                          "severity": str(f.severity), "confidence": str(f.confidence),
                          "score": round(f.score, 6), "rows": list(f.rows)} for f in shown],
        }


def judge(
    report: "Report",
    *,
    fail_at: Severity | None,
    quarantine_at: Severity | None = None,
    allow_disabled: Collection[str] | None = None,
) -> Verdict:
    """The verdict on `report` (rules in the module docstring). `quarantine_at` None: nothing is held."""
    reasons = [f"scan: detector {r.name} failed ({r.message}); the check was not done, so this fails closed"
               for r in report.detectors if r.status == DetectorStatus.FAILED]
    if not any(r.status == DetectorStatus.OK for r in report.detectors):
        reasons.append("scan: no detector ran on this dataset; nothing was checked")
    disabled = tuple(r for r in report.detectors if r.status == DetectorStatus.DISABLED)
    if allow_disabled is not None:
        for r in disabled:
            if r.name not in allow_disabled:
                reasons.append(f"policy: detector {r.name} applies to this data but is turned off ({r.message}); "
                               f"run it, or list it under allow_disabled in the policy")
    if fail_at is not None:
        severe = report.at_or_above(fail_at)
        if severe:
            rows = {r for f in severe for r in f.rows}
            reasons.append(f"scan: {len(severe)} finding(s) at or above {fail_at} "
                           f"({', '.join(sorted({f.detector for f in severe}))}) on {len(rows)} row(s)")
    bar = quarantine_at if quarantine_at is not None else fail_at
    held = tuple(report.at_or_above(quarantine_at)) if quarantine_at is not None else ()
    below = tuple(f for f in report.findings if bar is None or f.severity < bar)
    outcome = FAIL if reasons else QUARANTINE if held else PASS
    return Verdict(outcome, tuple(reasons), held, below, disabled)


def disabled_runs(data: "Dataset", chosen: Iterable[str], defaults: Iterable[str],
                  why: str = "not selected") -> list[DetectorRun]:
    """A DISABLED run for each default detector left out of `chosen` that would apply to `data`.

    A detector that does not apply (another kind, one label) is not disabled:
    nothing was lost by not running it.
    """
    from trainguard.detectors.base import get, skip_reason

    picked = set(chosen)
    out = []
    for name in defaults:
        if name in picked:
            continue
        det = get(name)()
        if skip_reason(det, data) is None:
            out.append(DetectorRun(name, det.version, DetectorStatus.DISABLED, det.settings_dict(),
                                   message=f"a default detector that applies to {data.kind.value} data; {why}"))
    return out


def add_disabled(report: "Report", runs: Iterable[DetectorRun]) -> None:
    """Record `runs` in the report's detector list, once (the engine may already have recorded them)."""
    present = {r.name for r in report.detectors}
    report.detectors.extend(r for r in runs if r.name not in present)
