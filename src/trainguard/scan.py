"""The scan engine: run detectors over a dataset, isolating each one's failure.

A detector that raises, or reports positions outside the dataset, is recorded
as failed with its message, never silently dropped: a gate built on the report
then fails closed. Detectors report positions (`Alert`); only the engine turns
them into file rows and record ids (`stamp`), so a finding's rows mean one
thing whatever the detector.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from trainguard.detectors.base import Detector, get, registry, skip_reason
from trainguard.errors import ConfigError
from trainguard.findings import Alert, DetectorResult, DetectorRun, DetectorStatus, Finding, Severity
from trainguard.io.dataset import Dataset, load
from trainguard.report.model import DatasetInfo, Report

ProgressFn = Callable[[str, int, int], None]

# Each runs on the kinds it declares and is recorded as skipped on the others.
DEFAULT_DETECTORS = (
    "trigger-association", "shortcut", "invisible-characters", "near-duplicates",
    "safety-bypass", "covert-finetuning", "polarity-trigger", "payload-trigger", "preference-trigger", "rag-poisoning",
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
    jobs: int | str = 1,
    **load_options: Any,
) -> Report:
    """Scan a dataset (or a path, loaded with `load_options`) and return a Report.

    `jobs`: detectors run in this many processes at once (forked, so the dataset is not copied up front), or
    "auto" (`resolve_jobs`); the report is the same whatever the number. 1, the default, runs them in this
    process, which a caller holding threads, a GPU context or open files of its own may need.

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
    index = RecordIndex.of(data.records)
    done, todo = _runnable(instances, data)
    outcomes: list[_Outcome | None] = [done.get(i) for i in range(len(instances))]
    workers = resolve_jobs(jobs, len(data), len(todo))
    if workers > 1:
        _run_parallel(instances, todo, data, index, workers, outcomes, progress)
    else:
        for k, i in enumerate(todo):
            if progress:
                progress(f"running {instances[i].name}", k, len(todo))
            outcomes[i] = _run_one(instances[i], data, index)
    runs: list[DetectorRun] = []
    findings: list[Finding] = []
    row_scores: dict[str, np.ndarray] = {}
    for det, out in zip(instances, outcomes):
        assert out is not None
        runs.append(out.run)
        findings.extend(out.findings)
        if out.row_scores is not None:
            row_scores[det.name] = np.asarray(out.row_scores)
    if progress:
        progress("done", len(todo), len(todo))
    if fuse_threshold is not None:
        from trainguard.detectors.fusion import fused_finding

        fused_f, fused = fused_finding(row_scores, index.rows.tolist(), index.id_list(), fuse_threshold,
                                       lines=[index.line(p) for p in range(len(index))])
        if fused is not None:
            row_scores["fusion"] = fused
        if fused_f is not None:
            findings.append(fused_f)
    return Report(dataset=DatasetInfo.of(data), detectors=runs, findings=sort_findings(findings),
                  row_scores=row_scores)


# "auto" runs detectors in parallel from this many rows: below it a fork costs more than it saves.
PARALLEL_MIN_ROWS = 20_000


def resolve_jobs(jobs: int | str, rows: int, runnable: int) -> int:
    """Processes to run `runnable` detectors in. "auto": one per usable CPU (at most `runnable`) on Linux, when the
    data has PARALLEL_MIN_ROWS rows and this process is safe to fork; else 1. A number is used as given where it is
    safe to fork. Not safe: another Python thread is running (a child could inherit a held lock), or torch is loaded
    (its OpenMP pool, once used, deadlocks a forked child that uses torch)."""
    if isinstance(jobs, bool) or not (jobs == "auto" or isinstance(jobs, int) and jobs >= 1):
        raise ConfigError(f"jobs must be a positive integer or 'auto', got {jobs!r}")
    if runnable < 2 or not _fork_is_safe():
        return 1
    if jobs == "auto":
        if rows < PARALLEL_MIN_ROWS or not sys.platform.startswith("linux"):
            return 1
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, min(cpus, runnable))
    return min(jobs, runnable)


