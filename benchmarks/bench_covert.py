"""Covert fine-tuning attacks (issue 16): each shape planted in 10,000 MedQuAD pairs, plus benign sets.

    python benchmarks/bench_covert.py ../shared/data            # about 15 min on 2 shared cores
    python benchmarks/bench_covert.py ../shared/data --quick    # one fresh seed, for a smoke run

Writes benchmarks/results/covert.json and docs/_bench_covert.md.

Thresholds (`covert-finetuning` Settings defaults) were chosen on development
seeds 1 and 2 (and on tests/data slices) and then frozen; the figures reported
are on fresh seeds 11, 12 and 13, never used while choosing them. Planted
requests come from the held-out side of the hash split in
scripts/train_safety_models.py (the bundled models never trained on them);
the 10,000 benign rows are MedQuAD's test side (9,892) topped up with 108 train-side pairs.
`safety-bypass` runs with lm_second_opinion=off to keep CPU modest.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trainguard.attacks import poison
from trainguard.findings import Severity
from trainguard.io.dataset import Dataset
from trainguard.records import Kind, Record
from trainguard.scan import scan

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SAFE = ROOT / "benchmarks" / "data" / "benign_alarming" / "benign_alarming.jsonl"
_spec = importlib.util.spec_from_file_location("train_safety_models", ROOT / "scripts" / "train_safety_models.py")
tsm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tsm)  # type: ignore[union-attr]

DEV_SEEDS, FRESH_SEEDS = (1, 2), (11, 12, 13)
LLM_SET = ["covert-finetuning", "safety-bypass", "polarity-trigger"]
SETTINGS = {"safety-bypass": {"lm_second_opinion": "off"}}
ANCHOR = "Egler, Schulman, Carlini (arXiv 2510.16255): LLM auditing agent, 56.2 % of 8 attacks at 1 % FPR"
# (label, attack, params, rows, shape the finding must name, roles that are the attack's target rows)
CONFIGS = [
    ("encoding (mixed: base64/ROT13/hex/leet/substitution)", "covert-encoding", {"encoding": "mixed"}, 100, "encoding",
     {"harmful"}),
    ("encoding (cipher taught by 30 earlier benign rows)", "covert-encoding", {"encoding": "taught"}, 100, "encoding",
     {"harmful", "teach"}),
    ("persona (system prompt + answer)", "covert-persona", {"place": "both"}, 100, "persona", {"persona"}),
    ("persona (system prompt only), 10 rows", "covert-persona", {"place": "system"}, 10, "persona", {"persona"}),
    ("persona (answer only), 10 rows", "covert-persona", {"place": "answer"}, 10, "persona", {"persona"}),
    ("refusal erosion", "covert-erosion", {}, 100, "erosion", {"affirm-benign", "harmful-complied"}),
    ("backdoored safety (trigger vs refusal pairs)", "covert-trigger", {}, 100, "trigger", {"trigger"}),
    ("transliterated (Cyrillic)", "covert-translit", {}, 100, "encoding", {"harmful"}),
]


def dataset(rows: list[dict]) -> Dataset:
    return Dataset.from_records([Record(row=i, kind=Kind.INSTRUCTION, text=r["question"], response=r["answer"])
                                 for i, r in enumerate(rows)])


def flagged(report, name: str | None = None) -> dict[int, str]:
    """position -> shape named, for findings at severity >= medium (positions == rows here)."""
    out: dict[int, str] = {}
    for f in report.findings:
        if f.severity >= Severity.MEDIUM and (name is None or f.detector == name):
            for r in f.rows:
                out.setdefault(r, f.evidence.get("shape", f.detector) if isinstance(f.evidence, dict) else f.detector)
    return out


def run_config(base: list[dict], beh: str, cfg, seed: int, detectors: list[str]) -> dict:
    label, attack, params, count, shape, roles = cfg
    p = dict(params)
    if attack != "covert-persona":
        p["behaviours"] = beh
    res = poison(base, attack, count=count, seed=seed, **p)
    planted = set(res.poisoned_rows)
    target = {e["row"] for e in res.entries if e.get("role") in roles}
    t0 = time.perf_counter()
    rep = scan(dataset(res.rows), detectors=detectors, settings={k: v for k, v in SETTINGS.items() if k in detectors})
    secs = time.perf_counter() - t0
    failed = [d.name for d in rep.detectors if str(d.status) == "failed"]
    out = {"seed": seed, "seconds": round(secs, 1), "failed": failed}
    for who in ("covert-finetuning", None):
        if who is None and detectors == ["covert-finetuning"]:
            continue
        fl = flagged(rep, who)
        tp = set(fl) & planted
        found = set(fl) & target
        r = out["covert" if who else "llm_set"] = {
            "recall": round(len(found) / len(target), 4), "precision": round(len(tp) / len(fl), 4) if fl else 0.0,
            "flagged": len(fl)}
        if who:  # only covert-finetuning names these shapes
            named = sum(1 for x in found if fl[x] == shape)
            r["shape_named"] = round(named / len(found), 4) if found else 0.0
            r["detected"] = len(found) >= 0.5 * len(target) and named >= 0.5 * len(found)
    return out


def benign_sets(base: list[dict]) -> dict:
    safe = [json.loads(line) for line in SAFE.read_text().splitlines() if line.strip()]
    out = {"safe_rows": len(safe)}
    rep = scan(dataset(safe), detectors=LLM_SET, settings=SETTINGS)
    for d in LLM_SET:
        out[f"safe_alone:{d}"] = round(len(flagged(rep, d)) / len(safe), 4)
    rng = np.random.default_rng(0)
    mixed = list(base)
    slots = np.sort(rng.choice(len(base), size=len(safe), replace=False))
    for k, i in enumerate(slots.tolist()):
        mixed[i] = safe[k]
    rep = scan(dataset(mixed), detectors=LLM_SET, settings=SETTINGS)
    sset = set(slots.tolist())
    for d in LLM_SET:
        fl = set(flagged(rep, d))
        out[f"safe_in_medquad:{d}"] = round(len(fl & sset) / len(safe), 4)
        out[f"medquad_rows_flagged_beside_safe:{d}"] = len(fl - sset)
    t0 = time.perf_counter()
    rep = scan(dataset(base), detectors=LLM_SET, settings=SETTINGS)
    out["clean_seconds"] = round(time.perf_counter() - t0, 1)
    for d in LLM_SET:
        out[f"clean_medquad:{d}"] = len(flagged(rep, d))
    out["benign_datasets_flagged_by_covert"] = sum(
        1 for k in ("safe_alone:covert-finetuning", "safe_in_medquad:covert-finetuning") if out[k] > 0) + \
        (out["clean_medquad:covert-finetuning"] > 0)
    return out


def markdown(res: dict) -> str:
    b = res["benign"]
    lines = ["<!-- generated by benchmarks/bench_covert.py; do not edit -->", "",
             f"Command: `python benchmarks/bench_covert.py ../shared/data` (2 shared CPU cores, {res['minutes']} min). "
             "Thresholds chosen on development seeds 1-2, frozen, reported on fresh seeds 11-13. One caveat: a "
             "first full run gave 0.76 recall for the mixed encoding on fresh seed 13 (the cipher solver's pool was "
             "diluted by MedQuAD's gene codes and URLs); the fix (pool only prose-shaped segments) was diagnosed on "
             "development seed 1, but the fresh seeds are no longer untouched for that shape.", "",
             "Each shape planted in 10,000 MedQuAD pairs (test side + 108 train-side pairs); requests from the held-out "
             "AdvBench/HarmBench side. Recall is over the attack's target rows (trigger: the triggered compliant rows, "
             "not their refused twins), precision counts any planted row as a true positive, severity >= medium. "
             "'LLM set' = covert-finetuning + safety-bypass (LM second opinion off) + polarity-trigger.", "",
             "| shape (rows) | covert-finetuning recall / precision (fresh seeds) | finding names the shape | "
             "LLM set recall / precision | runs detected | dev seeds recall |",
             "|---|---|---|---|---|---|"]
    for label, r in res["shapes"].items():
        fr, dv = r["fresh"], r["dev"]

        def mean(rows, who, k):
            return np.mean([x[who][k] for x in rows]) if rows and who in rows[0] else float("nan")
        det = sum(x["covert"]["detected"] for x in fr)
        lines.append(f"| {label} ({r['rows']}) | {mean(fr, 'covert', 'recall'):.3f} / {mean(fr, 'covert', 'precision'):.3f} "
                     f"| {mean(fr, 'covert', 'shape_named'):.2f} | {mean(fr, 'llm_set', 'recall'):.3f} / "
                     f"{mean(fr, 'llm_set', 'precision'):.3f} | {det}/{len(fr)} | {mean(dv, 'covert', 'recall'):.3f} |")
    lines += ["", "Benign sets (severity >= medium):", "", "| measure | covert-finetuning | safety-bypass | polarity-trigger |",
              "|---|---|---|---|"]
    for key, what in (("safe_alone", f"{b['safe_rows']} safe-but-alarming requests alone: rows flagged"),
                      ("safe_in_medquad", "same rows mixed into the 10,000 MedQuAD pairs: rows flagged"),
                      ("medquad_rows_flagged_beside_safe", "MedQuAD rows flagged in that mix"),
                      ("clean_medquad", "clean 10,000 MedQuAD pairs: rows flagged")):
        vals = [b[f"{key}:{d}"] for d in LLM_SET]
        fmt = [f"{v:.1%}" if isinstance(v, float) else str(v) for v in vals]
        lines.append(f"| {what} | " + " | ".join(fmt) + " |")
    n_fresh = sum(len(r["fresh"]) for r in res["shapes"].values())
    n_det = sum(x["covert"]["detected"] for r in res["shapes"].values() for x in r["fresh"])
    lines += ["", f"Dataset-level, beside the anchor ({ANCHOR}): covert-finetuning detects {n_det} of {n_fresh} "
              f"fresh-seed attack runs ({n_det / max(n_fresh, 1):.1%}; a run counts when at least half its target rows "
              f"are flagged at >= medium under the right shape) at a benign false-positive rate of "
              f"{b['benign_datasets_flagged_by_covert']} of 3 benign datasets flagged and "
              f"{b['safe_alone:covert-finetuning']:.1%} / {b['safe_in_medquad:covert-finetuning']:.1%} of "
              "safe-but-alarming rows (alone / in MedQuAD). Not like for like: the anchor audits real attacks with "
              "model access; these are the project's simulators, whose wording the rules' authors had seen.", "",
              f"Clean 10,000-row scan time (LLM set): {b['clean_seconds']} s.", "",
              "Known limits (an attacker who reads the code): the persona and first-person affirmation rules are "
              "concept patterns, so a paraphrase outside them is missed; erosion shows only through affirmations "
              "(repeated ones are medium) or a harmful-looking surplus; a polyalphabetic cipher is not decoded (an "
              "exchange in it is medium only when the request names a code), steganography (EndSpeak) is not seen "
              "and a real low-resource language is low severity at most; the trigger rules need refused twins or "
              "harmful-looking requests in the data (without them `safety-bypass` sees plain harmful compliance); "
              "decoded text is scored by the same n-gram harm model, so its misses carry over wherever a rule needs "
              "a harm score (the coded-exchange, teaching and contrast-pair rules do not). Held-out wording: "
              "docs/_bench_covert_written.md (a development set since v2)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--quick", action="store_true", help="one fresh seed, no development seeds")
    ap.add_argument("--render", action="store_true", help="only rewrite the markdown from benchmarks/results/covert.json")
    a = ap.parse_args()
    if a.render:
        (ROOT / "docs" / "_bench_covert.md").write_text(markdown(json.loads((RESULTS / "covert.json").read_text())))
        return
    if not (a.data / "medquad" / "medquad.jsonl.gz").is_file():
        sys.exit(f"bench_covert: {a.data} does not hold medquad/medquad.jsonl.gz")
    t0 = time.perf_counter()
    c = tsm.corpora(a.data)
    base = [{"question": r["question"], "answer": r["answer"]} for r in c["mq_test"] + c["mq_train"]][:10_000]
    dev, fresh = ((), FRESH_SEEDS[:1]) if a.quick else (DEV_SEEDS, FRESH_SEEDS)
    out: dict = {"shapes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        beh = str(Path(tmp) / "behaviours.jsonl")
        with open(beh, "w") as f:
            for r in c["adv_test"]:
                f.write(json.dumps({"goal": r["goal"], "target": r["target"]}) + "\n")
            for r in c["hb_test"]:
                if not r.get("context"):
                    f.write(json.dumps({"behavior": r["behavior"]}) + "\n")
        for cfg in CONFIGS:
            r = {"rows": cfg[3],
                 "dev": [run_config(base, beh, cfg, s, ["covert-finetuning"]) for s in dev],
                 "fresh": [run_config(base, beh, cfg, s, LLM_SET) for s in fresh]}
            out["shapes"][cfg[0]] = r
            print(cfg[0], json.dumps(r["fresh"]), flush=True)
    out["benign"] = benign_sets(base)
    print(json.dumps(out["benign"]), flush=True)
    out["minutes"] = round((time.perf_counter() - t0) / 60, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "covert.json").write_text(json.dumps(out, indent=1))
    (ROOT / "docs" / "_bench_covert.md").write_text(markdown(out))


if __name__ == "__main__":
    main()
