"""Synthetic classification rows without reuse: near-duplicates only where they are planted.

    python benchmarks/make_unique.py --rows 1000000 --out /tmp/uniq-1m.jsonl
    options: --dup-share 0.005 (share of rows in planted near-duplicate groups) --group 6 --seed 1
             --sst2 ../shared/data/sst2/train.jsonl.gz

`make_synthetic.py` pairs SST-2 sentences, each sentence in many pairs, so a large share of its
rows are genuine near-duplicates of each other (`near-duplicates` groups ~44 % of a 1M file). This
file is the other end, for what `near-duplicates` holds when few rows repeat: each row is 12-30
words drawn at random from the SST-2 vocabulary (`{"text": ..., "label": 0 or 1}`), so two rows
share a MinHash band by chance only; `--dup-share` of the rows come in groups of `--group`
near-copies of one such row (one word replaced in each copy, same label), the duplicates a scan
should find. Nothing is remembered per row; same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SST2 = ROOT.parent / "shared" / "data" / "sst2" / "train.jsonl.gz"


def vocabulary(path: Path) -> list[str]:
    words: dict[str, None] = {}
    with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                words.update(dict.fromkeys(json.loads(line)["text"].split()))
    return sorted(words)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dup-share", type=float, default=0.005)
    ap.add_argument("--group", type=int, default=6)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sst2", type=Path, default=DEFAULT_SST2)
    args = ap.parse_args()
    vocab = vocabulary(args.sst2)
    rng = random.Random(args.seed)
    groups = planted = 0
    with open(args.out, "wb", buffering=1 << 20) as f:
        row = 0
        while row < args.rows:
            words = rng.choices(vocab, k=rng.randint(12, 30))
            label = rng.randrange(2)
            copies = 1
            if rng.random() < args.dup_share / args.group:
                copies = min(args.group, args.rows - row)
                groups += 1
                planted += copies
            for c in range(copies):
                w = list(words)
                if c:
                    w[rng.randrange(len(w))] = rng.choice(vocab)
                f.write(orjson.dumps({"text": " ".join(w), "label": label}) + b"\n")
                row += 1
    print(f"{args.out}: {args.rows:,} rows, {groups:,} planted groups ({planted:,} rows)")


if __name__ == "__main__":
    main()
