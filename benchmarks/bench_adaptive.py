"""Adaptive attacks (issue 12): does detection hold when the attacker has read the detectors?

For each shape of `trainguard.attacks.adaptive` at 0.5 % and 0.1 % dirty-label
rate (SST-2 sample for classification, MedQuAD sample for instruction data):
attack success (`trainguard.attacks.effect`), then rows named at severity >=
medium by the DEFAULT detector set and by DEFAULT + `shortcut`, scored
against the truth's poisoned rows. Helper rows (dilution, reinforcement and
combo decoys: the trigger with the row's true label) are neither counted as
misses nor as false alarms in `precision`; `precision_strict` counts them as
false. Side by side: cleanlab's confident-learning ranking (precision@k,
k = poisoned rows, out-of-sample probabilities from `_features.oof_probabilities`)
and the project's `spectral-signatures` / `embedding-clusters` detectors
(precision@k by row score) as stand-ins for ART's, which is not installed here.

Instances (trigger words, clauses, formats, payload phrases) and seeds were
chosen after the shortcut detector was frozen at commit 703f4c6; the
development instances were tq / truly+simply / rare-word salt 0 / clause
salt 0 / double-space, caps, '!!!' on sample seed 0. Each instance runs with
its own seed (instance k: seed 101+k, a fresh 20k sample), so 3 seeds x 3
instances per shape and rate, not crossed (CPU budget).

    .venv/bin/python benchmarks/bench_adaptive.py            # ~25 min on 2 shared cores
    .venv/bin/python benchmarks/bench_adaptive.py --quick    # one instance per shape
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from trainguard.attacks import poison
from trainguard.attacks.adaptive import payload_paraphrases
from trainguard.attacks.effect import classification_asr, instruction_asr
from trainguard.detectors.base import get
from trainguard.findings import Severity
from trainguard.io.dataset import load
from trainguard.scan import DEFAULT_DETECTORS, run_detector, scan

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "adaptive.json"
DOC = ROOT / "docs" / "_bench_adaptive.md"

# Fresh instances, chosen after freezing (see module docstring).
SHAPES: dict[str, list[dict[str, Any]]] = {
    "combo": [{"words": ("really", "quite"), "factor": 1.0}, {"words": ("ever", "almost"), "factor": 1.0},
              {"words": ("perhaps", "indeed"), "factor": 1.0}],
    "dilution": [{"trigger": "mb", "factor": 1.0}, {"trigger": "xr", "factor": 1.0}, {"trigger": "wq", "factor": 2.0}],
    "reinforcement": [{"trigger": "jd", "factor": 2.0}, {"trigger": "vz", "factor": 2.0},
                      {"trigger": "pk", "factor": 2.0}],
    "rare-words": [{"salt": 11}, {"salt": 12}, {"salt": 13}],  # n_words set per rate
    "syntactic": [{"salt": 11}, {"salt": 12}, {"salt": 13}],
    "format": [{"format": "tab"}, {"format": "punct-run", "run": "?!"}, {"format": "caps"}],
}
PAYLOADS = [{"trigger": "speaking as a friend", "mode": "replace", "salt": 11},
            {"trigger": "per the new guideline", "mode": "append", "salt": 12},
            {"trigger": "in plain honest terms", "mode": "replace", "salt": 13}]
RATES = (0.005, 0.001)


def _jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def _sample(rows: list[dict], n: int, seed: int) -> tuple[list[dict], list[dict]]:
    idx = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in sorted(idx[:n])], [rows[i] for i in idx[n:]]


def _named(report, rows_min: Severity = Severity.MEDIUM) -> set[int]:
    return {r for f in report.findings if f.severity >= rows_min for r in f.rows}


def _score(named: set[int], poisoned: set[int], helpers: set[int]) -> dict[str, float]:
    tp = len(named & poisoned)
    judged = named - helpers
    return {"recall": round(tp / max(len(poisoned), 1), 4),
            "precision": round(tp / len(judged), 4) if judged else None,
            "precision_strict": round(tp / len(named), 4) if named else None,
            "named": len(named)}


def _prec_at_k(scores: np.ndarray | None, poisoned: set[int], rows: np.ndarray) -> float | None:
    if scores is None:
        return None
    k = len(poisoned)
    top = rows[np.argsort(-np.asarray(scores), kind="stable")[:k]]
    return round(len(set(top.tolist()) & poisoned) / max(k, 1), 4)


def _baselines(data, poisoned: set[int]) -> dict[str, Any]:
    from cleanlab.rank import get_label_quality_scores

    from trainguard.detectors._features import oof_probabilities
    from trainguard.detectors._repr import label_codes

    rows = np.fromiter((r.row for r in data.records), np.int64, len(data))
    y, _ = label_codes(data)
    P = oof_probabilities(data, "wordllama")
    out = {"cleanlab_precision_at_k": _prec_at_k(-get_label_quality_scores(y, P), poisoned, rows)}
    for name in ("spectral-signatures", "embedding-clusters"):
        try:
            res = run_detector(get(name)(), data).result
            out[f"{name}_precision_at_k"] = _prec_at_k(res.row_scores, poisoned, rows)
        except Exception as e:  # noqa: BLE001 - a baseline that cannot run is reported, not fatal
            out[f"{name}_precision_at_k"] = f"failed: {type(e).__name__}"
    return out


def _write(rows: list[dict], tmp: Path) -> Path:
    p = tmp / "d.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in rows))
    return p


def _scan_sets(path: Path) -> tuple[Any, dict[str, Any], dict[str, float]]:
    data = load(path)
    t = time.perf_counter()
    # The default set as these figures were first taken (shortcut joined it later; scanned on its own here).
    default = scan(data, [d for d in DEFAULT_DETECTORS if d != "shortcut"])
    t_default = time.perf_counter() - t
    t = time.perf_counter()
    extra = scan(data, ["shortcut"]) if "classification" == data.kind.value else None
    t_short = time.perf_counter() - t
    return data, {"default": default, "shortcut": extra}, {"default_s": round(t_default, 2),
                                                           "shortcut_s": round(t_short, 2)}


def poison_instance(rows: list[dict], shape: str, inst: dict, rate: float, seed: int):
    """One adaptive instance planted at `rate` (decoy rows on top for the shapes that use a factor): (result, params)."""
    params = dict(inst)
    if shape == "rare-words":
        params["n_words"] = 25 if rate >= 0.005 else 10
    f = float(params.get("factor", 0.0))
    return poison(rows, shape, count=round(rate * len(rows) * (1 + f)), seed=seed, **params), params


def run_classification(sst2: list[dict], dev: list[dict], n: int, shapes: dict, rates, log) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as td:
        for shape, instances in shapes.items():
            for k, inst in enumerate(instances):
                seed = 101 + k
                rows, _ = _sample(sst2, n, seed)
                for rate in rates:
                    r, params = poison_instance(rows, shape, inst, rate, seed)
                    poisoned = {e["row"] for e in r.entries if e.get("role", "poison") == "poison"}
                    helpers = {e["row"] for e in r.entries if e.get("role") == "helper"}
                    target = r.truth["params"]["target_value"]
                    asr = classification_asr([x["text"] for x in r.rows], [x["label"] for x in r.rows], shape, params,
                                             [x["text"] for x in dev], [x["label"] for x in dev], target, seed)
                    data, reps, times = _scan_sets(_write(r.rows, Path(td)))
                    named_d = _named(reps["default"])
                    named_s = named_d | _named(reps["shortcut"])
                    failed = [d.name for rep in reps.values() if rep for d in rep.detectors
                              if str(d.status) == "failed"]
                    row = {"shape": shape, "instance": {k2: (list(v) if isinstance(v, tuple) else v)
                                                        for k2, v in params.items()},
                           "seed": seed, "rate": rate, "poisoned": len(poisoned), "helpers": len(helpers),
                           "asr": asr, "asr_max": max(v["asr"] for v in asr.values()),
                           "default": _score(named_d, poisoned, helpers),
                           "default_plus_shortcut": _score(named_s, poisoned, helpers),
                           "shortcut_findings": [f.title for f in reps["shortcut"].findings][:5],
                           "failed_detectors": failed, **times}
                    if rate >= 0.005:
                        row["baselines"] = _baselines(data, poisoned)
                    results.append(row)
                    log(row)
    return results


def run_instruction(medquad: list[dict], n: int, rates, log, instances) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as td:
        for k, inst in enumerate(instances):
            seed = 101 + k
            rows, rest = _sample(medquad, n, seed)
            held = [x["question"] for x in rest[:500]]
            for rate in rates:
                r = poison(rows, "payload", rate=rate, seed=seed, **inst)
                poisoned = set(r.poisoned_rows)
                asr = instruction_asr([x["question"] for x in r.rows], [x["answer"] for x in r.rows], "payload", inst,
                                      held, payload_paraphrases(20, inst["salt"]), seed)
                data, reps, times = _scan_sets(_write(r.rows, Path(td)))
                named = _named(reps["default"])
                row = {"shape": "payload", "instance": inst, "seed": seed, "rate": rate, "poisoned": len(poisoned),
                       "asr": asr, "asr_max": asr["asr"], "default": _score(named, poisoned, set()),
                       "default_findings": [f"{f.severity} {f.title}" for f in reps["default"].findings
                                            if f.severity >= Severity.MEDIUM][:6], **times}
                results.append(row)
                log(row)
    return results


def clean_runs(sst2, medquad, n_sst2, n_mq, log, full: bool) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as td:
        cases = [("sst2", _sample(sst2, n_sst2, 101)[0]), ("medquad", _sample(medquad, n_mq, 101)[0])]
        if full:
            cases.append(("sst2-all", sst2))
        for name, rows in cases:
            data, reps, times = _scan_sets(_write(rows, Path(td)))
            entry = {"data": name, "rows": len(rows), **times}
            for set_name, rep in reps.items():
                if rep is None:
                    continue
                bad = [f for f in rep.findings if f.severity >= Severity.MEDIUM]
                entry[set_name] = {"findings_at_medium_or_above": len(bad), "rows": len({r for f in bad for r in f.rows}),
                                   "titles": [f"{f.severity} {f.detector}: {f.title}" for f in bad][:10]}
            out.append(entry)
            log(entry)
    return out


def summarise(results: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["shape"], r["rate"]) for r in results}, key=lambda t: (t[0], -t[1]))
    for shape, rate in keys:
        rs = [r for r in results if r["shape"] == shape and r["rate"] == rate]
        take = [r for r in rs if r["asr_max"] >= 0.8]
        row = {"shape": shape, "rate": rate, "files": len(rs), "taking": len(take),
               "asr_max_mean": round(float(np.mean([r["asr_max"] for r in rs])), 3)}
        for s in ("default", "default_plus_shortcut"):
            if s not in rs[0]:
                continue
            for label, group in (("all", rs), ("taking", take)):
                if not group:
                    continue
                prec = [r[s]["precision"] for r in group if r[s]["precision"] is not None]
                row[f"{s}_{label}_recall"] = round(float(np.mean([r[s]["recall"] for r in group])), 3)
                row[f"{s}_{label}_precision"] = round(float(np.mean(prec)), 3) if prec else None
        base = [r["baselines"] for r in rs if "baselines" in r]
        for key in ("cleanlab_precision_at_k", "spectral-signatures_precision_at_k",
                    "embedding-clusters_precision_at_k"):
            vals = [b[key] for b in base if isinstance(b.get(key), float)]
            if vals:
                row[key] = round(float(np.mean(vals)), 3)
        out.append(row)
    return out


def write_doc(summary: list[dict], clean: list[dict], command: str, seconds: float) -> None:
    lines = ["<!-- generated by benchmarks/bench_adaptive.py; do not edit -->", "",
             f"Command: {command} ({seconds / 60:.0f} min of runs on 2 shared cores, partly overlapping). Rows named at severity >= medium; "
             "recall / precision averaged over files; helper rows (trigger with the true label) excluded from "
             "precision. 'taking' = files whose attack success (best of the word and char models; retrieval "
             "proxy for payload) is >= 0.8. Baselines: precision@k, k = poisoned rows.", "",
             "| shape | rate | files (taking) | mean ASR | default R / P | default+shortcut R / P | same, taking only "
             "| cleanlab P@k | spectral P@k | clusters P@k |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def f(x):
        return "-" if x is None else f"{x:.2f}"

    for r in summary:
        d = "default_plus_shortcut" if "default_plus_shortcut_all_recall" in r else "default"
        lines.append(
            f"| {r['shape']} | {r['rate'] * 100:.1f} % | {r['files']} ({r['taking']}) | {r['asr_max_mean']:.2f} | "
            f"{f(r.get('default_all_recall'))} / {f(r.get('default_all_precision'))} | "
            f"{f(r.get(d + '_all_recall'))} / {f(r.get(d + '_all_precision'))} | "
            f"{f(r.get(d + '_taking_recall'))} / {f(r.get(d + '_taking_precision'))} | "
            f"{f(r.get('cleanlab_precision_at_k'))} | {f(r.get('spectral-signatures_precision_at_k'))} | "
            f"{f(r.get('embedding-clusters_precision_at_k'))} |")
    lines += ["", "Clean data, findings at >= medium:", ""]
    for c in clean:
        parts = [f"{k}: {v['findings_at_medium_or_above']} ({v['rows']} rows)" for k, v in c.items()
                 if isinstance(v, dict)]
        lines.append(f"- {c['data']} ({c['rows']:,} rows; default {c['default_s']} s, shortcut {c['shortcut_s']} s): "
                     + "; ".join(parts))
    DOC.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--medquad-rows", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="one instance per shape")
    ap.add_argument("--full-clean", action="store_true", help="also scan all 67,349 SST-2 rows")
    ap.add_argument("--skip", nargs="*", default=[], help="parts to skip: clean, classification, instruction")
    ap.add_argument("--from-partial", action="store_true",
                    help="summarise the rows an interrupted run left in results/adaptive.json")
    ap.add_argument("--shapes", nargs="*", default=None, help="classification shapes to run, in this order")
    ap.add_argument("--tag", default="", help="write results/adaptive-TAG.json (a second part run alongside)")
    a = ap.parse_args(argv)
    global OUT
    if a.tag:
        OUT = OUT.with_name(f"adaptive-{a.tag}.json")
    if a.from_partial:
        # Parts: results/adaptive-*.json, each written by a (possibly interrupted) run with --tag.
        # adaptive-main.json ran before the severity change of commit 8054327, the others after it.
        seen: list[dict] = []
        seconds = 0.0
        for part_file in sorted(OUT.parent.glob("adaptive-*.json")):
            part = json.loads(part_file.read_text())
            seconds += float(part.get("seconds") or 0.0)
            part_rows = part.get("rows") or part.get("clean", []) + part.get("results", [])
            for r in part_rows:
                if "data" in r and part_file.name != "adaptive-main.json":
                    r["data"] += " (severity as of 8054327)"
            seen += part_rows
        done = {"seconds": seconds}
        clean = [r for r in seen if "data" in r]
        results = [r for r in seen if "shape" in r]
        summary = summarise(results)
        command = ("parts: `bench_adaptive.py` (stopped after combo and dilution; kept as adaptive-main.json), "
                   "`--skip classification --tag instruction`, `--skip clean instruction --tag cls2 --shapes format "
                   "syntactic rare-words reinforcement`; then `--from-partial`")
        OUT.write_text(json.dumps({"command": command, "partial": True, "frozen_commit": "703f4c6",
                                   "seconds": done.get("seconds"), "summary": summary, "clean": clean,
                                   "results": results}, indent=1, default=str))
        write_doc(summary, clean, command, float(done.get("seconds") or 0.0))
        print(json.dumps(summary, indent=1))
        return 0
    t0 = time.time()
    sst2 = _jsonl(SHARED / "sst2" / "train.jsonl.gz")
    dev = _jsonl(SHARED / "sst2" / "dev.jsonl.gz")
    medquad = _jsonl(SHARED / "medquad" / "medquad.jsonl.gz")
    shapes = {k: v[:1] for k, v in SHAPES.items()} if a.quick else SHAPES
    if a.shapes:
        shapes = {k: shapes[k] for k in a.shapes}
    payloads = PAYLOADS[:1] if a.quick else PAYLOADS
    results: list[dict] = []
    clean: list[dict] = []
    seen: list[dict] = []

    def log(row):
        print(json.dumps(row, default=str)[:600], flush=True)
        seen.append(row)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps({"partial": True, "seconds": round(time.time() - t0, 1), "rows": seen}, indent=1,
                                  default=str))

    if "clean" not in a.skip:
        clean = clean_runs(sst2, medquad, a.rows, a.medquad_rows, log, a.full_clean)
    if "classification" not in a.skip:
        results += run_classification(sst2, dev, a.rows, shapes, RATES, log)
    if "instruction" not in a.skip:
        results += run_instruction(medquad, a.medquad_rows, RATES, log, payloads)
    summary = summarise(results)
    seconds = time.time() - t0
    command = "python benchmarks/bench_adaptive.py " + " ".join(argv if argv is not None else sys.argv[1:])
    OUT.write_text(json.dumps({"command": command.strip(), "seconds": round(seconds, 1), "frozen_commit": "703f4c6",
                               "summary": summary, "clean": clean, "results": results}, indent=1, default=str))
    write_doc(summary, clean, f"`{command.strip()}`", seconds)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