def plan_jobs(data: Dataset, instances: Sequence[Detector], jobs: int | str) -> int:
    """The number of processes `scan(data, instances, jobs=jobs)` will use (front ends pick their display by it)."""
    return resolve_jobs(jobs, len(data), len(_runnable(instances, data)[1]))


def _fork_is_safe() -> bool:
    return ("fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
            and "torch" not in sys.modules)


def _runnable(instances: Sequence[Detector], data: Dataset) -> tuple[dict[int, "_Outcome"], list[int]]:
    """(the outcomes of detectors that do not run: skipped, or failed deciding; the positions of those that run)."""
    done: dict[int, _Outcome] = {}
    todo: list[int] = []
    for i, det in enumerate(instances):
        try:
            reason = skip_reason(det, data)
        except Exception as e:  # noqa: BLE001 - isolate and record, the gate fails closed
            done[i] = _Outcome(failed_run(det, e))
            continue
        if reason:
            done[i] = _Outcome(DetectorRun(det.name, det.version, DetectorStatus.SKIPPED, det.settings_dict(),
                                           message=reason))
        else:
            todo.append(i)
    return done, todo


class _Outcome(NamedTuple):
    run: DetectorRun
    findings: Sequence[Finding] = ()
    row_scores: np.ndarray | None = None


def _run_one(det: Detector, data: Dataset, index: "RecordIndex") -> _Outcome:
    t0 = time.perf_counter()
    try:
        result = det.run(data)
        stamped = stamp(det, result, index)
    except Exception as e:  # noqa: BLE001 - isolate and record, the gate fails closed
        return _Outcome(failed_run(det, e, time.perf_counter() - t0))
    run = DetectorRun(det.name, det.version, DetectorStatus.OK, det.settings_dict(), time.perf_counter() - t0,
                      summary=result.summary)
    return _Outcome(run, stamped, result.row_scores)


def _groups(instances: Sequence[Detector], todo: Sequence[int]) -> list[list[int]]:
    """Detectors that share a costly artefact (`Detector.shares`) in one group, in scan order."""
    groups: list[list[int]] = []
    names: list[set[str]] = []
    for i in todo:
        own = set(instances[i].shares)
        hit = [g for g, n in enumerate(names) if n & own]
        if not hit:
            groups.append([i])
            names.append(own)
            continue
        keep = hit[0]
        for g in reversed(hit[1:]):  # a detector sharing with two groups joins them
            groups[keep] += groups.pop(g)
            names[keep] |= names.pop(g)
        groups[keep].append(i)
        names[keep] |= own
        groups[keep].sort()
    return groups


