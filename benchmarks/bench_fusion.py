"""Fusion rule on real data: clean false-flag share and attack AUROC/P/R, legacy noisy-OR vs current rule.

Runs every detector once per condition (clean, labelflip 10 %, badnets 1 % of
20,000 SST-2 rows, seed 7, wordllama embeddings), keeps the per-detector row
scores in benchmarks/out/fusion_scores_*.npz, then fuses the *same* scores
with both rules, so the before/after comparison has identical inputs.
`--reuse` skips the detector runs and only re-fuses the cached scores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import bench_representation as br  # noqa: E402  (shared loaders; same seeds and datasets)

from trainguard.attacks import poison  # noqa: E402
from trainguard.bench.metrics import detection  # noqa: E402
from trainguard.detectors import fusion  # noqa: E402
from trainguard.embeddings import use_cache_dir  # noqa: E402
from trainguard.scan import scan  # noqa: E402

CONDITIONS = [("clean", 0.0), ("labelflip", 0.10), ("badnets", 0.01)]


def legacy_fuse(row_scores: dict[str, np.ndarray]) -> np.ndarray:
    """The rule before this change: weighted noisy-OR over every score, however small."""
    keep = np.ones(len(next(iter(row_scores.values()))))
    for name, s in row_scores.items():
        w = {"near-duplicates": 0.5, "feature-collision": 0.8}.get(name, 1.0)
        keep *= 1.0 - w * np.nan_to_num(np.clip(np.asarray(s, np.float64), 0, 1))
    return 1.0 - keep


def detector_scores(rows: list[dict], embedder: str, cache_dir: str) -> dict[str, np.ndarray]:
    data = br.to_dataset(rows)
    use_cache_dir(data, cache_dir)
    out = {}
    for cls in br.OURS:
        det = cls(embedder=embedder) if "embedder" in cls.Settings.__dataclass_fields__ else cls()
        out[det.name] = np.asarray(det.run(data).row_scores, np.float64)
    rep = scan(data, detectors=br.LEXICAL)
    out.update({k: np.asarray(v, np.float64) for k, v in rep.row_scores.items()})
    return out


def metrics(fused: np.ndarray, truth: np.ndarray) -> dict:
    d = detection(set(fusion.flagged(fused).tolist()), truth, fused).to_dict()
    d["flagged_share"] = round(d["flagged"] / len(truth), 5)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--embedder", default="wordllama")
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "trainguard-bench" / "embeddings"))
    ap.add_argument("--scores-dir", default=str(BENCH / "out"))
    ap.add_argument("--reuse", action="store_true", help="fuse cached detector scores instead of rerunning detectors")
    ap.add_argument("--out", default=str(BENCH / "results" / "fusion.json"))
    args = ap.parse_args()
    base = br.load_rows("sst2", args.rows, args.seed)
    results = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
               "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
               "dataset": "sst2/train.jsonl.gz", "rows": len(base), "seed": args.seed, "embedder": args.embedder,
               "threshold": fusion.DEFAULT_THRESHOLD, "runs": []}
    for attack, rate in CONDITIONS:
        if attack == "clean":
            rows, poisoned = base, []
        else:
            res = poison(base, attack, rate=rate, seed=args.seed)
            rows, poisoned = res.rows, res.poisoned_rows
        truth = np.zeros(len(rows), bool)
        truth[list(poisoned)] = True
        cache = Path(args.scores_dir) / f"fusion_scores_{attack}_{rate}_{len(rows)}_{args.seed}.npz"
        t0 = time.perf_counter()
        if args.reuse and cache.exists():
            with np.load(cache) as z:
                scores = {k: z[k] for k in z.files}
        else:
            scores = detector_scores(rows, args.embedder, args.cache_dir)
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(cache, **scores)
        per_detector = {k: {"flagged_at_0.5": int((v >= 0.5).sum()),
                            "auroc": detection(set(), truth, v).auroc} for k, v in scores.items()}
        run = {"attack": attack, "rate": rate, "poisoned": int(truth.sum()),
               "before_noisy_or": metrics(legacy_fuse(scores), truth),
               "after": metrics(fusion.fuse(scores), truth),
               "per_detector": per_detector}
        results["runs"].append(run)
        b, a = run["before_noisy_or"], run["after"]
        print(f"{attack}@{rate}: before auroc={b['auroc']} p={b['precision']:.3f} r={b['recall']:.3f} "
              f"flagged={b['flagged']} | after auroc={a['auroc']} p={a['precision']:.3f} r={a['recall']:.3f} "
              f"flagged={a['flagged']} ({time.perf_counter() - t0:.0f}s)", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
