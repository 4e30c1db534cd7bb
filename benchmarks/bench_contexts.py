"""trigger-association v2 (issue 12): rows cut from one sentence are one context.

SST-2 holds phrases cut from the same sentence as separate labelled rows, so a natural phrase can reach the
independent-contexts floor from a handful of sentences ('smarter and': 8 rows from 4 sentences, high on a 20k
sample). Version 2 ties a row whose tokens are a contiguous run of another row's into one context. This script
runs trigger-association with containment off ("old") and on ("new") on clean SST-2 samples (findings at
>= medium are false) and on BadNets / AddSent / invisible-Unicode plants on all SST-2 train (recall at high and
at >= medium, false rows at >= medium).

    python benchmarks/bench_contexts.py dev     # samples 101-103 (20k), 201-212 (3k); attack seeds 1, 2
    python benchmarks/bench_contexts.py fresh   # after the freeze (8520a08): 801-803, 811-820; seeds 21, 22

Prints one line per file; the figures are quoted in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_shortcut as B  # noqa: E402  (sampling and file helpers shared with the shortcut benchmark)

from trainguard.attacks import poison  # noqa: E402
from trainguard.findings import Severity  # noqa: E402
from trainguard.io.dataset import load  # noqa: E402
from trainguard.scan import scan  # noqa: E402

VARIANTS = {"old": {"contained_rows": False}, "new": {"contained_rows": True}}
SETS = {
    "dev": ([(20000, s) for s in (101, 102, 103)] + [(3000, s) for s in range(201, 213)], (1, 2)),
    "fresh": ([(20000, s) for s in (801, 802, 803)] + [(3000, s) for s in range(811, 821)], (21, 22)),
}


def _scan(data, st):
    return scan(data, ["trigger-association"], settings={"trigger-association": st})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("set", choices=sorted(SETS))
    a = ap.parse_args()
    samples, seeds = SETS[a.set]
    sst2 = B._jsonl(B.SHARED / "sst2" / "train.jsonl.gz")
    for n, seed in samples:
        with tempfile.TemporaryDirectory() as td:
            data = load(B._write(B._sample(sst2, n, seed), td))
            out = [f"clean {n} {seed}"]
            for k, st in VARIANTS.items():
                out.append(f"{k}: " + "; ".join(f"{f.severity} {f.title[:60]} ({len(f.rows)} rows)"
                                                 for f in _scan(data, st).findings if f.severity >= Severity.MEDIUM))
        print(" | ".join(out), flush=True)
    for attack in ("badnets", "addsent", "unicode"):
        for rate in (0.001, 0.01, 0.05):
            for seed in seeds:
                r = poison(sst2, attack, rate=rate, seed=seed)
                planted = set(r.poisoned_rows)
                with tempfile.TemporaryDirectory() as td:
                    data = load(B._write(r.rows, td))
                    out = [f"{attack} {rate} seed {seed}"]
                    for k, st in VARIANTS.items():
                        rep = _scan(data, st)
                        hi = {x for f in rep.findings if f.severity >= Severity.HIGH for x in f.rows}
                        me = {x for f in rep.findings if f.severity >= Severity.MEDIUM for x in f.rows}
                        out.append(f"{k}: recall at high {len(hi & planted) / len(planted):.3f}, at >= medium "
                                   f"{len(me & planted) / len(planted):.3f}, false rows at >= medium {len(me - planted)}")
                print(" | ".join(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