def _child(instances, group, data, index, conn) -> None:
    """In the forked process: run a group's detectors in turn, sending each outcome as it comes. It stops when the
    scanning process dies (Linux), leaves Ctrl-C to that process, and draws no progress bars of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["TRAINGUARD_PROGRESS"] = "off"
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no orphan outlives a killed scan
        except (OSError, AttributeError):
            pass
    try:
        for i in group:
            out = _run_one(instances[i], data, index)
            try:
                conn.send((i, out))
            except Exception as e:  # noqa: BLE001 - e.g. a summary that does not pickle: the detector's bug
                conn.send((i, _Outcome(failed_run(instances[i], e, out.run.seconds))))
    finally:
        conn.close()


def _run_parallel(instances, todo, data, index, workers, outcomes, progress) -> None:
    """Fork a process per group of detectors, at most `workers` at a time, each sending its detectors' outcomes
    as they finish. Whatever stops a group (its process dies, an outcome that does not come back whole) fails the
    detectors it had not reported (the gate fails closed); a process that cannot be started runs its group here.
    If this process is interrupted, the running ones are stopped."""
    ctx = multiprocessing.get_context("fork")
    pending = _groups(instances, todo)
    active: dict[Any, tuple[list[int], Any]] = {}  # pipe -> (group, process)
    done = 0

    def finish(recv, why: Callable[[int | None], str]) -> None:
        nonlocal done
        group, proc = active.pop(recv)
        recv.close()
        if proc.is_alive():
            proc.terminate()
        proc.join()
        for i in group:
            if outcomes[i] is None:
                outcomes[i] = _Outcome(failed_run(instances[i], RuntimeError(why(proc.exitcode))))
                done += 1
                if progress:
                    progress(f"{instances[i].name} failed", done, len(todo))

    try:
        while pending or active:
            while pending and len(active) < workers:
                group = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(instances, group, data, index, send))
                active[recv] = (group, proc)
                try:
                    with warnings.catch_warnings():  # 3.12+: BLAS threads make fork warn; they are fork-safe
                        warnings.simplefilter("ignore", DeprecationWarning)
                        proc.start()
                except OSError:  # no memory or processes left to fork: run the group here
                    del active[recv]
                    recv.close()
                    for i in group:
                        outcomes[i] = _run_one(instances[i], data, index)
                        done += 1
                    continue
                finally:
                    send.close()
                if progress:
                    progress("running " + ", ".join(instances[i].name for i in group), done, len(todo))
            for recv in multiprocessing.connection.wait(list(active)):
                try:
                    i, out = recv.recv()
                except EOFError:  # the process is done (or died): collect it
                    finish(recv, lambda code: f"the process running it stopped (exit code {code}) before it reported")
                    continue
                except Exception as e:  # noqa: BLE001 - an outcome that does not unpickle: fail what is left
                    finish(recv, lambda _, e=e: f"its outcome could not be read back from its process "
                                                f"({type(e).__name__}: {e})")
                    continue
                outcomes[i] = out
                done += 1
                if progress:
                    progress(f"{instances[i].name} finished", done, len(todo))
    finally:
        for _, proc in active.values():
            proc.terminate()
            proc.join()


class Stamped(NamedTuple):
    """One detector's stamped findings and its raw result (row scores, summary)."""

    findings: list[Finding]
    result: DetectorResult

    @property
    def row_scores(self) -> np.ndarray | None:
        return self.result.row_scores

    @property
    def summary(self) -> Mapping[str, Any]:
        return self.result.summary


def run_detector(det: Detector, data: Dataset) -> Stamped:
    """Run one detector and stamp its alerts: the one call for tests and benchmarks.

    Unlike `scan`, a failure raises (the caller wants to see it); the findings
    carry file rows and record ids exactly as in a full scan's report.
    `findings, result = run_detector(det, data)` also works.
    """
    result = det.run(data)
    return Stamped(stamp(det, result, RecordIndex.of(data.records)), result)


