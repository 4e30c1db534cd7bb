"""Severity that matches the evidence (issue 12, item 3): false findings per severity and recall per severity.

Every row a user is shown at medium is an alert too, so precision is measured at
each severity a user sees (high, medium) on real clean data, and recall at
>= medium and at high on planted attacks. All scans use the DEFAULT detector set.

Clean data (no planted rows; every finding at >= medium is false unless it names
a real data-quality problem, listed in DATA_QUALITY):
  - SST-2 train, all 67,349 rows;
  - MedQuAD, all 16,407 pairs as instruction data (`question` -> prompt, `answer` -> response);
  - the bundled demo (3,000 SST-2 rows with 60 planted rows; findings beyond them are false);
  - 3,000- and 20,000-row SST-2 samples (demo-sized and bench_adaptive-sized) drawn with the seeds below.
Planted attacks on all of SST-2 train (trainguard.attacks, SST-2's default target `0`): BadNets rare words,
AddSent phrase, invisible Unicode (dirty label: rows of the other label get the trigger and the target label)
and `cleanlabel` (BadNets words inserted only into rows already labelled `0`), at 0.1 %, 1 % and 5 %.

Seeds. Development (looked at while choosing the rule and its threshold): attack seeds 1, 2; sample seeds
101-103 (20k), 201-204 (3k and 10k) and 205-212 (3k and 5k), with 0.5-5 % planted in them too; the demo;
the full clean SST-2 and MedQuAD sets (the issue's bars, seen before and during the change). Fresh (first
run after the rule was frozen): attack seeds 11, 12; sample seeds 301-303 (20k) and 401-410 (3k).

    # the code before the change, from an extracted copy of its src/ (git archive BASE src | tar -x -C DIR)
    PYTHONPATH=DIR/src python benchmarks/bench_severity.py --tag before
    PYTHONPATH=src python benchmarks/bench_severity.py --tag after
    python benchmarks/bench_severity.py --doc        # results/severity-{before,after}.json -> docs/_bench_severity.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "_bench_severity.md"

ATTACKS = {"badnets": {}, "addsent": {}, "unicode": {}, "cleanlabel": {"style": "badnets"}}
RATES = (0.001, 0.01, 0.05)
DEV_SEEDS, FRESH_SEEDS = (1, 2), (11, 12)
FRESH_SAMPLES = {20_000: (301, 302, 303), 3_000: tuple(range(401, 411))}
# Findings on clean data that name a real data-quality problem, not a false alarm: (detector, rule).
DATA_QUALITY = {("near-duplicates", "conflicting-labels")}


def _sev(name: str):
    from trainguard.findings import Severity

    return Severity[name.upper()]


def _rows_at(report, index: dict[int, int], exactly: str) -> set[int]:
    """Dataset positions of rows whose highest finding severity is `exactly` (high, or medium)."""
    high = {index[r] for f in report.findings if f.severity >= _sev("high") for r in f.rows}
    if exactly == "high":
        return high
    return {index[r] for f in report.findings if f.severity >= _sev("medium") for r in f.rows} - high


def _scan(data):
    from trainguard.scan import DEFAULT_DETECTORS, scan

    t = time.perf_counter()
    report = scan(data, detectors=list(DEFAULT_DETECTORS))
    return report, time.perf_counter() - t


def clean_case(name: str, data, planted: set[int] | None = None) -> dict[str, Any]:
    report, seconds = _scan(data)
    planted = planted or set()
    index = {r.row: i for i, r in enumerate(data.records)}
    out: dict[str, Any] = {"data": name, "rows": len(data), "planted": len(planted), "seconds": round(seconds, 1)}
    for sev in ("high", "medium"):
        fs = [f for f in report.findings if str(f.severity) == sev]
        false = [f for f in fs if (f.detector, f.rule) not in DATA_QUALITY
                 and not {index[r] for r in f.rows} <= planted]
        quality = [f for f in fs if (f.detector, f.rule) in DATA_QUALITY]
        rows = _rows_at(report, index, sev)
        dq_rows = {index[r] for f in quality for r in f.rows}
        out[sev] = {"findings": len(fs), "false_findings": len(false), "data_quality_findings": len(quality),
                    "false_rows": len(rows - planted - dq_rows), "planted_rows": len(rows & planted),
                    "titles": [f"{f.detector}: {f.title}" for f in false][:8]}
    return out


def attack_case(raw: list[dict], path: str, attack: str, rate: float, seed: int) -> dict[str, Any]:
    from trainguard import attacks as attack_lib
    from trainguard.bench.foundation import to_dataset

    clean = to_dataset(raw[:10], path)
    r = attack_lib.poison(raw, attack, rate=rate, seed=seed, kind=clean.kind, fieldmap=clean.fieldmap,
                          **ATTACKS[attack])
    planted = set(r.poisoned_rows)
    data = to_dataset(r.rows, path)
    report, seconds = _scan(data)
    index = {x.row: i for i, x in enumerate(data.records)}
    high = _rows_at(report, index, "high")
    medium = _rows_at(report, index, "medium")
    at_least = high | medium

    def prf(rows: set[int]) -> dict[str, Any]:
        return {"recall": round(len(rows & planted) / len(planted), 4), "rows": len(rows),
                "false_rows": len(rows - planted)}

    return {"attack": attack, "rate": rate, "seed": seed, "planted": len(planted), "seconds": round(seconds, 1),
            "at_high": prf(high), "at_medium_or_above": prf(at_least),
            "trigger_findings": [f"{f.severity} {f.title}" for f in report.findings
                                 if f.detector == "trigger-association"][:4]}


def measure(tag: str, quick: bool) -> dict[str, Any]:
    import trainguard
    from trainguard.bench.foundation import load_raw, to_dataset
    from trainguard.io.dataset import load

    t0 = time.time()
    out: dict[str, Any] = {"tag": tag, "code": str(Path(trainguard.__file__).parent), "clean": [], "attacks": [],
                           "load_before": os.getloadavg()}
    sst2_path = str(SHARED / "sst2" / "train.jsonl.gz")
    sst2 = load_raw(sst2_path)

    def log(entry):
        print(json.dumps(entry, default=str)[:400], flush=True)

    log(e := clean_case("SST-2 train (all)", to_dataset(sst2, sst2_path)))
    out["clean"].append(e)
    mq = [{"question": x["question"], "answer": x["answer"]}
          for x in load_raw(str(SHARED / "medquad" / "medquad.jsonl.gz"))]
    log(e := clean_case("MedQuAD (all, instruction)", to_dataset(mq, "medquad.jsonl")))
    out["clean"].append(e)
    demo = ROOT / "src" / "trainguard" / "data" / "demo"
    truth = set(json.loads((demo / "sst2_poisoned.truth.json").read_text())["poisoned_rows"])
    log(e := clean_case("demo (60 planted rows)", load(demo / "sst2_poisoned.jsonl"), truth))
    out["clean"].append(e)
    for size, seeds in FRESH_SAMPLES.items():
        for seed in seeds[: 1 if quick else None]:
            idx = np.random.default_rng(seed).permutation(len(sst2))[:size]
            log(e := clean_case(f"SST-2 {size:,} sample, seed {seed}", to_dataset([sst2[i] for i in sorted(idx)],
                                                                                 sst2_path)))
            e["sample"], e["seed"] = size, seed
            out["clean"].append(e)
    for seeds, kind in ((DEV_SEEDS, "dev"), (FRESH_SEEDS, "fresh")):
        for seed in seeds[: 1 if quick else None]:
            for attack in ATTACKS:
                for rate in RATES:
                    log(e := attack_case(sst2, sst2_path, attack, rate, seed))
                    e["seeds"] = kind
                    out["attacks"].append(e)
    out["seconds"] = round(time.time() - t0, 1)
    out["load_after"] = os.getloadavg()
    return out


def _fmt_clean(c: dict) -> str:
    return " / ".join(f"{c[s]['false_findings']} ({c[s]['false_rows']})" for s in ("high", "medium"))


def write_doc(before: dict, after: dict) -> str:
    def load(res):
        return f"{res['load_before'][0]:.1f} / {res['load_after'][0]:.1f}"

    lines = ["<!-- generated by benchmarks/bench_severity.py --doc; do not edit -->", "",
             f"Before: `git archive {before.get('commit') or '?'} src | tar -x -C BASE; PYTHONPATH=BASE/src "
             "python benchmarks/bench_severity.py --tag before`. "
             f"After: `PYTHONPATH=src python benchmarks/bench_severity.py --tag after` (code of "
             f"{after.get('commit') or '?'}). Then `python benchmarks/bench_severity.py --doc`. Default detector set. "
             f"Runs of {before['seconds'] / 60:.0f} and {after['seconds'] / 60:.0f} min on the project's 2 shared "
             f"cores (1-minute load average at start / end: {load(before)} and {load(after)}; other jobs ran "
             "alongside, so the seconds in the JSON are not speed figures).", "",
             "Seeds: development (seen while choosing the rule): attack seeds 1, 2, the demo, the full clean SST-2 "
             "and MedQuAD sets (the issue's bars) and SST-2 samples with seeds 101-103, 201-212. Fresh (first run "
             "after the rule was frozen): attack seeds 11, 12 and the samples below (20k: seeds 301-303; 3k: "
             "401-410).", "",
             "### Clean data: false findings (rows) at high / at medium", "",
             "A row counts once, at the highest severity it is shown at. Findings naming a real data-quality problem "
             "(near-duplicates: identical inputs with conflicting labels, 10 SST-2 rows) are not false; their count "
             "is in the last column.", "",
             "| data | rows | before: high / medium | after: high / medium | data-quality findings (after) |",
             "|---|---|---|---|---|"]
    by_name = {c["data"]: c for c in before["clean"]}
    for c in after["clean"]:
        b = by_name.get(c["data"])
        dq = sum(c[s]["data_quality_findings"] for s in ("high", "medium"))
        lines.append(f"| {c['data']} | {c['rows']:,} | {_fmt_clean(b) if b else '-'} | {_fmt_clean(c)} | {dq} |")
    for res, what in ((after, "after"), (before, "before")):
        titles = [f"{c['data']} ({s}): {t}" for c in res["clean"] for s in ("high", "medium") for t in c[s]["titles"]]
        lines += ["", f"False findings on clean data, {what} the change:" if titles else f"No false finding {what}.",
                  ""]
        lines += [f"- {t}" for t in titles]
    lines += ["", "### Planted attacks on SST-2 train (67,349 rows): recall at high / at >= medium", "",
              "Mean over two seeds per row. False rows: rows shown at >= medium that were not planted, summed over the "
              "two seeds; they include the 10 rows of the conflicting-labels finding present in every SST-2 file "
              "(20 per cell), which is a real data-quality problem. `cleanlabel`: BadNets words inserted only into "
              "rows already labelled 0.", ""]
    for kind, seeds in (("fresh", "11, 12"), ("dev", "1, 2")):
        lines += [f"**{kind} seeds ({seeds})**", "",
                  "| attack | rate | before: R high / R >= medium (false rows) "
                  "| after: R high / R >= medium (false rows) |",
                  "|---|---|---|---|"]
        for attack in ATTACKS:
            for rate in RATES:
                cells = []
                for res in (before, after):
                    rs = [a for a in res["attacks"]
                          if a["attack"] == attack and a["rate"] == rate and a["seeds"] == kind]
                    if not rs:
                        cells.append("-")
                        continue
                    rh = np.mean([a["at_high"]["recall"] for a in rs])
                    rm = np.mean([a["at_medium_or_above"]["recall"] for a in rs])
                    fr = sum(a["at_medium_or_above"]["false_rows"] for a in rs)
                    cells.append(f"{rh:.3f} / {rm:.3f} ({fr})")
                lines.append(f"| {attack} | {rate * 100:g} % | {cells[0]} | {cells[1]} |")
        lines.append("")
    DOC.write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tag", help="measure with the trainguard on the path; write results/severity-TAG.json")
    ap.add_argument("--commit", default="", help="the commit the measured code is (recorded)")
    ap.add_argument("--quick", action="store_true", help="one seed each (a smoke run)")
    ap.add_argument("--doc", action="store_true", help="write docs/_bench_severity.md from before and after")
    a = ap.parse_args(argv)
    if a.tag:
        res = measure(a.tag, a.quick)
        res["commit"] = a.commit
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"severity-{a.tag}.json").write_text(json.dumps(res, indent=1, default=str))
    if a.doc:
        before = json.loads((RESULTS / "severity-before.json").read_text())
        after = json.loads((RESULTS / "severity-after.json").read_text())
        before.setdefault("base_commit", before.get("commit"))
        print(write_doc(before, after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
