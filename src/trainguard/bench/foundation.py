"""The foundation benchmark: planted attacks at several rates, detection quality per detector.

For each attack and poison rate the clean data is poisoned by the simulator
(deterministic by seed), scanned, and scored against the simulator's ground
truth: precision / recall / F1 of the rows in high-severity findings (the
gate's operating point), and AUROC of the per-row scores. The same poisoned
data goes through cleanlab's `find_label_issues` on out-of-fold TF-IDF
logistic-regression probabilities, the tool a data team would reach for first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trainguard.bench.metrics import detection
from trainguard.findings import Severity
from trainguard.io.dataset import Dataset
from trainguard.io.mapping import RecordBuilder, detect_kind
from trainguard.io.readers import read
from trainguard.report.model import Report
from trainguard.scan import DEFAULT_DETECTORS, scan

Progress = Callable[[str], None]


def load_raw(path: str | Path) -> list[dict]:
    rows = []
    for item in read(Path(path)):
        if item.error is not None:
            raise item.error
        rows.append(item.value)
    return rows


def to_dataset(rows: list[dict], path: str) -> Dataset:
    kind, fm = detect_kind(set(rows[0]))
    builder = RecordBuilder(path, kind, fm)
    return Dataset(records=[builder.build(r, i, None) for i, r in enumerate(rows)], kind=kind, path=path,
                   fieldmap=fm)


def evaluate(data: Dataset, truth: np.ndarray, detectors=DEFAULT_DETECTORS) -> tuple[dict[str, Any], float, Report]:
    t0 = time.perf_counter()
    report = scan(data, detectors=list(detectors))
    seconds = time.perf_counter() - t0
    index = {r.row: i for i, r in enumerate(data.records)}
    out: dict[str, Any] = {}
    combined_flags: set[int] = set()
    combined_scores = np.zeros(len(data))
    for run in report.detectors:
        if run.status != "ok":
            out[run.name] = {"status": run.status, "message": run.message}
            continue
        flagged = {index[r] for f in report.findings if f.detector == run.name and f.severity >= Severity.HIGH
                   for r in f.rows}
        scores = report.row_scores.get(run.name)
        out[run.name] = detection(flagged, truth, scores).to_dict()
        combined_flags |= flagged
        if scores is not None:
            combined_scores = np.maximum(combined_scores, scores)
    out["trainguard (all)"] = detection(combined_flags, truth, combined_scores).to_dict()
    return out, seconds, report


def cleanlab_row(data: Dataset, truth: np.ndarray, seed: int) -> dict[str, Any]:
    from trainguard.bench.baselines import cleanlab_label_issues

    t0 = time.perf_counter()
    flagged, scores = cleanlab_label_issues([r.text for r in data], [r.label or "" for r in data], seed=seed)
    result = detection(flagged, truth, scores).to_dict()
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def run(
    data_path: str,
    attacks: list[str],
    rates: list[float],
    seed: int = 7,
    baseline: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    from trainguard import attacks as attack_lib

    say = progress or (lambda msg: None)
    raw = load_raw(data_path)
    clean = to_dataset(raw, data_path)
    say(f"clean set: {len(clean):,} rows")
    _, clean_seconds, clean_report = evaluate(clean, np.zeros(len(clean), dtype=bool))
    high_rows = clean_report.flagged_rows(Severity.HIGH)
    results: dict[str, Any] = {
        "data": str(data_path),
        "rows": len(clean),
        "seed": seed,
        "clean": {
            "high_severity_rows": len(high_rows),
            "high_severity_share": round(len(high_rows) / len(clean), 6),
            "findings_by_severity": clean_report.severity_counts(),
            "scan_seconds": round(clean_seconds, 2),
        },
        "runs": [],
    }
    for attack in attacks:
        for rate in rates:
            say(f"{attack} @ {rate:.2%}")
            poisoned = attack_lib.poison(raw, attack, rate=rate, seed=seed, kind=clean.kind, fieldmap=clean.fieldmap)
            truth = np.zeros(len(poisoned.rows), dtype=bool)
            truth[list(poisoned.poisoned_rows)] = True
            data = to_dataset(poisoned.rows, data_path)
            metrics, seconds, _ = evaluate(data, truth)
            entry = {"attack": attack, "rate": rate, "poisoned": int(truth.sum()), "scan_seconds": round(seconds, 2),
                     "detectors": metrics}
            if baseline and clean.kind.value == "classification":
                entry["cleanlab"] = cleanlab_row(data, truth, seed)
            results["runs"].append(entry)
    return results


def measure_speed(data_path: str) -> dict[str, Any]:
    """Throughput and peak memory of load + scan, in a fresh process so peak RSS is this work alone."""
    code = (
        "import json,resource,sys,time\n"
        "import trainguard as tg\n"
        "t0=time.perf_counter(); d=tg.load(sys.argv[1]); t1=time.perf_counter(); r=tg.scan(d); t2=time.perf_counter()\n"
        "print(json.dumps({'rows':len(d),'load_seconds':t1-t0,'scan_seconds':t2-t1,"
        "'peak_rss_mb':resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024,"
        "'per_detector_seconds':{x.name:round(x.seconds,3) for x in r.detectors}}))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    out = subprocess.run([sys.executable, "-c", code, str(data_path)], capture_output=True, text=True, env=env,
                         check=True)
    m = json.loads(out.stdout)
    m["scan_records_per_second"] = round(m["rows"] / m["scan_seconds"])
    m["load_and_scan_records_per_second"] = round(m["rows"] / (m["scan_seconds"] + m["load_seconds"]))
    m["cpus"] = os.cpu_count()
    return m