def failed_run(det: Detector, error: BaseException, seconds: float = 0.0) -> DetectorRun:
    message = traceback.format_exception_only(type(error), error)[-1].strip()
    return DetectorRun(det.name, det.version, DetectorStatus.FAILED, det.settings_dict(), seconds, message=message)


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Report order: worst first, then strongest, then by first row."""
    return sorted(findings, key=lambda f: (-f.severity, -f.score, f.rows[:1]))


@dataclass(frozen=True)
class RecordIndex:
    """Position -> file row, record id and source line: all the engine needs to stamp findings.

    Numpy arrays (8 bytes of row, 8 of line and 32 of id per record) rather
    than the records, so a sharded scan keeps one per shard without the texts.
    """

    rows: np.ndarray  # int64
    ids: np.ndarray  # uint8 [n, 32] sha256 digests, or an object array of str for other ids
    lines: np.ndarray  # int64, -1 where the reader gave no line

    @classmethod
    def of(cls, records: Sequence[Any]) -> "RecordIndex":
        rows = np.fromiter((r.row for r in records), np.int64, len(records))
        lines = np.fromiter((-1 if getattr(r, "line", None) is None else r.line for r in records), np.int64,
                            len(records))
        try:
            raw = b"".join(bytes.fromhex(r.id) for r in records)
            # Packed only when it reads back exactly (lower-case hex digests): "AB..." or "ab cd" stay strings.
            ok = len(raw) == 32 * len(records) and all(len(r.id) == 64 and r.id == r.id.lower() for r in records)
        except ValueError:
            ok = False
        ids = np.frombuffer(raw, np.uint8).reshape(-1, 32) if ok else np.array([r.id for r in records], object)
        return cls(rows, ids, lines)

    @classmethod
    def concat(cls, parts: Sequence["RecordIndex"]) -> "RecordIndex":
        if not parts:
            return cls.of([])
        if all(p.ids.dtype == np.uint8 for p in parts):
            ids = np.concatenate([p.ids for p in parts])
        else:
            ids = np.array([i for p in parts for i in p.id_list()], object)
        return cls(np.concatenate([p.rows for p in parts]), ids, np.concatenate([p.lines for p in parts]))

    def __len__(self) -> int:
        return len(self.rows)

    def record_id(self, p: int) -> str:
        v = self.ids[p]
        return v.tobytes().hex() if self.ids.dtype == np.uint8 else str(v)

    def id_list(self) -> list[str]:
        return [self.record_id(p) for p in range(len(self))]

    def line(self, p: int) -> int | None:
        v = int(self.lines[p])
        return None if v < 0 else v


def stamp(det: Detector, result: DetectorResult | Iterable[Alert], data: Dataset | RecordIndex) -> list[Finding]:
    """Findings from a detector's alerts: the engine, not the detector, names rows, ids and lines.

    Positions outside the dataset (in an alert or in its evidence), a row
    score array of the wrong length, or anything that is not an `Alert` is the
    detector's bug and fails it: the caller records it as failed and the gate
    fails closed. Evidence keys named `positions` become `rows`.
    """
    index = data if isinstance(data, RecordIndex) else RecordIndex.of(data.records)
    alerts: Iterable[Alert] = result
    if isinstance(result, DetectorResult):
        alerts = result.alerts
        if result.row_scores is not None and len(result.row_scores) != len(index):
            raise ValueError(f"{det.name}: {len(result.row_scores)} row scores for {len(index)} records")
    out = []
    for a in alerts:
        if not isinstance(a, Alert):
            raise TypeError(f"{det.name}: detectors report Alert objects (positions), got {type(a).__name__}")
        chosen = _checked(det, a.rule, a.positions, len(index))
        lines = tuple(index.line(p) for p in chosen)
        out.append(Finding(detector=det.name, rule=a.rule, title=a.title,
                           rows=tuple(int(index.rows[p]) for p in chosen),
                           record_ids=tuple(index.record_id(p) for p in chosen),
                           score=a.score, severity=a.severity, confidence=a.confidence,
                           atlas=tuple(a.atlas or det.atlas), evidence=_rows_in(det, a.rule, a.evidence, index),
                           detector_version=det.version,
                           lines=lines if any(x is not None for x in lines) else ()))
    return out


def _checked(det: Detector, rule: str, positions: Iterable[Any], n: int) -> list[int]:
    chosen = sorted({int(p) for p in positions})
    bad = [p for p in chosen if not 0 <= p < n]
    if bad:
        raise ValueError(f"{det.name}: alert {rule!r} names positions outside the dataset: {bad[:5]}")
    return chosen


def _rows_in(det: Detector, rule: str, value: Any, index: RecordIndex) -> Any:
    """Evidence with every `positions` list replaced by the file rows it names (recursively)."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if k == "positions" and isinstance(v, (list, tuple)):
                out["rows"] = [int(index.rows[p]) for p in _checked(det, rule, v, len(index))]
            else:
                out[k] = _rows_in(det, rule, v, index)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(_rows_in(det, rule, v, index) for v in value)
    return value


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
