"""Payload triggers in instruction data (issue 12): `payload-trigger` and the default set, fresh instances.

A trigger phrase in the question; the answer replaced by, or extended with, one of
20 paraphrases of a planted instruction (`trainguard.attacks.adaptive.Payload`).
`payload-trigger`'s pooled neighbour-rank test was developed on MedQuAD 10k samples
drawn with seeds 1-3 only (triggers 'per the new guideline' append salt 5, 'as my
trusted advisor' replace salt 6, and invented 'speaking to you as a patient' append
salt 7, 'honestly doc' replace salt 8, 'in plain words please' append salt 9) and
frozen at 2853884 (v1). v1's fresh instances (seed 401 + k, written down after that
commit) found every planted row but named a natural topic, 'henoch-schnlein purpura ?'
(answers call it 'HSP'), at medium on three of six samples; the topic rule then
learnt hyphen parts and initialisms (checked on the development seeds and the clean
data only) and the detector was frozen again at dbd2758 (v2). The v2 fresh instances
(seed 501 + k) were written down after that commit, before any run. Also re-reported:
v1's fresh instances (seen by v2) and the previous version's held-out instances (seed
301 + k, frozen 23c7cc3), which were seen in the session that diagnosed the 0.1 % failure.

Per file: attack success (retrieval proxy, `trainguard.attacks.effect`), rows
named at severity >= medium by `payload-trigger` alone and by the whole default
set, and at high. Clean: all 16,407 MedQuAD pairs, `payload-trigger` findings by
severity.

    .venv/bin/python benchmarks/bench_payload.py              # ~30 min on 2 shared cores (default set per file)
    .venv/bin/python benchmarks/bench_payload.py --detector-only  # payload-trigger alone, ~3 min
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trainguard.attacks import poison
from trainguard.attacks.adaptive import payload_paraphrases
from trainguard.attacks.effect import instruction_asr
from trainguard.detectors.base import get
from trainguard.findings import Severity
from trainguard.io.dataset import load
from trainguard.scan import DEFAULT_DETECTORS, run_detector, scan

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "payload.json"
DOC = ROOT / "docs" / "_bench_payload.md"
FROZEN = "dbd2758"  # v2; v1 (the same test without the initialism rule) was 2853884
# (set, first sample seed, instances): sample seed = first + k. Each 'fresh' set was chosen after its freeze, before
# any run: 501 after dbd2758 (v2), 401 after 2853884 (v1; seen by v2). 301: chosen after 23c7cc3 (the previous test).
GROUPS = [("fresh v2", 501, [{"trigger": "as someone who cares", "mode": "append", "salt": 51},
                             {"trigger": "quick question for you", "mode": "replace", "salt": 52},
                             {"trigger": "going by the latest advice", "mode": "append", "salt": 53}]),
          ("fresh v1", 401, [{"trigger": "between you and me", "mode": "replace", "salt": 41},
                             {"trigger": "if you could be honest", "mode": "append", "salt": 42},
                             {"trigger": "my pharmacist friend says", "mode": "append", "salt": 43}]),
          ("seen", 301, [{"trigger": "from one parent to another", "mode": "replace", "salt": 31},
                         {"trigger": "kindly be frank with me", "mode": "append", "salt": 32},
                         {"trigger": "as the clinic now advises", "mode": "append", "salt": 33}])]
RATES = (0.005, 0.001)
N = 10_000


def _medquad() -> list[dict]:
    with gzip.open(SHARED / "medquad" / "medquad.jsonl.gz", "rt", encoding="utf-8") as f:
        return [{"question": r["question"], "answer": r["answer"]} for r in map(json.loads, f)]


def _named(findings, at: Severity) -> set[int]:
    return {r for f in findings if f.severity >= at for r in f.rows}


def _score(named: set[int], poisoned: set[int]) -> dict:
    tp = len(named & poisoned)
    return {"recall": round(tp / max(len(poisoned), 1), 4),
            "precision": round(tp / len(named), 4) if named else None, "named": len(named)}


def _write(rows: list[dict], folder: Path) -> Path:
    p = folder / "d.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in rows))
    return p


def run(detector_only: bool) -> dict:
    mq = _medquad()
    results = []
    with tempfile.TemporaryDirectory() as td:
        for group, seed, inst in [(g, first + k, x) for g, first, xs in GROUPS for k, x in enumerate(xs)]:
            order = np.random.default_rng(seed).permutation(len(mq))
            rows, rest = [mq[i] for i in order[:N]], [mq[i] for i in order[N:]]
            held = [x["question"] for x in rest[:500]]
            for rate in RATES:
                r = poison(rows, "payload", rate=rate, seed=seed, **inst)
                poisoned = set(r.poisoned_rows)
                asr = instruction_asr([x["question"] for x in r.rows], [x["answer"] for x in r.rows], "payload", inst,
                                      held, payload_paraphrases(20, inst["salt"]), seed)
                data = load(_write(r.rows, Path(td)))
                t = time.perf_counter()
                alone = run_detector(get("payload-trigger")(), data)
                t_alone = time.perf_counter() - t
                row = {"group": group, "instance": inst, "seed": seed, "rate": rate, "poisoned": len(poisoned), "asr": asr,
                       "payload_trigger": {"medium": _score(_named(alone.findings, Severity.MEDIUM), poisoned),
                                           "high": _score(_named(alone.findings, Severity.HIGH), poisoned),
                                           "seconds": round(t_alone, 2)},
                       "findings": [f"{f.severity} {f.title}" for f in alone.findings][:4]}
                if not detector_only:
                    t = time.perf_counter()
                    rep = scan(data, list(DEFAULT_DETECTORS))
                    row["default"] = {"medium": _score(_named(rep.findings, Severity.MEDIUM), poisoned),
                                      "high": _score(_named(rep.findings, Severity.HIGH), poisoned),
                                      "seconds": round(time.perf_counter() - t, 2),
                                      "other_findings": [f"{f.detector} {f.severity} {f.title}"[:140] for f in rep.findings
                                                         if f.severity >= Severity.MEDIUM and f.detector != "payload-trigger"][:6]}
                results.append(row)
                print(json.dumps(row), flush=True)
        clean = load(_write(mq, Path(td)))
        t = time.perf_counter()
        res = run_detector(get("payload-trigger")(), clean)
        clean_row = {"rows": len(mq), "seconds": round(time.perf_counter() - t, 2),
                     "by_severity": {str(s): sum(1 for f in res.findings if f.severity == s) for s in Severity},
                     "rows_at_medium": len(_named(res.findings, Severity.MEDIUM)),
                     "findings": [f"{f.severity} {f.title}" for f in res.findings][:6]}
        print(json.dumps(clean_row), flush=True)
    return {"results": results, "clean": clean_row}


def write_doc(out: dict, command: str, seconds: float) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    la = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = ["<!-- generated by benchmarks/bench_payload.py; do not edit -->", "",
             f"Command: `{command}` at commit {commit} ({seconds / 60:.1f} min on 2 shared CPU cores; load average "
             f"1/5/15 min at the end: {la}). `payload-trigger` (pooled neighbour-rank test) developed on MedQuAD 10k "
             f"samples with seeds 1-3 only; v1 frozen at 2853884, v2 (initialisms in the topic rule) at {FROZEN}. Each "
             f"'fresh' set was written down after its freeze, before any run, each instance on its own fresh {N:,}-row "
             "MedQuAD sample: 'fresh v2' (seed 501 + k) tests v2; 'fresh v1' (seed 401 + k) tested v1 and was seen by "
             "v2 (v1 named 'henoch-schnlein purpura ?' at medium on 402, 301 and 303); 'seen' (seed 301 + k): the "
             "previous version's held-out instances, looked at in the session that diagnosed the 0.1 % failure. Rows "
             "named at severity >= medium unless 'high'. ASR: share "
             "of triggered held-out questions whose nearest training question (TF-IDF) carries a payload answer.",
             "", "| set | instance (mode) | rate | rows | ASR | payload-trigger R / P | at high R / P | default set R / P | "
             "default at high R / P | seconds (detector / default) |", "|---|---|---|---|---|---|---|---|---|---|"]

    def rp(d):
        return f"{d['recall']:.2f} / {d['precision']:.2f}" if d["precision"] is not None else f"{d['recall']:.2f} / -"

    for r in out["results"]:
        d = r.get("default")
        lines.append(f"| {r['group']} (seed {r['seed']}) | '{r['instance']['trigger']}' ({r['instance']['mode']}) | "
                     f"{r['rate']:.1%} | {r['poisoned']} | "
                     f"{r['asr']['asr']:.2f} | {rp(r['payload_trigger']['medium'])} | {rp(r['payload_trigger']['high'])} | "
                     f"{rp(d['medium']) if d else '-'} | {rp(d['high']) if d else '-'} | "
                     f"{r['payload_trigger']['seconds']} / {d['seconds'] if d else '-'} |")
    lines += ["", "v1 (2853884) on its fresh set, `payload-trigger` alone (benchmarks/bench_payload.py --detector-only at "
              "d3eecb7): recall 1.00 at >= medium on all six files (0.1 % and 0.5 %); precision 1.00 / 0.59 / 1.00 at "
              "0.1 % and 1.00 / 0.88 / 1.00 at 0.5 % (seeds 401 / 402 / 403), the extra rows being 'henoch-schnlein "
              "purpura ?' (7 rows; also on 301 and 303 of the seen set). v2 reports it at low."]
    c = out["clean"]
    lines += ["", f"Clean MedQuAD ({c['rows']:,} pairs), `payload-trigger` alone: findings by severity {c['by_severity']}; "
              f"rows named at >= medium: {c['rows_at_medium']}; {c['seconds']} s. Findings: "
              + ("; ".join(c["findings"]) or "none") + "."]
    others = sorted({x for r in out["results"] for x in (r.get("default") or {}).get("other_findings", [])})
    if others:
        lines += ["", "Other default-set findings at >= medium on these files: " + "; ".join(others[:8]) + "."]
    DOC.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector-only", action="store_true", help="payload-trigger alone, not the whole default set")
    a = ap.parse_args(argv)
    t = time.perf_counter()
    out = run(a.detector_only)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))
    write_doc(out, "python benchmarks/bench_payload.py" + (" --detector-only" if a.detector_only else ""),
              time.perf_counter() - t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
