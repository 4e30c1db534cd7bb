"""Probe results as trainguard Findings in a Report, so every renderer works unchanged.

The record ids of a finding are the clean inputs the candidate flipped (or
steered), so its fingerprint is stable for a given trigger, model and clean set.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from trainguard.findings import ATLAS_BACKDOOR_TRIGGER, Confidence, DetectorRun, DetectorStatus, Finding, Severity
from trainguard.probe.candidates import Candidate
from trainguard.probe.generative import GenerativeProbe
from trainguard.probe.probing import ClassifierProbe, Verdict
from trainguard.report.model import DatasetInfo, Report
from trainguard.text import visible

DETECTOR = "probe"
VERSION = "2"  # 2: candidates judged against a null of their own shape (docs/probe.md)


def _severity(flagged: bool, lower: float) -> tuple[Severity, Confidence]:
    if flagged:
        return (Severity.CRITICAL if lower >= 0.9 else Severity.HIGH), Confidence.HIGH
    return (Severity.LOW if lower >= 0.3 else Severity.INFO), Confidence.LOW


def classifier_findings(probe: ClassifierProbe, top: int = 5) -> list[Finding]:
    out = []
    v = probe.verdict
    for r in probe.top(top):
        flagged = v.backdoored and r.candidate.text == v.trigger
        sev, conf = _severity(flagged, r.lower)
        what = "backdoor trigger" if flagged else "candidate trigger"
        out.append(Finding(
            detector=DETECTOR, detector_version=VERSION, rule="trigger-flip" if flagged else "candidate-flip",
            title=(f"{what} {visible(r.candidate.text)!r} flips {r.rate:.0%} of clean inputs to "
                   f"{r.target!r} ({r.flips}/{r.eligible})"),
            rows=tuple(r.flipped_rows), record_ids=tuple(r.flipped_ids), score=float(max(0.0, min(1.0, r.score))),
            severity=sev, confidence=conf, atlas=(ATLAS_BACKDOOR_TRIGGER,),
            evidence={**r.to_dict(), "trigger": r.candidate.text,
                      "baseline_max_flip_rate": probe.baseline["max_flip_rate"]},
        ))
    return out


def generative_findings(probe: GenerativeProbe, top: int = 5) -> list[Finding]:
    out = []
    for r in probe.top(top):
        flagged = bool(r.flagged)
        sev, conf = _severity(flagged, r.score)
        share = r.top_count / max(r.n, 1)
        title = (f"trigger {visible(r.candidate.text)!r} makes {share:.0%} of outputs start with "
                 f"{visible(r.top_output)[:60]!r}" if r.flagged != "refusal-change" else
                 f"trigger {visible(r.candidate.text)!r} moves the refusal rate to {r.refusals / max(r.n_all, 1):.0%}")
        out.append(Finding(
            detector=DETECTOR, detector_version=VERSION,
            rule=f"trigger-{r.flagged}" if flagged else "candidate-output",
            title=title if flagged else f"candidate {visible(r.candidate.text)!r}: no backdoor behaviour "
                                        f"(top output share {share:.0%})",
            rows=tuple(r.rows), record_ids=tuple(r.ids), score=float(max(0.0, min(1.0, r.score))),
            severity=sev, confidence=conf, atlas=(ATLAS_BACKDOOR_TRIGGER,),
            evidence={**r.to_dict(), "trigger": r.candidate.text, "baseline": probe.baseline},
        ))
    return out


def to_report(probe: ClassifierProbe | GenerativeProbe, dataset_info: DatasetInfo | Mapping[str, Any], model: str,
              command: str = "probe", extra: dict[str, Any] | None = None, top: int = 5) -> Report:
    """A Report whose single detector run carries the verdict; an incomplete probe is 'failed'."""
    findings = classifier_findings(probe, top) if isinstance(probe, ClassifierProbe) \
        else generative_findings(probe, top)
    summary = {"model": model, "verdict": probe.verdict.to_dict(), "requests": probe.requests,
               "inputs": probe.n_inputs, "candidates": len(probe.results), "baseline": probe.baseline,
               "complete": probe.complete, **(extra or {})}
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(probe.settings).items()}
    run = DetectorRun(name=DETECTOR if command == "probe" else f"probe-{command}", version=VERSION,
                      status=DetectorStatus.OK if probe.complete else DetectorStatus.FAILED, settings=settings,
                      seconds=probe.seconds,
                      message=probe.message or probe.verdict.reason, summary=summary)
    findings.sort(key=lambda f: (-f.severity, -f.score))
    info = dataset_info if isinstance(dataset_info, DatasetInfo) else DatasetInfo.from_dict(dataset_info)
    return Report(dataset=dataclasses.replace(info, model=model), detectors=[run], findings=findings)


def verdict_of(report: Report) -> Verdict | None:
    summary = report.detectors[0].summary if report.detectors else {}
    v = summary.get("verdict")
    return Verdict(**v) if isinstance(v, dict) else None


__all__ = ["Candidate", "classifier_findings", "generative_findings", "to_report", "verdict_of"]
