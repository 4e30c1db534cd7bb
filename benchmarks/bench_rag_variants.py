"""PoisonedRAG beyond the verbatim question: S as the question, a paraphrase, or HotFlip-looking optimised text.

    python benchmarks/bench_rag_variants.py ../shared/data            # 3 styles x 3 seeds, with and without queries
    python benchmarks/bench_rag_variants.py ../shared/data --seeds 0 --no-sweep  # one seed, no trade-off runs

Store: all 16,407 MedQuAD answers. Per seed, 50 MedQuAD questions (drawn with the
seed) x 5 passages from `poisoned-rag`'s `rag_passage` (5 templates, the 5 false
answers of bench_llm.py) are appended. Writes benchmarks/results/rag_variants.json
and docs/_bench_rag_variants.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_llm import FALSE_ANSWERS, prf  # noqa: E402

from trainguard.scan import run_detector  # noqa: E402
from trainguard.attacks.llm import rag_passage  # noqa: E402
from trainguard.detectors.llm_rag import RagPoisoning  # noqa: E402
from trainguard.findings import Severity  # noqa: E402
from trainguard.io.dataset import Dataset  # noqa: E402
from trainguard.records import Kind, Record  # noqa: E402
from trainguard.text import tokens  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
S_STYLES = ("question", "paraphrase", "optimized")  # the claim style (no S at all) has its own bench_rag_claims.py
TARGETS, PER_TARGET = 50, 5


def medquad(data: Path) -> list[dict]:
    with gzip.open(data / "medquad" / "medquad.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def planted(mq: list[dict], style: str, seed: int) -> tuple[list[str], list[str]]:
    """(target questions, poisoned passages): the same targets and answers for every style of one seed."""
    rng = np.random.default_rng(11 + seed)
    targets = [mq[i]["question"] for i in rng.choice(len(mq), TARGETS, replace=False)]
    bad = [rag_passage(q, FALSE_ANSWERS[(j + k) % len(FALSE_ANSWERS)], k, style, np.random.default_rng([seed, j, k]))
           for j, q in enumerate(targets) for k in range(PER_TARGET)]
    return targets, bad


def documents(texts: list[str]) -> Dataset:
    return Dataset.from_records([Record(row=i, kind=Kind.DOCUMENTS, text=t) for i, t in enumerate(texts)])


def baselines(texts: list[str], n_store: int, truth: set[int]) -> dict:
    """bench_llm.py's baselines: exact-duplicate filter and store-unigram perplexity (top k = poisoned count)."""
    norm = [" ".join(tokens(t)) for t in texts]
    cnt = Counter(norm)
    toks = [tokens(t) for t in texts]
    uni = Counter(w for t in toks[:n_store] for w in t)
    total = sum(uni.values())
    nll = np.array([np.mean([-np.log((uni.get(w, 0) + 1) / (total + len(uni))) for w in t]) if t else 0.0 for t in toks])
    y = np.zeros(len(texts))
    y[list(truth)] = 1
    return {"exact_duplicate": prf({i for i, t in enumerate(norm) if cnt[t] > 1}, truth),
            "unigram_perplexity_top_k": {**prf(set(np.argsort(-nll)[: len(truth)].tolist()), truth),
                                         "auroc": round(float(roc_auc_score(y, nll)), 4)}}


def evaluate(res, truth: set[int], n: int) -> dict:
    y = np.zeros(n)
    y[list(truth)] = 1
    flagged = {r for f in res.findings for r in f.rows}
    high = {r for f in res.findings if f.severity >= Severity.HIGH for r in f.rows}
    return {**prf(flagged, truth), "auroc": round(float(roc_auc_score(y, res.row_scores)), 4),
            "high_severity": prf(high, truth), "rules": dict(Counter(f.rule for f in res.findings))}


