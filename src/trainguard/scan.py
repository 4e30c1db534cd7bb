"""The scan engine: run detectors over a dataset, isolating each one's failure.

A detector that raises is recorded as failed with its message, never silently
dropped: a gate built on the report then fails closed.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from trainguard.detectors.base import Detector, get, registry
from trainguard.errors import ConfigError
from trainguard.findings import Alert, DetectorRun, Finding, Severity
from trainguard.io.dataset import Dataset, load
from trainguard.report.model import Report

ProgressFn = Callable[[str, int, int], None]

# Each runs on the kinds it declares and is recorded as skipped on the others.
DEFAULT_DETECTORS = (
    "trigger-association", "invisible-characters", "near-duplicates",
    "safety-bypass", "polarity-trigger", "preference-trigger", "rag-poisoning",
)


def build_detectors(
    names: Iterable[str] | None = None, settings: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Detector]:
    names = list(names) if names else list(DEFAULT_DETECTORS)
    settings = dict(settings or {})
    unknown = set(settings) - set(registry())
    if unknown:
        raise ConfigError(f"settings given for unknown detector(s): {sorted(unknown)}")
    return [get(n)(**dict(settings.get(n, {}))) for n in names]


def scan(
    data: Dataset | str | Path,
    detectors: Iterable[str] | Iterable[Detector] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    progress: ProgressFn | None = None,
    fuse_threshold: float | None = None,
    **load_options: Any,
) -> Report:
    """Scan a dataset (or a path, loaded with `load_options`) and return a Report.

    With `fuse_threshold`, the detectors' row scores are also fused into one
    calibrated score (`detectors.fusion`) and the rows reaching it become one
    `fusion` finding that names, per row, the detector carrying it.
    """
    if not isinstance(data, Dataset):
        data = load(data, **load_options)
    dets = list(detectors) if detectors is not None else None
    if dets and all(isinstance(d, Detector) for d in dets):
        instances: list[Detector] = dets  # type: ignore[assignment]
    else:
        instances = build_detectors(dets, settings)  # type: ignore[arg-type]
    runs: list[DetectorRun] = []
    findings = []
    row_scores = {}
    for i, det in enumerate(instances):
        if progress:
            progress(det.name, i, len(instances))
        reason = det.applies_to(data)
        if reason:
            runs.append(DetectorRun(det.name, det.version, "skipped", det.settings_dict(), message=reason))
            continue
        t0 = time.perf_counter()
        try:
            result = det.run(data)
        except Exception as e:  # noqa: BLE001 - isolate and record, the gate fails closed
            tb = traceback.format_exception_only(type(e), e)[-1].strip()
            runs.append(DetectorRun(det.name, det.version, "failed", det.settings_dict(),
                                    time.perf_counter() - t0, message=tb))
            continue
        runs.append(DetectorRun(det.name, det.version, "ok", det.settings_dict(),
                                time.perf_counter() - t0, summary=result.summary))
        findings.extend(stamp(det, result.alerts, data))
        if result.row_scores is not None:
            row_scores[det.name] = result.row_scores
    if progress:
        progress("done", len(instances), len(instances))
    if fuse_threshold is not None:
        from trainguard.detectors.fusion import fused_finding

        fused_f, fused = fused_finding(row_scores, [r.row for r in data.records], [r.id for r in data.records],
                                       fuse_threshold)
        if fused is not None:
            row_scores["fusion"] = fused
        if fused_f is not None:
            findings.append(fused_f)
    findings.sort(key=lambda f: (-f.severity, -f.score, f.rows[:1]))
    return Report(dataset=data.info(), detectors=runs, findings=findings, row_scores=row_scores)


def stamp(det: Detector, alerts: Iterable[Alert], data: Dataset) -> list[Finding]:
    """Findings from a detector's alerts: the engine, not the detector, names rows and ids.

    A position outside the dataset is the detector's bug and fails it (the
    caller records it as failed and the gate fails closed).
    """
    records = data.records
    out = []
    for a in alerts:
        if isinstance(a, Finding):  # TRANSITION: removed once every detector reports Alerts
            out.append(a)
            continue
        bad = [p for p in a.positions if not 0 <= p < len(records)]
        if bad:
            raise ValueError(f"{det.name}: alert {a.rule!r} names positions outside the dataset: {bad[:5]}")
        chosen = [records[p] for p in sorted(set(a.positions))]
        out.append(Finding(detector=det.name, rule=a.rule, title=a.title,
                           rows=tuple(r.row for r in chosen), record_ids=tuple(r.id for r in chosen),
                           score=a.score, severity=a.severity, confidence=a.confidence,
                           atlas=a.atlas or det.atlas, evidence=a.evidence, detector_version=det.version))
    return out


def parse_settings(pairs: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`DETECTOR.KEY=VALUE` pairs -> per-detector settings, typed by each Settings dataclass.

    Same rules as `trainguard attack --param` (`trainguard.settings_text`): repeat a
    pair to append to a tuple setting, `@FILE` for its items, `KEY=` for none.
    """
    from trainguard import settings_text

    grouped: dict[str, list[str]] = {}
    for pair in pairs:
        lhs, sep, value = pair.partition("=")
        name, dot, key = lhs.strip().partition(".")
        name, key = name.strip(), key.strip()
        if not sep or not dot or not name or not key:
            raise ConfigError(f"--set expects DETECTOR.KEY=VALUE, got {pair!r}")
        grouped.setdefault(name, []).append(f"{key}={value.strip()}")
    return {name: settings_text.parse(values, settings_text.specs(get(name).Settings),
                                      owner=f"--set: detector {name}", option="--set")
            for name, values in grouped.items()}


def exit_code(report: Report, fail_on: Severity | str | None) -> int:
    """0: nothing at or above `fail_on`; 1: findings at or above it, a detector failed, or none ran.

    The same verdict as the gate's (`trainguard.verdict.judge`); `scan` allows
    detectors its user left out with `--detectors`.
    """
    from trainguard.verdict import judge

    threshold = None if fail_on is None else Severity.parse(fail_on)
    return 1 if judge(report, fail_at=threshold).failed else 0
