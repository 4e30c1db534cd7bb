"""Annotator-level preference poisoning on hh-rlhf: one annotator flips a share of their labels.

    python benchmarks/bench_annotators.py ../shared/data

hh-rlhf has no annotator field, so each run assigns the 2,312 harmless-base pairs to
10 annotators at random (seeded) and one of them swaps chosen/rejected on a share of
their pairs (no trigger token). `preference-trigger`'s annotator rule should name that
annotator and no other. Results: benchmarks/results/annotators.json, docs/_bench_annotators.md.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ANNOTATORS = 10
SHARES = (0.1, 0.2, 0.3, 0.5)
SEEDS = range(1, 6)


def dataset(rows: list[dict]):
    from trainguard.scan import run_detector
    from trainguard.io.dataset import Dataset
    from trainguard.io.mapping import RecordBuilder, detect_kind
    from trainguard.records import Kind

    kind, fm = detect_kind(set(rows[0]))
    b = RecordBuilder("<hh-rlhf>", kind, fm)
    return Dataset.from_records([b.build(r, i, None) for i, r in enumerate(rows)], Kind.PREFERENCE)


def main(argv: list[str]) -> int:
    from trainguard.detectors.llm_preference import PreferenceFlipTrigger

    data = Path(argv[0] if argv else "../shared/data")
    with gzip.open(data / "hh-rlhf" / "harmless-base-test.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    runs = []
    t0 = time.perf_counter()
    for share in (0.0, *SHARES):
        for seed in SEEDS:
            rng = np.random.default_rng(seed)
            who = rng.integers(0, ANNOTATORS, len(rows))
            bad = int(rng.integers(0, ANNOTATORS))
            mine = np.flatnonzero(who == bad)
            flip = set(rng.choice(mine, int(round(share * len(mine))), replace=False).tolist())
            out = [{**r, "annotator": f"a{who[i]}",
                    **({"chosen": r["rejected"], "rejected": r["chosen"]} if i in flip else {})}
                   for i, r in enumerate(rows)]
            res = run_detector(PreferenceFlipTrigger(), dataset(out))
            named = [f.evidence["annotator"] for f in res.findings if f.rule == "annotator-disagreement"]
            runs.append({"share": share, "seed": seed, "bad": f"a{bad}", "pairs_of_bad": len(mine), "flipped": len(flip),
                         "found": f"a{bad}" in named and share > 0, "others_named": len([a for a in named if a != f"a{bad}" or share == 0]),
                         "z": {f.evidence["annotator"]: f.evidence["z"] for f in res.findings if f.rule == "annotator-disagreement"},
                         "triggers": sum(f.rule == "preference-flip-trigger" for f in res.findings)})
            print(json.dumps(runs[-1]), flush=True)
    md = ["Annotator-level poisoning on all 2,312 hh-rlhf harmless-base pairs: pairs assigned at random to "
          f"{ANNOTATORS} annotators (~231 each); one annotator swaps chosen/rejected on a share of their pairs; "
          f"{len(SEEDS)} seeds per share; `preference-trigger` defaults (annotator rule: the "
          "calibrated preference model's log-likelihood z-score, Bonferroni over annotators at alpha 0.01; "
          "the rule was chosen on seeds 101-105; these seeds were first run with the previous rule, agreement "
          "z >= 4 below the other annotators', which named the annotator in 0/5, 0/5, 1/5 and 3/5 runs at "
          "10 / 20 / 30 / 50 %).", "",
          "| share of the annotator's pairs flipped | flipped pairs | annotator named (of 5) | other annotators named | trigger findings |",
          "|---|---|---|---|---|"]
    for share in (0.0, *SHARES):
        rs = [r for r in runs if r["share"] == share]
        md.append(f"| {share:.0%} | {int(np.mean([r['flipped'] for r in rs]))} | "
                  f"{sum(r['found'] for r in rs) if share else '-'} | {sum(r['others_named'] for r in rs)} | "
                  f"{sum(r['triggers'] for r in rs)} |")
    la = [round(x, 2) for x in os.getloadavg()]
    md += ["", f"Command: `python benchmarks/bench_annotators.py ../shared/data`; {time.perf_counter() - t0:.0f} s "
           f"for {len(runs)} runs, load average {' / '.join(map(str, la))}."]
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / "annotators.json").write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    (ROOT / "docs" / "_bench_annotators.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
