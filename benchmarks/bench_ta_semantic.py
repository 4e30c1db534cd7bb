"""Would the `shortcut` semantic view tell trigger-association's natural findings from planted ones? (issue 12)

For every trigger-association finding on 50 clean 20k SST-2 samples (seeds 0-49) and on planted files (BadNets,
AddSent, combo, dilution, reinforcement, syntactic at 0.1 % and 0.5 % on samples 300-303), the mean and median
leave-one-out ridge probability of the forced label over the finding's rows (`Shortcut._semantic`) beside its
contradiction z and strength. One JSON line per finding on stdout; results/ta-semantic.jsonl is a saved run.

    python benchmarks/bench_ta_semantic.py > benchmarks/results/ta-semantic.jsonl
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_shortcut as B  # noqa: E402

from trainguard.attacks import poison  # noqa: E402
from trainguard.detectors._repr import label_codes  # noqa: E402
from trainguard.detectors.base import get  # noqa: E402
from trainguard.io.dataset import load  # noqa: E402
from trainguard.scan import scan  # noqa: E402

SHORTCUT = get("shortcut")()
ATTACKS = (("badnets", {}), ("addsent", {}), ("combo", {"words": ("truly", "simply"), "factor": 1.0}),
           ("dilution", {"trigger": "tq", "factor": 1.0}), ("reinforcement", {"trigger": "tq", "factor": 2.0}))


def dump(tag: str, rows: list[dict], poisoned: set[int]) -> None:
    with tempfile.TemporaryDirectory() as td:
        data = load(B._write(rows, td))
        rep = scan(data, ["trigger-association"])
        if not rep.findings:
            return
        y, names = label_codes(data)
        q = SHORTCUT._semantic(data, y, len(names))
    pos = {r.row: i for i, r in enumerate(data)}
    for f in rep.findings:
        ev = f.evidence
        idx = np.array([pos[r] for r in f.rows])
        c = names.index(ev["target"]) if ev["target"] in names else None
        qc = q[idx, c] if c is not None else q[idx, y[idx]]
        planted = len(set(f.rows) & poisoned) > 0.5 * len(f.rows)
        print(json.dumps(dict(tag=tag, planted=planted, sev=f.severity.name, trig=ev.get("trigger"), n=len(f.rows),
                              z=ev.get("contradiction_z"), strength=round(ev["llr"] / ev["threshold_llr"], 2),
                              q_mean=round(float(qc.mean()), 3), q_med=round(float(np.median(qc)), 3),
                              share_lo=round(float((qc < 0.5).mean()), 3))), flush=True)


def main() -> None:
    sst2 = B._jsonl(B.SHARED / "sst2" / "train.jsonl.gz")
    for seed in range(50):
        dump(f"clean20k/{seed}", B._sample(sst2, 20000, seed), set())
    for seed in range(4):
        base = B._sample(sst2, 20000, 300 + seed)
        for atk, kw in ATTACKS + (("syntactic", {"salt": seed}),):
            for rate in (0.001, 0.005):
                cnt = round(rate * 20000 * (1 + kw.get("factor", 0)))
                r = poison(base, atk, count=cnt, seed=seed, **kw)
                pois = {e["row"] for e in r.entries if e.get("role", "poison") == "poison"}
                dump(f"{atk}/{rate}/{seed}", r.rows, pois)


if __name__ == "__main__":
    main()