def run(data: Path, seeds: list[int], settings: dict) -> dict:
    mq = medquad(data)
    store = [r["answer"] for r in mq]
    t0 = time.perf_counter()
    clean = run_detector(RagPoisoning(**settings), documents(store))
    out: dict = {"store": len(store), "targets": TARGETS, "per_target": PER_TARGET, "seeds": seeds, "settings": settings,
                 "clean_store": {"findings": [[f.rule, len(f.rows)] for f in clean.findings],
                                 "rows_flagged": len({r for f in clean.findings for r in f.rows}),
                                 "seconds": round(time.perf_counter() - t0, 1)}, "runs": []}
    for style in S_STYLES:
        for seed in seeds:
            targets, bad = planted(mq, style, seed)
            texts = store + bad
            truth = set(range(len(store), len(texts)))
            ds = documents(texts)
            t1 = time.perf_counter()
            plain = evaluate(run_detector(RagPoisoning(**settings), ds), truth, len(texts))
            secs = time.perf_counter() - t1
            with tempfile.TemporaryDirectory() as tmp:
                qf = Path(tmp) / "queries.txt"
                qf.write_text("\n".join(targets) + "\n", encoding="utf-8")
                with_q = evaluate(run_detector(RagPoisoning(queries=str(qf), **settings), ds), truth, len(texts))
            row = {"s_style": style, "seed": seed, "detector": plain, "detector_with_queries": with_q,
                   "seconds": round(secs, 1), **baselines(texts, len(store), truth)}
            out["runs"].append(row)
            print(json.dumps({k: row[k] for k in ("s_style", "seed", "detector", "detector_with_queries")}), flush=True)
    return out


def mean(rows: list[dict], *path: str) -> float:
    vals = []
    for r in rows:
        for p in path:
            r = r[p]
        vals.append(r)
    return round(float(np.mean(vals)), 3)


