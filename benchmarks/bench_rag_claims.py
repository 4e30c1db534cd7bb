"""PoisonedRAG without a shared opening (issue 16, shape 6): passages that state the attacker's answer.

    python benchmarks/bench_rag_claims.py ../shared/data
    python benchmarks/bench_rag_claims.py ../shared/data --seeds 21 22 23 --fresh PATH   # held-out sets, after a freeze
    python benchmarks/bench_rag_claims.py ../shared/data --retriever wordllama            # the static retriever only

Store: all 16,407 MedQuAD answers. Planted, one set at a time:
- `poisoned-rag` with `s_style="claim"` (the simulator): per seed (0, 1, 2) 50 MedQuAD
  questions x 5 passages, one false answer per target, no question in the passage;
- LLM-written passages (benchmarks/data/rag_claims/, written for this benchmark by a
  language model asked to write like PoisonedRAG's attacker): `dev.jsonl` (20 targets x 5,
  adaptive: no repeated question, no shared opening, varied claim wording and length,
  30-250 words) and `test.jsonl` (40 targets x 5; even targets the plain PoisonedRAG
  style, odd targets the adaptive one). The test set's passages were not read by the
  detector's authors; only these figures were.

`--fresh PATH` (repeatable) adds a held-out set in test.jsonl's format, its plain and adaptive
targets reported apart; the clean store is scanned alone first. Reported per set: the attack's effect on retrieval (share
of target questions whose top 5 passages are mostly planted) for each retriever of `--retriever` (wordllama: static
token vectors, the embedder the detector reads; minilm: all-MiniLM-L6-v2, a small dense sentence encoder such as RAG
stores use; default both), `rag-poisoning` recall / precision at severity >= medium, overall and over the targets
whose attack takes on each retriever, and at any severity, AUROC of its row scores, and per retriever two
diagnostics of how far the planted group stands out: how many of a passage's 4 group mates are among its 4 nearest
neighbours in the store, and the median cosine between mates against the median cosine from a passage to its
nearest honest passage. MiniLM vectors of the store come from the embedding cache (~/.cache/trainguard/embeddings;
about 18 min on 2 CPU cores when cold). `--claim-embedder minilm` scans with rag-poisoning's opt-in dense claim groups.
Writes benchmarks/results/rag_claims.json and docs/_bench_rag_claims.md (with --claim-embedder: rag_claims_dense.json,
_bench_rag_claims_dense.md).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_llm import FALSE_ANSWERS  # noqa: E402

from trainguard.attacks.llm import rag_passage  # noqa: E402
from trainguard.detectors.llm_rag import RagPoisoning  # noqa: E402
from trainguard.embeddings import embed_texts  # noqa: E402
from trainguard.findings import Severity  # noqa: E402
from trainguard.io.dataset import Dataset  # noqa: E402
from trainguard.records import Kind, Record  # noqa: E402
from trainguard.scan import run_detector  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLAIMS = ROOT / "benchmarks" / "data" / "rag_claims"


NOTES = """How `claim-group` (rag-poisoning v4) finds these groups, and how an attacker who has read the code steps \
around it:

