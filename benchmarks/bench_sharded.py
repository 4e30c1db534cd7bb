"""Sharded vs in-memory scan: same findings, bounded memory, throughput.

Each configuration runs in a fresh process so peak RSS is its own. The input
is SST-2 train repeated `--copies` times (row text suffixed with the copy
number so rows stay distinct), written once to a temporary JSONL file.

    python benchmarks/bench_sharded.py ../shared/data --copies 5 --out benchmarks/results/sharded.json
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DETECTORS = ["invisible-characters", "near-duplicates"]


def _child(mode: str, path: str, shard_rows: int) -> None:
    from trainguard.scan import scan
    from trainguard.sharded import scan_sharded

    t0 = time.perf_counter()
    if mode == "memory":
        report = scan(path, detectors=DETECTORS)
    elif mode == "shards":
        report = scan_sharded(path, detectors=DETECTORS, shard_rows=shard_rows)
    else:
        from distributed import Client

        with Client(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
            report = scan_sharded(path, detectors=DETECTORS, shard_rows=shard_rows, client=client, max_in_flight=4)
    seconds = time.perf_counter() - t0
    digest = sorted((f.detector, f.rule, f.rows) for f in report.findings)
    print(json.dumps({"records": report.dataset.records, "seconds": seconds,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "findings": len(report.findings), "digest": hashlib.sha256(str(digest).encode()).hexdigest()}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--copies", type=int, default=5)
    ap.add_argument("--shard-rows", type=int, default=20_000)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], int(args.child[2]))
        return
    with gzip.open(args.data / "sst2" / "train.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sst2_x.jsonl"
        with open(path, "w") as f:
            for c in range(args.copies):
                for r in rows:
                    f.write(json.dumps({"text": f"{r['text']} {c}", "label": r["label"]}) + "\n")
        results = {}
        for mode in ("memory", "shards", "dask"):
            out = subprocess.run([sys.executable, __file__, str(args.data), "--child", mode, str(path),
                                  str(args.shard_rows)], capture_output=True, text=True, check=True)
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[mode]
            print(f"{mode:7s} {r['records']:,} rows  {r['records'] / r['seconds']:,.0f} rows/s  "
                  f"peak {r['peak_rss_mb']:,.0f} MB  findings {r['findings']}", flush=True)
    same = len({r["digest"] for r in results.values()}) == 1
    print(f"identical findings across modes: {same}")
    summary = {"copies": args.copies, "shard_rows": args.shard_rows, "identical_findings": same,
               "load_average": os.getloadavg(), "results": results}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