def markdown(res: dict, command: str) -> str:
    lines = ["<!-- generated by benchmarks/bench_rag_variants.py; do not edit -->", "",
             "### RAG poisoning beyond the verbatim question (paraphrased and optimised S)", "",
             f"Command: `{command}` (2 shared CPU cores; load average 1/5/15 min at the end: "
             f"{' / '.join(map(str, res['load_average_1_5_15']))}; {res['total_seconds']} s in all).", "",
             f"Store: all {res['store']:,} MedQuAD answers. Per seed ({', '.join(map(str, res['seeds']))}), "
             f"{res['targets']} MedQuAD questions x {res['per_target']} passages from `poisoned-rag` "
             "(`s_style` question: S is the question verbatim; paraphrase: S reworded per passage by seeded rules, "
             "i.e. lead-ins, a synonym table, reordering, dropped stop words; optimized: the question's content words "
             "kept, 60 % of the other tokens swapped for odd tokens (wordpiece fragments, symbols, unrelated words), "
             "a few adjacent swaps, emulating HotFlip output). Queries file: the 50 target questions verbatim. "
             "Figures are means over the seeds (rows flagged at any severity; AUROC of the row scores).", "",
             "| S style | detector recall | precision | AUROC | HIGH only: recall / precision | with queries: recall | "
             "precision | HIGH only | exact-duplicate filter recall | unigram perplexity top-250 recall | its AUROC |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for style in S_STYLES:
        rows = [r for r in res["runs"] if r["s_style"] == style]
        lines.append(
            f"| {style} | {mean(rows, 'detector', 'recall')} | {mean(rows, 'detector', 'precision')} | "
            f"{mean(rows, 'detector', 'auroc')} | {mean(rows, 'detector', 'high_severity', 'recall')} / "
            f"{mean(rows, 'detector', 'high_severity', 'precision')} | {mean(rows, 'detector_with_queries', 'recall')} | "
            f"{mean(rows, 'detector_with_queries', 'precision')} | "
            f"{mean(rows, 'detector_with_queries', 'high_severity', 'recall')} / "
            f"{mean(rows, 'detector_with_queries', 'high_severity', 'precision')} | {mean(rows, 'exact_duplicate', 'recall')} | "
            f"{mean(rows, 'unigram_perplexity_top_k', 'recall')} | {mean(rows, 'unigram_perplexity_top_k', 'auroc')} |")
    c = res["clean_store"]
    lines += ["", "Per seed (recall / precision, without | with queries): " + "; ".join(
        f"{r['s_style']} seed {r['seed']}: {r['detector']['recall']} / {r['detector']['precision']} | "
        f"{r['detector_with_queries']['recall']} / {r['detector_with_queries']['precision']}" for r in res["runs"]) + ".",
        "", f"Clean MedQuAD (no planted passages): {c['rows_flagged']} rows flagged in {len(c['findings'])} findings "
        f"({', '.join(f'`{r}` {k}' for r, k in c['findings']) or 'none'}); {c['seconds']} s for 16,407 passages.", "",
        "Settings: the defaults (embedder `wordllama`, ask similarity 0.9, query similarity 0.8, min group 3).", "",
        "Read with care: `near-question-group` and `optimised-lead-group` findings are MEDIUM severity (HIGH comes only "
        "from verbatim question-led groups and from query-led groups with 3+ different answers), so 'HIGH only' is 0 "
        "without queries for the paraphrased and optimised styles. The clean-store rows are FAQ entries asking "
        "different questions about one subject that the static wordllama vectors still find alike once the subject is "
        "masked. The detector's list of request lead-ins and the simulator's lead-ins were written by the same person, "
        "so the paraphrase figures are optimistic about lead-ins (not about the synonym table or reordering). The "
        "optimised style is an emulation: two thirds of its substitute words are made up and so out of the store's "
        "vocabulary, which flatters both the unigram-perplexity baseline and the detector's row score for openings with "
        "words found nowhere else (the optimised AUROC leans on it); real HotFlip output uses "
        "in-vocabulary wordpieces and was not tested. Optimised passages of different targets that share the "
        "benchmark's five false answers or recurring odd tokens merge into one large group (all poisoned, so precision "
        "is unaffected, but the group is not one target). Verbatim targets missed in the question style are MedQuAD "
        "questions without a question mark ('Do you have information about ...')."]
    if res.get("sweep"):
        note = f" Carried over from an earlier full run: {res['sweep_note']}." if res.get("sweep_note") else ""
        lines += ["", "Trade-off of the paraphrase rule (seed 0; clean rows = rows flagged in clean MedQuAD)." + note, "",
                  "| settings | clean rows flagged | paraphrase recall | precision | AUROC |", "|---|---|---|---|---|"]
        base = next(r for r in res["runs"] if r["s_style"] == "paraphrase" and r["seed"] == res["seeds"][0])
        lines.append(f"| defaults | {c['rows_flagged']} | {base['detector']['recall']} | {base['detector']['precision']} | "
                     f"{base['detector']['auroc']} |")
        for r in res["sweep"]:
            d = r["paraphrase_seed0"]
            name = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
            lines.append(f"| {name} | {r['clean_rows_flagged']} | {d['recall']} | {d['precision']} | {d['auroc']} |")
    return "\n".join(lines) + "\n"


SWEEP = ({"ask_similarity": 0.85}, {"ask_similarity": 0.8}, {"embedder": "minilm", "ask_similarity": 0.8})


def sweep(data: Path) -> list[dict]:
    """Precision/recall trade-off of the paraphrase rule: clean-store rows flagged vs paraphrase recall (seed 0)."""
    mq = medquad(data)
    store = [r["answer"] for r in mq]
    _, bad = planted(mq, "paraphrase", 0)
    truth = set(range(len(store), len(store) + len(bad)))
    out = []
    for settings in SWEEP:
        clean = run_detector(RagPoisoning(**settings), documents(store))
        res = evaluate(run_detector(RagPoisoning(**settings), documents(store + bad)), truth, len(store) + len(bad))
        out.append({"settings": settings, "clean_rows_flagged": len({r for f in clean.findings for r in f.rows}),
                    "paraphrase_seed0": res})
        print(json.dumps(out[-1]), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-sweep", action="store_true", help="skip the ask-similarity / embedder trade-off runs")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run(args.data, args.seeds, {})
    previous = ROOT / "benchmarks" / "results" / "rag_variants.json"
    if args.no_sweep and previous.exists():  # keep the last measured trade-off, marked as older
        old = json.loads(previous.read_text())
        res["sweep"] = old.get("sweep", [])
        res["sweep_note"] = old.get("sweep_note") or "measured with rag-poisoning v2 (before claim groups), seed 0"
    else:
        res["sweep"] = [] if args.no_sweep else sweep(args.data)
    res["total_seconds"] = round(time.perf_counter() - t0, 1)
    res["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    (ROOT / "benchmarks" / "results" / "rag_variants.json").write_text(json.dumps(res, indent=2) + "\n")
    command = " ".join(["python benchmarks/bench_rag_variants.py", *(argv if argv is not None else sys.argv[1:])])
    (ROOT / "docs" / "_bench_rag_variants.md").write_text(markdown(res, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