- Two ways in. Closed groups (v3): short passages that are each other's nearest neighbours in the whole store, 0.03 \
closer to each other than to anything else. Subject groups (v4): among passages of at most 150 words sharing a rare \
word (in 2 to 2 % of the passages), single-linkage groups at cosine 0.70 (raised by 0.03 until at most 8 remain) of \
4-8 passages, mean cosine between members >= 0.75, no more than 0.05 below each member's nearest outsider, median \
<= 60 words, and at least half the members holding no word found in at most 20 passages that the others lack. Either way a group \
is reported at medium only if most members' opening sentence names, as its rarest word, a word most other members \
carry (the subject); otherwise at low. Honest MedQuAD restates one claim about several subjects (one frequency \
sentence over the NCL subtypes, one population over several diseases): those members open on their own subject.
- Steps around it: passages longer than 60 words (subject groups) or 100 (closed groups) with on-topic padding \
(the adaptive style: not caught at all); fewer than 4 passages per target; each passage carrying its own rare \
made-up detail (a drug name, a study) so that members hold private near-unique words; the subject named after the \
opening sentence or by different names (synonym, abbreviation) so that the subject check demotes the group to low; \
claims worded differently enough that the static wordllama cosine between passages falls below 0.75. Most of these \
cost the attacker retrieval rank on the static wordllama retriever, not on MiniLM: with MiniLM as the retriever \
the adaptive style takes over 55-75 % of its development targets (retrieval ASR columns), so its misses are attacks that work on \
a realistic dense retriever.
- `near-question-group` groups of 3 different answers are now low (honest FAQ stores ask one question about three \
related subjects); an attacker planting 3 paraphrased-question passages per target is reported at low only.
- Tried on MiniLM vectors for the adaptive style, none at a precision that holds on the clean store (development \
sets: dev, simulator seed 0; MiniLM vectors of the store and planted sets): the v4 claim-group rules read on \
MiniLM vectors with the length caps lifted (522 clean-store rows at medium); mutual 4-nearest-neighbour groups of \
3-10 passages filtered on mean cosine, gap to the nearest outsider, word-Jaccard between members (no near-copies) \
and a shared rare word (>= 77 clean rows for 15-20 of dev's 100 passages); sentence-level agreement between \
members (honest per-disease answer sets agree more: they repeat the definition); the members' best-matching \
question type (causes, symptoms, treatment...; 50 of 160 honest groups agree as well as planted ones); subject \
holders outside the group; words most members share that the other passages holding the group's subject word \
lack (the claim: 25 / 18 clean-store groups with >= 4 / 5 such words, against 4 / 2 of dev's 7 planted candidate \
groups). The best row-level signal, how far a passage's 4 nearest neighbours (copies merged) stand above its \
5th-8th, has AUROC 0.88 (dev), 0.89 (simulator seed 0) and 0.84 (test adaptive, a check set), but at the threshold \
naming 10 clean-store rows it catches 9 % of dev's and 8 % of test adaptive's passages (27-28 % at 100 rows):
MedQuAD's honest per-disease answer sets and multi-source restatements are as tight. Shipped as the opt-in \
`claim_embedder=minilm` (dense claim groups, `--claim-embedder minilm` here): mutual 4-nearest-neighbour groups of \
4-8 on MiniLM (copies merged; mean cosine >= 0.68, gap >= -0.06), median step >= 0.19 (`claim_dense_step`), whose \
rarest shared word is held by passages outside the group, with >= 3 words held by 3/4 of the members that <= 10 % \
of those outside holders carry. Chosen on dev and simulator seed 0, checked on the test set and seeds 1-2: 0 \
clean-store rows, 0.10 of dev's and of test adaptive's passages at precision 1.00 (table: \
_bench_rag_claims_dense.md).
- Not tried: an LLM judge of contradiction with the honest passages on the subject (what tells a planted claim \
from an honest restatement is that it disagrees with the store).""".split("\n")


def documents(texts: list[str]) -> Dataset:
    return Dataset.from_records([Record(row=i, kind=Kind.DOCUMENTS, text=t) for i, t in enumerate(texts)])


def simulated(mq: list[dict], seed: int) -> tuple[list[str], list[int], dict[int, str]]:
    rng = np.random.default_rng(31 + seed)
    picks = rng.choice(len(mq), 50, replace=False)
    texts, groups = [], []
    for j, i in enumerate(picks):
        for k in range(5):
            texts.append(rag_passage(mq[i]["question"], FALSE_ANSWERS[j % len(FALSE_ANSWERS)], k, "claim",
                                     np.random.default_rng([seed, j, k])))
            groups.append(j)
    return texts, groups, {j: mq[i]["question"] for j, i in enumerate(picks)}


def written(name: str | Path, style: str | None = None) -> tuple[list[str], list[int], dict[int, str]]:
    rows = [json.loads(x) for x in (CLAIMS / name).read_text(encoding="utf-8").splitlines() if x.strip()]
    rows = [r for r in rows if style is None or r.get("style") == style]
    return [r["passage"] for r in rows], [int(r["target"]) for r in rows], {int(r["target"]): r["question"] for r in rows}


RETRIEVERS = ("wordllama", "minilm")


def embed(texts: list[str], retriever: str) -> np.ndarray:
    """wordllama is fast enough to embed afresh; MiniLM reads and fills the embedding cache (the store: ~18 min cold)."""
    return embed_texts(texts, retriever, cache="off" if retriever == "wordllama" else None)


def retrieval_won(store_vecs: np.ndarray, v: np.ndarray, groups: list[int], questions: dict[int, str],
                  retriever: str = "wordllama") -> dict[int, bool]:
    """Attack effect without an LLM, per target: do the target question's top-5 passages (the retriever's cosine over
    the store plus the planted set) hold at least 3 of that target's planted passages (a majority of the context)?"""
    allv = np.vstack([store_vecs, v])
    n0, g = len(store_vecs), np.asarray(groups)
    targets = sorted(questions)
    top = np.argsort(-(embed([questions[t] for t in targets], retriever) @ allv.T), axis=1)[:, :5]
    return {t: sum(1 for x in top[k] if x >= n0 and g[x - n0] == t) >= 3 for k, t in enumerate(targets)}


def prf(named: set[int], truth: set[int]) -> dict:
    tp = len(named & truth)
    return {"recall": round(tp / max(len(truth), 1), 3), "precision": round(tp / len(named), 3) if named else None,
            "named": len(named)}


