"""Disk bytes per cached embedding vector (issue 14: the cache stored each vector on its own overflow page).

    python benchmarks/bench_embedding_cache.py                      # this checkout
    git worktree add /tmp/tg-old 47949b5 && \
        python benchmarks/bench_embedding_cache.py --src /tmp/tg-old/src   # schema 1, for comparison

Writes N random 384-d float32 vectors (MiniLM's size) in batches of 1,000, checkpoints
the WAL, VACUUMs, and prints the database size divided by N.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import sys
import tempfile

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", help="the src/ folder whose trainguard to measure (default: this checkout's)")
    ap.add_argument("--vectors", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=384)
    a = ap.parse_args()
    sys.path.insert(0, a.src or os.path.join(os.path.dirname(__file__), "..", "src"))
    from trainguard.embeddings.cache import EmbeddingCache

    d = tempfile.mkdtemp()
    rng = np.random.default_rng(0)
    with EmbeddingCache(d) as cache:
        for start in range(0, a.vectors, 1000):
            cache.put("bench", [(hashlib.sha256(str(i).encode()).digest(), rng.standard_normal(a.dim).astype(np.float32))
                                for i in range(start, min(start + 1000, a.vectors))])
    db = os.path.join(d, "embeddings.sqlite3")
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("VACUUM")
    con.close()
    print(f"{a.vectors:,} vectors of {a.dim} dims: {os.path.getsize(db) / a.vectors:,.0f} bytes of disk per vector")


if __name__ == "__main__":
    main()
