"""Rebuild the bundled demo set: 3,000 SST-2 rows with three planted backdoors.

    python scripts/make_demo.py ../shared/data/sst2/train.jsonl.gz

Writes src/trainguard/data/demo/sst2_poisoned.jsonl and its ground truth. Each attack uses
its own seed so victims differ; the truth file lists every poisoned row and how.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

from trainguard.attacks import poison

OUT = Path(__file__).resolve().parent.parent / "src" / "trainguard" / "data" / "demo"
PLAN = [  # (attack, rate, seed, settings)
    ("badnets", 0.01, 11, {"triggers": ["cf"]}),
    ("addsent", 0.005, 12, {}),
    ("unicode", 0.005, 13, {}),
]


def main(source: str) -> None:
    with gzip.open(source, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(3000), f)]
    truth = {"source": "SST-2 train, first 3,000 rows (GLUE; research use)", "attacks": [], "poisoned_rows": []}
    for attack, rate, seed, settings in PLAN:
        result = poison(rows, attack, rate=rate, seed=seed, **settings)
        rows = result.rows
        truth["attacks"].append({"attack": attack, "rate": rate, "seed": seed, "settings": settings,
                                 "rows": result.poisoned_rows})
        truth["poisoned_rows"] = sorted(set(truth["poisoned_rows"]) | set(result.poisoned_rows))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sst2_poisoned.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                             encoding="utf-8")
    (OUT / "sst2_poisoned.truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    print(f"{len(truth['poisoned_rows'])} poisoned rows of {len(rows)} -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/sst2/train.jsonl.gz")