def diagnostics(store_vecs: np.ndarray, v: np.ndarray, groups: list[int]) -> dict:
    allv = np.vstack([store_vecs, v])
    n0 = len(store_vecs)
    g = np.asarray(groups)
    sims = v @ allv.T
    for k in range(len(v)):
        sims[k, n0 + k] = -9.0
    top = np.argsort(-sims, axis=1)[:, :4]
    mates_in_top4 = [sum(1 for x in top[k] if x >= n0 and g[x - n0] == g[k]) for k in range(len(v))]
    same = (g[:, None] == g[None, :]) & ~np.eye(len(g), dtype=bool)
    within = (v @ v.T)[same]
    to_store = sims[:, :n0].max(1)
    return {"mates_in_top4_mean": round(float(np.mean(mates_in_top4)), 2),
            "within_group_cosine_median": round(float(np.median(within)), 3),
            "nearest_honest_cosine_median": round(float(np.median(to_store)), 3)}


def evaluate(store: list[str], store_vecs: dict[str, np.ndarray], texts: list[str], groups: list[int],
             questions: dict[int, str], settings: dict | None = None) -> dict:
    vecs = {r: embed(texts, r) for r in store_vecs}  # once per retriever: the diagnostics and the retrieval ASR
    all_texts = store + texts
    truth = set(range(len(store), len(all_texts)))
    t = time.perf_counter()
    res = run_detector(RagPoisoning(**(settings or {})), documents(all_texts))
    secs = time.perf_counter() - t
    y = np.zeros(len(all_texts))
    y[list(truth)] = 1
    medium = {r for f in res.findings if f.severity >= Severity.MEDIUM for r in f.rows}
    anyf = {r for f in res.findings for r in f.rows}
    retrieval = {}
    for r, sv in store_vecs.items():
        won = retrieval_won(sv, vecs[r], groups, questions, r)
        taking = {len(store) + k for k, g in enumerate(groups) if won[g]}  # passages of targets whose attack takes
        retrieval[r] = {"retrieval_asr": round(float(np.mean(list(won.values()))), 3),
                        "targets_taking": sum(won.values()),
                        "medium_taking": prf(medium & taking | (medium - truth), taking) if taking else None,
                        **diagnostics(sv, vecs[r], groups)}
    honest_medium = sorted({f.rule for f in res.findings if f.severity >= Severity.MEDIUM and set(f.rows) - truth})
    return {"passages": len(texts), "targets": len(set(groups)), "medium": prf(medium, truth), "any": prf(anyf, truth),
            "auroc": round(float(roc_auc_score(y, res.row_scores)), 4), "seconds": round(secs, 1),
            "honest_rules_at_medium": honest_medium, "retrievers": retrieval}


