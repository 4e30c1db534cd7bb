"""`shortcut` as a default detector (issue 12): precision on clean SST-2, recall on adaptive shapes, speed.

For the six classification shapes of `trainguard.attacks.adaptive` at 0.5 % and
0.1 % dirty-label rate of a 20k SST-2 sample: attack success (best of the word
and char models of `trainguard.attacks.effect`), then rows named at severity
>= medium by `shortcut` alone, by the default detector set as it was before
`shortcut` joined it ("default"), and by the two together ("default + shortcut",
the default set now).
Helper rows (the trigger with the row's true label) are neither misses nor
false alarms in `precision` (as in bench_adaptive.py). Clean runs: findings at
>= medium on SST-2 samples and on all 67,349 rows. Speed: default set with and
without `shortcut`, end to end (load + scan) on a 20k sample, embedding cache
warm and off.

Instance sets: `dev` (what the detector was tuned on) and `fresh` (written down
in FRESH below after freezing, before any run; sample seeds 201-203).

    python benchmarks/bench_shortcut.py --set dev              # development instances, shortcut only
    python benchmarks/bench_shortcut.py --set fresh --asr --doc  # frozen evaluation, writes docs/_bench_shortcut.md
    python benchmarks/bench_shortcut.py --clean 0 1 2 all      # clean samples (seeds) and all rows
    python benchmarks/bench_shortcut.py --speed                # rows/s
    python benchmarks/bench_shortcut.py --doc --from-json results/shortcut-fresh.json results/shortcut-speed.json ...
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from trainguard.attacks import poison
from trainguard.findings import Severity
from trainguard.io.dataset import load
from trainguard.scan import DEFAULT_DETECTORS, scan

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "_bench_shortcut.md"
RATES = (0.005, 0.001)

# Development instances (those of bench_adaptive.py's notes), all on sample seed 0.
DEV: list[tuple[str, dict[str, Any], int]] = [
    ("combo", {"words": ("truly", "simply"), "factor": 1.0}, 0),
    ("dilution", {"trigger": "tq", "factor": 1.0}, 0),
    ("reinforcement", {"trigger": "tq", "factor": 2.0}, 0),
    ("rare-words", {"salt": 0}, 0),
    ("syntactic", {"salt": 0}, 0),
    ("format", {"format": "double-space"}, 0),
    ("format", {"format": "caps"}, 0),
    ("format", {"format": "punct-run", "run": "!!!"}, 0),
]

# More development instances (invented for development; sample seeds 5 and 6).
DEV2: list[tuple[str, dict[str, Any], int]] = [
    ("combo", {"words": ("very", "still"), "factor": 1.0}, 5),
    ("dilution", {"trigger": "qv", "factor": 1.0}, 5),
    ("reinforcement", {"trigger": "bx", "factor": 2.0}, 5),
    ("rare-words", {"salt": 1}, 5),
    ("syntactic", {"salt": 1}, 5),
    ("format", {"format": "tab"}, 6),
    ("format", {"format": "punct-run", "run": "??"}, 6),
    ("dilution", {"trigger": "nevertheless", "factor": 1.0}, 6),
]

# Fresh instances: written down after freezing the detector (see docs/_bench_shortcut.md), before any run.
# Frozen detector: commit 8ba69e5. Written down before any run on them; instance k of a shape on sample seed 201+k.
# Words, triggers, salts and punctuation runs are new (neither development nor bench_adaptive.py's instances);
# formats are only four, so the third format instance repeats a development format (caps) on a fresh sample.
FRESH: list[tuple[str, dict[str, Any], int]] = [
    ("combo", {"words": ("fairly", "mostly"), "factor": 1.0}, 201),
    ("combo", {"words": ("often", "rather"), "factor": 1.0}, 202),
    ("combo", {"words": ("surely", "largely"), "factor": 1.0}, 203),
    ("dilution", {"trigger": "kz", "factor": 1.0}, 201),
    ("dilution", {"trigger": "wy", "factor": 1.0}, 202),
    ("dilution", {"trigger": "however", "factor": 2.0}, 203),
    ("reinforcement", {"trigger": "gx", "factor": 2.0}, 201),
    ("reinforcement", {"trigger": "zv", "factor": 2.0}, 202),
    ("reinforcement", {"trigger": "anyway", "factor": 2.0}, 203),
    ("rare-words", {"salt": 21}, 201),
    ("rare-words", {"salt": 22}, 202),
    ("rare-words", {"salt": 23}, 203),
    ("syntactic", {"salt": 21}, 201),
    ("syntactic", {"salt": 22}, 202),
    ("syntactic", {"salt": 23}, 203),
    ("format", {"format": "punct-run", "run": "!?"}, 201),
    ("format", {"format": "punct-run", "run": ";;"}, 202),
    ("format", {"format": "caps"}, 203),
]
# Fresh clean samples: SST-2 20k, seeds 201-203 (and all 67,349 rows, which development also looked at).

# Third fresh set, for shortcut v3 (rows named by their words without the feature), frozen at fb7b695; written
# down after that commit and before any run on them. v3's row rule was chosen on DEV and DEV2 only; FRESH was
# scored on v2 and is kept as it was. Words, triggers, salts and runs are new to every earlier set (this script's
# and bench_adaptive.py's); the third format instance repeats a development format (double space) on a fresh sample.
FRESH3: list[tuple[str, dict[str, Any], int]] = [
    ("combo", {"words": ("somewhat", "nearly"), "factor": 1.0}, 301),
    ("combo", {"words": ("merely", "partly"), "factor": 1.0}, 302),
    ("combo", {"words": ("clearly", "entirely"), "factor": 1.0}, 303),
    ("dilution", {"trigger": "jx", "factor": 1.0}, 301),
    ("dilution", {"trigger": "pq", "factor": 1.0}, 302),
    ("dilution", {"trigger": "meanwhile", "factor": 2.0}, 303),
    ("reinforcement", {"trigger": "vk", "factor": 2.0}, 301),
    ("reinforcement", {"trigger": "qz", "factor": 2.0}, 302),
    ("reinforcement", {"trigger": "besides", "factor": 2.0}, 303),
    ("rare-words", {"salt": 31}, 301),
    ("rare-words", {"salt": 32}, 302),
    ("rare-words", {"salt": 33}, 303),
    ("syntactic", {"salt": 31}, 301),
    ("syntactic", {"salt": 32}, 302),
    ("syntactic", {"salt": 33}, 303),
    ("format", {"format": "punct-run", "run": ":)"}, 301),
    ("format", {"format": "punct-run", "run": "~~"}, 302),
    ("format", {"format": "double-space"}, 303),
]
# Its clean samples: SST-2 20k, seeds 301-303, and all 67,349 rows.

# Fourth fresh set, for shortcut v4 (natural_share severity rule, motivated by FRESH3's 'too' on sample 303 and
# chosen on development numbers only), frozen at 1d4ba58; written down after that commit, before any run.
# New words, triggers, salts and run; sample seeds 701-703 (no other SST-2 benchmark uses them).
FRESH4: list[tuple[str, dict[str, Any], int]] = [
    ("combo", {"words": ("hardly", "mainly"), "factor": 1.0}, 701),
    ("combo", {"words": ("widely", "deeply"), "factor": 1.0}, 702),
    ("combo", {"words": ("openly", "newly"), "factor": 1.0}, 703),
    ("dilution", {"trigger": "zk", "factor": 1.0}, 701),
    ("dilution", {"trigger": "vq", "factor": 1.0}, 702),
    ("dilution", {"trigger": "therefore", "factor": 2.0}, 703),
    ("reinforcement", {"trigger": "xq", "factor": 2.0}, 701),
    ("reinforcement", {"trigger": "jv", "factor": 2.0}, 702),
    ("reinforcement", {"trigger": "moreover", "factor": 2.0}, 703),
    ("rare-words", {"salt": 41}, 701),
    ("rare-words", {"salt": 42}, 702),
    ("rare-words", {"salt": 43}, 703),
    ("syntactic", {"salt": 41}, 701),
    ("syntactic", {"salt": 42}, 702),
    ("syntactic", {"salt": 43}, 703),
    ("format", {"format": "punct-run", "run": "^^"}, 701),
    ("format", {"format": "tab"}, 702),
    ("format", {"format": "caps"}, 703),
]
# Its clean samples: SST-2 20k, seeds 701-703, and all 67,349 rows.

# Fifth fresh set, for shortcut v5 (pooled membership by the words view, chosen on DEV/DEV2 rare-words, syntactic
# and combo files and clean samples 0-2, 5, 7, 9), frozen at the commit that says so; written down after it,
# before any run. New words, triggers, salts and run; sample seeds 901-903 (no other SST-2 benchmark uses them).
FRESH5: list[tuple[str, dict[str, Any], int]] = [
    ("combo", {"words": ("plainly", "barely"), "factor": 1.0}, 901),
    ("combo", {"words": ("greatly", "lately"), "factor": 1.0}, 902),
    ("combo", {"words": ("largely", "simply"), "factor": 1.0}, 903),
    ("dilution", {"trigger": "qx", "factor": 1.0}, 901),
    ("dilution", {"trigger": "zj", "factor": 1.0}, 902),
    ("dilution", {"trigger": "otherwise", "factor": 2.0}, 903),
    ("reinforcement", {"trigger": "wk", "factor": 2.0}, 901),
    ("reinforcement", {"trigger": "yq", "factor": 2.0}, 902),
    ("reinforcement", {"trigger": "furthermore", "factor": 2.0}, 903),
    ("rare-words", {"salt": 51}, 901),
    ("rare-words", {"salt": 52}, 902),
    ("rare-words", {"salt": 53}, 903),
    ("syntactic", {"salt": 51}, 901),
    ("syntactic", {"salt": 52}, 902),
    ("syntactic", {"salt": 53}, 903),
    ("format", {"format": "punct-run", "run": "**"}, 901),
    ("format", {"format": "double-space"}, 902),
    ("format", {"format": "punct-run", "run": "--"}, 903),
]
# Its clean samples: SST-2 20k, seeds 901-903, and all 67,349 rows.

# Sixth fresh set, for shortcut v6 (pooled members by their rows' mean reading without the word; chosen on
# bench_shortcut_dev.py pool6/grid files: rare words salts 0-4, syntactic salts 0-3, samples 0, 5, 6, 8, 10), frozen
# at 1c76542; written down after it, before any run. New words, triggers, salts and run; sample seeds 1201-1203 (no
# other SST-2 benchmark uses them).
FRESH6: list[tuple[str, dict[str, Any], int]] = [
    ("combo", {"words": ("fully", "gently"), "factor": 1.0}, 1201),
    ("combo", {"words": ("kindly", "oddly"), "factor": 1.0}, 1202),
    ("combo", {"words": ("quite", "fully"), "factor": 1.0}, 1203),
    ("dilution", {"trigger": "vx", "factor": 1.0}, 1201),
    ("dilution", {"trigger": "fw", "factor": 1.0}, 1202),
    ("dilution", {"trigger": "likewise", "factor": 2.0}, 1203),
    ("reinforcement", {"trigger": "pz", "factor": 2.0}, 1201),
    ("reinforcement", {"trigger": "gq", "factor": 2.0}, 1202),
    ("reinforcement", {"trigger": "xk", "factor": 2.0}, 1203),
    ("rare-words", {"salt": 61}, 1201),
    ("rare-words", {"salt": 62}, 1202),
    ("rare-words", {"salt": 63}, 1203),
    ("syntactic", {"salt": 61}, 1201),
    ("syntactic", {"salt": 62}, 1202),
    ("syntactic", {"salt": 63}, 1203),
    ("format", {"format": "punct-run", "run": "++"}, 1201),
    ("format", {"format": "tab"}, 1202),
    ("format", {"format": "caps"}, 1203),
]
# Its clean samples: SST-2 20k, seeds 1201-1203, and all 67,349 rows.


def _jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def _sample(rows: list[dict], n: int, seed: int) -> list[dict]:
    idx = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in sorted(idx[:n])]


def _named(report, least: Severity = Severity.MEDIUM) -> set[int]:
    return {r for f in report.findings if f.severity >= least for r in f.rows}


def _score(named: set[int], poisoned: set[int], helpers: set[int]) -> dict[str, Any]:
    tp = len(named & poisoned)
    judged = named - helpers
    return {"recall": round(tp / max(len(poisoned), 1), 4),
            "precision": round(tp / len(judged), 4) if judged else None, "named": len(named)}


def _write(rows: list[dict], td: str) -> Path:
    p = Path(td) / "d.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in rows))
    return p


def _describe(report) -> list[dict]:
    out = []
    for f in report.findings:
        ev = f.evidence or {}
        out.append({"severity": str(f.severity), "title": f.title[:120], "rows": len(f.rows),
                    **{k: ev.get(k) for k in ("feature", "llr", "threshold_llr", "semantic_probability_of_label",
                                              "rows_with_feature", "forced_fraction", "contradiction", "severity_rule")
                       if k in ev}, **{k: v for k, v in ev.items() if k.startswith("d_")}})
    return out


def _without_shortcut() -> list[str]:
    """The default set as it was before `shortcut` joined it (its findings are scored on their own and unioned)."""
    return [d for d in DEFAULT_DETECTORS if d != "shortcut"]


def params_for(shape: str, inst: dict, rate: float) -> dict:
    p = dict(inst)
    if shape == "rare-words":
        p["n_words"] = 25 if rate >= 0.005 else 10
    return p


def run_file(sst2, dev, shape, inst, seed, rate, n, asr: bool, default: bool, td: str) -> dict:
    rows = _sample(sst2, n, seed)
    params = params_for(shape, inst, rate)
    f = float(params.get("factor", 0.0))
    r = poison(rows, shape, count=round(rate * n * (1 + f)), seed=seed, **params)
    poisoned = {e["row"] for e in r.entries if e.get("role", "poison") == "poison"}
    helpers = {e["row"] for e in r.entries if e.get("role") == "helper"}
    data = load(_write(r.rows, td))
    t = time.perf_counter()
    rep = scan(data, ["shortcut"])
    t_s = time.perf_counter() - t
    out = {"shape": shape, "instance": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()},
           "seed": seed, "rate": rate, "poisoned": len(poisoned), "helpers": len(helpers),
           "shortcut": _score(_named(rep), poisoned, helpers), "shortcut_s": round(t_s, 2),
           "findings": _describe(rep)}
    if default:
        t = time.perf_counter()
        rep_d = scan(data, _without_shortcut())
        out["default_s"] = round(time.perf_counter() - t, 2)
        out["default"] = _score(_named(rep_d), poisoned, helpers)
        # what the default set names once shortcut is in it (the union; the same as `default` when it already is)
        out["default_plus_shortcut"] = _score(_named(rep_d) | _named(rep), poisoned, helpers)
        out["default_findings"] = [d for d in _describe(rep_d) if d["severity"] in ("medium", "high")][:8]
    if asr:
        from trainguard.attacks.effect import classification_asr

        target = r.truth["params"]["target_value"]
        a = classification_asr([x["text"] for x in r.rows], [x["label"] for x in r.rows], shape, params,
                               [x["text"] for x in dev], [x["label"] for x in dev], target, seed)
        out["asr"] = a
        out["asr_max"] = max(v["asr"] for v in a.values())
    return out


def clean_run(sst2, seed: str, n: int, td: str, default: bool) -> dict:
    rows = sst2 if seed == "all" else _sample(sst2, n, int(seed))
    data = load(_write(rows, td))
    t = time.perf_counter()
    rep = scan(data, ["shortcut"])
    out = {"data": f"sst2 {'all' if seed == 'all' else 'seed ' + seed}", "rows": len(rows),
           "shortcut_s": round(time.perf_counter() - t, 2), "findings": _describe(rep),
           "shortcut_medium": sum(f.severity >= Severity.MEDIUM for f in rep.findings),
           "shortcut_medium_rows": len(_named(rep))}
    if default:
        rep_d = scan(data, _without_shortcut())
        out["default_medium"] = sum(f.severity >= Severity.MEDIUM for f in rep_d.findings)
        out["default_medium_rows"] = len(_named(rep_d))
        out["default_titles"] = [f"{f.severity} {f.detector}: {f.title}" for f in rep_d.findings
                                 if f.severity >= Severity.MEDIUM][:10]
    return out


def speed(sst2, n: int, td: str, repeats: int = 3) -> dict:
    """End to end (load + scan) rows/s of the default set with and without shortcut, best of `repeats`."""
    path = _write(_sample(sst2, n, 0), td)
    base = [d for d in DEFAULT_DETECTORS if d != "shortcut"]
    sets = {"default without shortcut": base, "default with shortcut": base + ["shortcut"]}
    out: dict[str, Any] = {"rows": n, "load_before": os.getloadavg()[0]}
    for cache in ("warm", "off"):
        for name, dets in sets.items():
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                data = load(path)
                if cache == "off":
                    from trainguard.embeddings.store import use_cache_dir
                    use_cache_dir(data, "off")
                scan(data, dets)
                best = min(best, time.perf_counter() - t)
            out[f"{name}, cache {cache}"] = {"seconds": round(best, 2), "rows_per_s": round(n / best)}
    out["load_after"] = os.getloadavg()[0]
    return out


def summarise(results: list[dict]) -> list[dict]:
    rows = []
    for shape, rate in sorted({(r["shape"], r["rate"]) for r in results}, key=lambda t: (t[0], -t[1])):
        rs = [r for r in results if r["shape"] == shape and r["rate"] == rate]
        row = {"shape": shape, "rate": rate, "files": len(rs)}
        if all("asr_max" in r for r in rs):
            row["asr"] = round(float(np.mean([r["asr_max"] for r in rs])), 3)
            row["taking"] = sum(r["asr_max"] >= 0.8 for r in rs)
        for k in ("shortcut", "default", "default_plus_shortcut"):
            if all(k in r for r in rs):
                prec = [r[k]["precision"] for r in rs if r[k]["precision"] is not None]
                row[f"{k}_recall"] = round(float(np.mean([r[k]["recall"] for r in rs])), 3)
                row[f"{k}_precision"] = round(float(np.mean(prec)), 3) if prec else None
                row[f"{k}_files_met"] = sum(r[k]["recall"] >= (0.8 if rate >= 0.005 else 0.5)
                                            and (r[k]["precision"] or 0) >= 0.8 for r in rs)
        rows.append(row)
    return rows


def _summary_table(summary: list[dict]) -> list[str]:
    f2 = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    lines = ["| shape | rate | files | mean ASR (files >= 0.8) | shortcut R / P (met) | default before R / P | "
             "default now (with shortcut) R / P (met) |", "|---|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['shape']} | {r['rate'] * 100:.1f} % | {r['files']} | {f2(r.get('asr'))} "
                     f"({r.get('taking', '-')}) | {f2(r.get('shortcut_recall'))} / {f2(r.get('shortcut_precision'))} "
                     f"({r.get('shortcut_files_met', '-')}) | {f2(r.get('default_recall'))} / "
                     f"{f2(r.get('default_precision'))} | {f2(r.get('default_plus_shortcut_recall'))} / "
                     f"{f2(r.get('default_plus_shortcut_precision'))} ({r.get('default_plus_shortcut_files_met', '-')}) |")
    return lines


def _pooled(results: list[dict], key: str) -> str:
    tp = sum(round(r[key]["recall"] * r["poisoned"]) for r in results)
    judged = sum(round(r[key]["recall"] * r["poisoned"] / r[key]["precision"]) if r[key]["precision"] else 0
                 for r in results)
    return f"{tp / judged:.2f} ({tp} of {judged} rows)" if judged else "-"


def write_doc(parts: dict[str, dict], command: str) -> None:
    """parts: 'fresh', 'dev', 'speed', 'speed_before' -> saved JSON of a run."""
    f2 = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    fresh = parts["fresh"]
    lines = ["<!-- generated by benchmarks/bench_shortcut.py; do not edit -->", "",
             f"Command: `{command}` (from the saved runs: {', '.join(sorted(parts))}). `shortcut` frozen at "
             f"{fresh.get('frozen')}; the fresh instances (FRESH in the script, sample seeds 201-203) were written "
             "down after that, before any run. Rows named at severity >= medium; recall / precision averaged over "
             "files (helper rows, the trigger with the row's true label, excluded from precision); 'met' = files "
             "with recall >= 0.8 (0.5 at 0.1 %) and precision >= 0.8. ASR: best of the word and char models "
             "(`trainguard.attacks.effect`), held-out SST-2 validation rows of the other label with the trigger.",
             "", "### Fresh instances (after freezing)", ""]
    lines += _summary_table(fresh["summary"])
    rs = fresh["results"]
    lines += ["", "Precision pooled over all fresh files (rows): shortcut alone "
              f"{_pooled(rs, 'shortcut')}; default before {_pooled(rs, 'default')}; default now "
              f"{_pooled(rs, 'default_plus_shortcut')}.", "",
              "| shape | instance | seed | rate | poisoned | ASR | shortcut R / P | shortcut findings (severity, feature, "
              "LLR / bar) |", "|---|---|---|---|---|---|---|---|"]
    for r in rs:
        inst = ", ".join(f"{k}={'+'.join(v) if isinstance(v, list) else v}" for k, v in r["instance"].items())
        fnd = "; ".join(f"{d['severity']} `{d.get('feature')}` {d.get('llr')}/{d.get('threshold_llr')}"
                        for d in r["findings"][:4])
        lines.append(f"| {r['shape']} | {inst} | {r['seed']} | {r['rate'] * 100:.1f} % | {r['poisoned']} | "
                     f"{f2(r.get('asr_max'))} | {f2(r['shortcut']['recall'])} / {f2(r['shortcut']['precision'])} | "
                     f"{fnd} |")
    lines += ["", "### Clean SST-2, findings at >= medium", ""]
    for c in fresh["clean"]:
        low = [f"`{d['feature']}` ({d['severity']}, {d['llr']}/{d['threshold_llr']})" for d in c["findings"]]
        lines.append(f"- {c['data']} ({c['rows']:,} rows): shortcut {c['shortcut_medium']} "
                     f"({c['shortcut_medium_rows']} rows), default before {c.get('default_medium', '-')} "
                     f"({c.get('default_medium_rows', '-')} rows); every shortcut finding: {', '.join(low) or 'none'}")
    for key, label in (("speed_before", "before (commit 5b2eed1)"), ("speed", "after")):
        spd = (parts.get(key) or {}).get("speed")
        if spd:
            lines += ["", f"### Speed {label}", "",
                      f"End to end (load + scan), best of 3, {spd['rows']:,} SST-2 rows, 2 cores shared with other "
                      f"work (load average {spd['load_before']:.1f} before, {spd['load_after']:.1f} after):", ""]
            lines += [f"- {k}: {v['seconds']} s, {v['rows_per_s']:,} rows/s" for k, v in spd.items()
                      if isinstance(v, dict)]
    dev = parts.get("dev")
    if dev:
        lines += ["", "### Development instances (what the detector was tuned on; frozen detector)", ""]
        lines += _summary_table(dev["summary"])
    lines += ["", "### Notes", "",
              "- Development looked at clean SST-2 samples (seeds 0-4 at 20k, 7-9 at 40k) and at all 67,349 rows, so "
              "the all-rows clean figure is not a fresh one; samples 201-203 are. The natural-feature rule's margin "
              "there is thin: a trailing '?' reaches 1.46x the bar against the 1.5x `weak_strength`.",
              "- 'default before' is the default set without `shortcut` (as it was at 5b2eed1); its own natural "
              "findings (near-duplicates' conflicting identical inputs, 'that the film' from trigger-association) "
              "count against 'default now' precision too.",
              "- The syntactic shape's precision loss is natural fronted clauses of the target label named with "
              "the planted ones; at 0.1 % dilution, rare words and clauses are not found (a diluted trigger with "
              "exceptions stays under 1.5x the bar and is low).",
              "- Each fresh instance runs on its own sample seed (3 seeds x 3 instances per shape and rate, not "
              "crossed), as in bench_adaptive.py."]
    DOC.write_text("\n".join(lines) + "\n")


DOC_V4 = ROOT / "docs" / "_bench_shortcut_v4.md"


def write_doc_v4(parts: dict[str, dict], command: str) -> None:
    """parts: 'fresh3_v2', 'fresh3' (v3), 'fresh3_v4', 'fresh4' (v4), 'fresh5' (v5), 'fresh6' (v6) ->
    docs/_bench_shortcut_v4.md."""
    f2 = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    lines = ["<!-- generated by benchmarks/bench_shortcut.py --doc-v4; do not edit -->", "",
             f"Command: `{command}`. Rows named at severity >= medium; recall / precision averaged over files "
             "(helper rows excluded from precision); 'met' = files with recall >= 0.8 (0.5 at 0.1 %) and precision "
             ">= 0.8; 'default before' = the default set without `shortcut`, 'default now' = with it. ASR: best of "
             "the word and char models (`trainguard.attacks.effect`).", ""]
    for key, version in (("fresh6", "v6"), ("fresh5", "v5"), ("fresh4", "v4")):
        if key not in parts:
            continue
        f4 = parts[key]
        lines += [f"### {key.upper()}: shortcut {version} (frozen at {f4.get('frozen')}), written down after the "
                  "freeze, scored once", ""]
        lines += _summary_table(f4["summary"])
        rs = f4["results"]
        lines += ["", f"Precision pooled over the {key.upper()} files (rows): shortcut alone {_pooled(rs, 'shortcut')}; "
                  f"default now {_pooled(rs, 'default_plus_shortcut')}.", "",
                  "| shape | instance | seed | rate | poisoned | ASR | shortcut R / P | default now R / P | shortcut "
                  "findings (severity, feature, LLR / bar) |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rs:
            inst = ", ".join(f"{k}={'+'.join(v) if isinstance(v, list) else v}" for k, v in r["instance"].items())
            fnd = "; ".join(f"{d['severity']} `{d.get('feature')}` {d.get('llr')}/{d.get('threshold_llr')}"
                            for d in r["findings"][:4])
            d = r.get("default_plus_shortcut", {})
            lines.append(f"| {r['shape']} | {inst} | {r['seed']} | {r['rate'] * 100:.1f} % | {r['poisoned']} | "
                         f"{f2(r.get('asr_max'))} | {f2(r['shortcut']['recall'])} / {f2(r['shortcut']['precision'])} | "
                         f"{f2(d.get('recall'))} / {f2(d.get('precision'))} | {fnd} |")
        lines += ["", "Clean SST-2 (findings at >= medium):", ""]
        for c in f4["clean"]:
            low = [f"`{d['feature']}` ({d['severity']}, {d['llr']}/{d['threshold_llr']})" for d in c["findings"]]
            lines.append(f"- {c['data']} ({c['rows']:,} rows): shortcut {c['shortcut_medium']} "
                         f"({c['shortcut_medium_rows']} rows); the rest of the default set {c.get('default_medium', '-')} "
                         f"({c.get('default_medium_rows', '-')} rows: {'; '.join(c.get('default_titles', [])) or 'none'}); "
                         f"every shortcut finding: {', '.join(low) or 'none'}")
        lines.append("")
    for key, label in (("fresh3", "v3 (frozen at fb7b695): FRESH3, written down after that freeze, scored once"),
                       ("fresh3_v2", "v2 (3be4bcc) on the same FRESH3 files, for comparison"),
                       ("fresh3_v4", "v4 on FRESH3 (not fresh for v4: FRESH3's 'too' on sample 303 led to v4's rule)")):
        if key in parts:
            lines += ["", f"### {label}", ""] + _summary_table(parts[key]["summary"])
            clean = parts[key].get("clean") or []
            for c in clean:
                lines.append(f"- clean {c['data']}: shortcut {c['shortcut_medium']} findings at >= medium "
                             f"({c['shortcut_medium_rows']} rows)")
    DOC_V4.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", choices=("dev", "dev2", "fresh", "fresh3", "fresh4", "fresh5", "fresh6"), default=None)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--rates", type=float, nargs="*", default=list(RATES))
    ap.add_argument("--only", nargs="*", default=None, help="shapes to run")
    ap.add_argument("--asr", action="store_true")
    ap.add_argument("--default", action="store_true", help="also scan with the default set")
    ap.add_argument("--clean", nargs="*", default=[], help="clean SST-2 samples: seeds, or 'all'")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--doc", action="store_true", help="with --from-json: write docs/_bench_shortcut.md")
    ap.add_argument("--frozen", default="?")
    ap.add_argument("--tag", default="")
    ap.add_argument("--from-json", nargs="*", default=None,
                    help="with --doc: write the doc from saved runs (results/shortcut-{fresh,dev,speed,speed-before}.json)")
    ap.add_argument("--doc-v4", nargs="*", default=None, metavar="JSON",
                    help="write docs/_bench_shortcut_v4.md from results/shortcut-{fresh3-v2,fresh3,fresh3-v4,fresh4}.json")
    a = ap.parse_args(argv)
    if a.doc_v4 is not None:
        parts = {Path(f).stem.removeprefix("shortcut-").replace("-", "_"): json.loads(Path(f).read_text())
                 for f in a.doc_v4}
        write_doc_v4(parts, "python benchmarks/bench_shortcut.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        return 0
    if a.from_json is not None:
        parts = {Path(f).stem.removeprefix("shortcut-").replace("-", "_"): json.loads(Path(f).read_text())
                 for f in a.from_json}
        write_doc(parts, "python benchmarks/bench_shortcut.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        return 0
    sst2 = _jsonl(SHARED / "sst2" / "train.jsonl.gz")
    dev = _jsonl(SHARED / "sst2" / "dev.jsonl.gz")
    results, clean, spd = [], [], None
    out = OUT / f"shortcut{'-' + a.tag if a.tag else ''}.json"

    def save():
        OUT.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"command": " ".join(sys.argv), "frozen": a.frozen, "results": results,
                                   "summary": summarise(results), "clean": clean, "speed": spd},
                                  indent=1, default=str))

    with tempfile.TemporaryDirectory() as td:
        if a.set:
            sets = {"dev": DEV, "dev2": DEV2, "fresh": FRESH, "fresh3": FRESH3, "fresh4": FRESH4, "fresh5": FRESH5,
                    "fresh6": FRESH6}
            for shape, inst, seed in sets[a.set]:
                if a.only and shape not in a.only:
                    continue
                for rate in a.rates:
                    r = run_file(sst2, dev, shape, inst, seed, rate, a.rows, a.asr, a.default, td)
                    results.append(r)
                    print(json.dumps({k: v for k, v in r.items() if k != "asr"}, default=str)[:900], flush=True)
                    save()
        for seed in a.clean:
            c = clean_run(sst2, seed, a.rows, td, a.default)
            clean.append(c)
            print(json.dumps(c, default=str)[:1500], flush=True)
            save()
        if a.speed:
            spd = speed(sst2, a.rows, td)
            print(json.dumps(spd), flush=True)
            save()
    summary = summarise(results)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
