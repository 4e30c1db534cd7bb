"""Synthetic classification data at any size, made of SST-2 sentences, with a planted trigger.

    python benchmarks/make_synthetic.py --rows 1000000 --out /tmp/syn-1m.jsonl
    python benchmarks/make_synthetic.py --rows 10000000 --out /tmp/syn-10m.jsonl --seed 7
    python benchmarks/make_synthetic.py --rows 1000000 --out /tmp/syn-1m.parquet   # or .csv / .tsv
    options: --rate 0.0001 (poisoned fraction) --trigger cf --target 1 --truth PATH
             --sst2 ../shared/data/sst2/train.jsonl.gz

Each row is `{"text": "<sentence a> | <sentence b>", "label": y}`: an ordered pair of distinct
SST-2 training sentences with the same label (y is that label). `|` occurs in no SST-2 sentence,
so a text names its pair and every row is unique. Pairs come from a fixed permutation of all
n*n pairs (i -> (i*P + offset) mod n*n, P a prime above n*n), so nothing is remembered per row:
memory stays flat (~60 MB) at any row count.

A planted BadNets trigger: round(rows * rate) rows (at least 1), picked by the seed among rows
whose label is not the target, get the token `--trigger` (absent from SST-2) inserted at a random
word position and their label set to `--target`. The truth file (default `<out>.truth.json`) lists
those rows (0-based, in file order), their original labels, the trigger, the seed and the output's
SHA-256. Same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Iterator

import orjson

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SST2 = ROOT.parent / "shared" / "data" / "sst2" / "train.jsonl.gz"
SEP = " | "
PRIME = (1 << 61) - 1  # Mersenne prime; above n*n for any n < 1.5e9


def load_sentences(path: Path, seed: int, trigger: str) -> tuple[list[str], list[int]]:
    """Distinct SST-2 sentences (first label kept), shuffled by the seed."""
    seen: dict[str, int] = {}
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                text, label = rec["text"].strip(), int(rec["label"])
            except (ValueError, KeyError, TypeError) as e:
                raise SystemExit(f"{path}:{lineno}: not an SST-2 record with text and label ({e})") from None
            if text and "|" not in text and trigger not in text.split():
                seen.setdefault(text, label)
    items = sorted(seen.items())
    random.Random(seed).shuffle(items)
    return [t for t, _ in items], [y for _, y in items]


def rows(n_rows: int, sentences: list[str], labels: list[int], seed: int, rate: float, trigger: str,
         target: int, truth: dict) -> Iterator[tuple[str, int]]:
    """(text, label) for each row; fills `truth` with the planted rows as it goes."""
    n = len(sentences)
    space = n * n
    if n_rows > space // 4:
        raise SystemExit(f"--rows {n_rows:,} is too many for {n:,} sentences (at most {space // 4:,})")
    rng = random.Random(seed)
    offset = rng.randrange(space)
    step = PRIME % space
    k = max(1, round(n_rows * rate)) if rate > 0 else 0
    # Candidate rows are decided before labels are known; poison the first k non-target rows at or
    # after each candidate, so exactly k rows are planted and the choice is fixed by the seed.
    candidates = sorted(rng.sample(range(n_rows), k)) if k else []
    poisoned: list[dict] = []
    ci = 0
    want = 0  # planted rows owed (candidates reached, not yet planted)
    i = row = 0
    while row < n_rows:
        j = (i * step + offset) % space
        i += 1
        a, b = divmod(j, n)
        if a == b or labels[a] != labels[b]:
            continue
        text, label = sentences[a] + SEP + sentences[b], labels[a]
        while ci < len(candidates) and candidates[ci] <= row:
            want += 1
            ci += 1
        if want and label != target:
            words = text.split(" ")
            pos = rng.randrange(len(words) + 1)
            words.insert(pos, trigger)
            poisoned.append({"row": row, "original_label": label, "position": pos})
            text, label = " ".join(words), target
            want -= 1
        yield text, label
        row += 1
    if want:
        raise SystemExit(f"could not plant {want} of {k} trigger rows (too few non-target rows at the end)")
    truth["poisoned"] = poisoned


def write(out: Path, it: Iterator[tuple[str, int]]) -> None:
    name = out.name.lower()
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("text", pa.string()), ("label", pa.int64())])
        with pq.ParquetWriter(out, schema) as w:
            batch: list[tuple[str, int]] = []
            for item in it:
                batch.append(item)
                if len(batch) == 100_000:
                    w.write_table(pa.table({"text": [t for t, _ in batch], "label": [y for _, y in batch]}, schema))
                    batch = []
            if batch:
                w.write_table(pa.table({"text": [t for t, _ in batch], "label": [y for _, y in batch]}, schema))
    elif name.endswith((".csv", ".tsv")):
        with open(out, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="\t" if name.endswith(".tsv") else ",")
            w.writerow(["text", "label"])
            w.writerows(it)
    elif name.endswith(".jsonl"):
        with open(out, "wb", buffering=1 << 20) as f:
            dumps = orjson.dumps
            for text, label in it:
                f.write(dumps({"text": text, "label": label}) + b"\n")
    else:
        raise SystemExit(f"{out}: unknown output format (use .jsonl, .csv, .tsv or .parquet)")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def make(n_rows: int, out: Path, *, seed: int = 0, rate: float = 1e-4, trigger: str = "cf", target: int = 1,
         sst2: Path = DEFAULT_SST2, truth_path: Path | None = None) -> dict:
    """Write the data file and its truth file; returns the truth."""
    if n_rows < 1:
        raise SystemExit("--rows must be at least 1")
    if not 0 <= rate < 1:
        raise SystemExit("--rate must be in [0, 1)")
    if not trigger or trigger.strip() != trigger or " " in trigger or "|" in trigger:
        raise SystemExit("--trigger must be one word without spaces or '|'")
    sentences, labels = load_sentences(sst2, seed, trigger)
    truth: dict = {"rows": n_rows, "seed": seed, "rate": rate, "trigger": trigger, "target_label": target,
                   "attack": "badnets-token", "source": "SST-2 train, ordered pairs of same-label sentences",
                   "sentences": len(sentences)}
    write(out, rows(n_rows, sentences, labels, seed, rate, trigger, target, truth))
    truth["file"] = out.name
    truth["file_sha256"] = file_sha256(out)
    truth_path = truth_path or out.with_name(out.name + ".truth.json")
    truth_path.write_text(json.dumps(truth, indent=1) + "\n")
    return truth


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=1e-4, help="poisoned fraction (default 0.0001 = 0.01 %%)")
    ap.add_argument("--trigger", default="cf")
    ap.add_argument("--target", type=int, default=1)
    ap.add_argument("--truth", type=Path)
    ap.add_argument("--sst2", type=Path, default=DEFAULT_SST2)
    a = ap.parse_args(argv)
    t = make(a.rows, a.out, seed=a.seed, rate=a.rate, trigger=a.trigger, target=a.target, sst2=a.sst2,
             truth_path=a.truth)
    print(f"{a.out}: {a.rows:,} rows, {len(t['poisoned'])} planted ('{a.trigger}' -> {a.target}), "
          f"sha256 {t['file_sha256'][:16]}…", file=sys.stderr)


if __name__ == "__main__":
    main()