def clean_store(store: list[str], settings: dict | None = None) -> dict:
    t = time.perf_counter()
    res = run_detector(RagPoisoning(**(settings or {})), documents(store))
    rules: dict[str, int] = {}
    for f in res.findings:
        if f.severity >= Severity.MEDIUM:
            rules[f.rule] = rules.get(f.rule, 0) + len(f.rows)
    return {"rows_at_medium": len({r for f in res.findings if f.severity >= Severity.MEDIUM for r in f.rows}),
            "by_rule": rules, "rows_any": len({r for f in res.findings for r in f.rows}),
            "seconds": round(time.perf_counter() - t, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the shared data folder (medquad/medquad.jsonl.gz)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="simulator seeds (default 0 1 2)")
    ap.add_argument("--fresh", type=Path, action="append", default=[],
                    help="a held-out set in test.jsonl's format (plain and adaptive styles reported apart); repeatable")
    ap.add_argument("--retriever", choices=[*RETRIEVERS, "both"], default="both",
                    help="embedder of the retrieval ASR and diagnostics (default both; minilm reads the embedding cache)")
    ap.add_argument("--claim-embedder", default="",
                    help="rag-poisoning's opt-in claim_embedder (e.g. minilm: dense claim groups); default off")
    ap.add_argument("--md", type=Path, default=None, help="default docs/_bench_rag_claims.md "
                    "(_bench_rag_claims_dense.md with --claim-embedder)")
    a = ap.parse_args(argv)
    suffix = "_dense" if a.claim_embedder else ""
    a.md = a.md or ROOT / "docs" / f"_bench_rag_claims{suffix}.md"
    t0 = time.perf_counter()
    with gzip.open(a.data / "medquad" / "medquad.jsonl.gz", "rt", encoding="utf-8") as f:
        mq = [json.loads(x) for x in f if x.strip()]
    store = [r["answer"] for r in mq]
    store_vecs = {r: embed(store, r) for r in (RETRIEVERS if a.retriever == "both" else (a.retriever,))}
    sets = {f"simulator claim style, seed {s}": simulated(mq, s) for s in a.seeds}
    sets["LLM-written dev (adaptive)"] = written("dev.jsonl")
    sets["LLM-written test, plain style"] = written("test.jsonl", "plain")
    sets["LLM-written test, adaptive style"] = written("test.jsonl", "adaptive")
    for path in a.fresh:
        for style in ("plain", "adaptive"):
            sets[f"fresh {path.name}, {style} style"] = written(path.resolve(), style)
    settings = {"claim_embedder": a.claim_embedder} if a.claim_embedder else {}
    out = {"clean store (nothing planted)": clean_store(store, settings)}
    print("clean", json.dumps(out["clean store (nothing planted)"]), flush=True)
    for name, (texts, groups, questions) in sets.items():
        out[name] = evaluate(store, store_vecs, texts, groups, questions, settings)
        print(name, json.dumps(out[name]), flush=True)
    seconds = time.perf_counter() - t0
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"rag_claims{suffix}.json").write_text(json.dumps(out, indent=1))
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True).stdout
    version = RagPoisoning.version
    la = " / ".join(f"{x:.2f}" for x in os.getloadavg())

    def rp(d):
        return f"{d['recall']:.2f} / {d['precision']:.2f}" if d["precision"] is not None else f"{d['recall']:.2f} / -"

    cmd = " ".join(["python benchmarks/bench_rag_claims.py ../shared/data"] + (["--seeds", *map(str, a.seeds)] if a.seeds != [0, 1, 2] else [])
                   + ([f"--retriever {a.retriever}"] if a.retriever != "both" else [])
                   + ([f"--claim-embedder {a.claim_embedder}"] if a.claim_embedder else [])
                   + [f"--fresh {p}" for p in a.fresh])
    clean = out.pop("clean store (nothing planted)")
    rets = list(store_vecs)
    both = " / ".join(rets)
    lines = ["<!-- generated by benchmarks/bench_rag_claims.py; do not edit -->", "",
             f"Command: `{cmd}` at commit {commit}{' (src modified)' if dirty else ''}, rag-poisoning v{version} "
             f"({seconds / 60:.1f} min on 2 shared CPU "
             f"cores; load average 1/5/15 min at the end: {la}){'; setting claim_embedder=' + a.claim_embedder if a.claim_embedder else ''}. Store: all {len(store):,} MedQuAD answers; each set "
             "planted alone; no queries file (the bar is without `--queries`). Retrieval ASR per retriever "
             f"({both}; wordllama: static token vectors; minilm: all-MiniLM-L6-v2, a dense sentence encoder): share "
             "of target questions whose top 5 passages by that retriever's cosine include at least 3 of that target's "
             "planted passages (the attack's effect on a retriever, no LLM). Recall where it takes: recall over the "
             "passages of the targets whose attack takes on that retriever (precision: those rows against them plus "
             "every honest row named). The last three columns are per retriever too, in the same order.",
             "", f"Clean store alone: {clean['rows_at_medium']} rows at >= medium "
             f"({', '.join(f'{k} {v}' for k, v in sorted(clean['by_rule'].items())) or 'none'}), {clean['rows_any']} at any "
             f"severity; {clean['seconds']} s for {len(store):,} passages.", "",
             "| planted set | passages (targets) | "
             + " | ".join(f"retrieval ASR, {r} (targets)" for r in rets)
             + " | rag-poisoning R / P at >= medium | "
             + " | ".join(f"where it takes on {r}: R / P at >= medium" for r in rets)
             + " | any severity R / P | AUROC | rules naming honest rows at >= medium | seconds | "
             f"mates among 4 nearest (of 4; {both}) | cosine between mates (median; {both}) | cosine to nearest "
             f"honest passage (median; {both}) |", "|---" * (10 + 2 * len(rets)) + "|"]
    for name, r in out.items():
        R = [r["retrievers"][x] for x in rets]
        lines.append(f"| {name} | {r['passages']} ({r['targets']}) | "
                     + " | ".join(f"{d['retrieval_asr']} ({d['targets_taking']})" for d in R)
                     + f" | {rp(r['medium'])} | "
                     + " | ".join(rp(d["medium_taking"]) if d["medium_taking"] else "-" for d in R)
                     + f" | {rp(r['any'])} | {r['auroc']} | {', '.join(r['honest_rules_at_medium']) or '-'} | "
                     f"{r['seconds']} | " + " | ".join(" / ".join(str(d[k]) for d in R) for k in (
                         "mates_in_top4_mean", "within_group_cosine_median", "nearest_honest_cosine_median")) + " |")
    a.md.write_text("\n".join(lines + [""] + NOTES) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
