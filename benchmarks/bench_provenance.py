"""Ledger throughput and memory: ingest and verify of 1M ~500-byte JSONL records.

    python benchmarks/bench_provenance.py [--records 1000000] [--workdir /tmp/tg-bench]
    python benchmarks/bench_provenance.py --carry-over 1000000   # review-carry lookup, index vs none
    python benchmarks/bench_provenance.py --scale 10000000        # 10M SST-2 rows (make_synthetic.py)
    python benchmarks/bench_provenance.py --scale 1000000 --scale 3000000   # the slope, when 10M is too long

Compares against a bare `hashlib.sha256` per-line pass over the same file in
one Python process (the bar: ingest and verify at >= 50 % of its speed, peak
memory < 500 MB). Each operation runs in a fresh subprocess so its peak RSS
(its own plus its worker processes') is its own. Writes benchmarks/out/
provenance.json and docs/_bench_provenance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generate(path: Path, n: int, seed: int = 0) -> None:
    """~500-byte instruction-style records with varied text (deterministic)."""
    rng = random.Random(seed)
    words = [w for w in "the of and to in is was for on that with as by at from this model data review text "
             "patient dose answer question result study effect treatment table figure method value".split()]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            target = rng.randint(380, 470)
            parts: list[str] = []
            size = 0
            while size < target:
                w = rng.choice(words)
                parts.append(w)
                size += len(w) + 1
            text = " ".join(parts)
            f.write(json.dumps({"id": i, "prompt": text[: len(text) // 3], "response": text[len(text) // 3:],
                                "source": "bench"}) + "\n")


def edit(src: Path, dst: Path, rows: list[int]) -> None:
    with open(src, "rb") as f, open(dst, "wb") as g:
        for i, line in enumerate(f):
            if i in rows:
                line = line.replace(b'"source": "bench"', b'"source": "EDITED"')
            g.write(line)


def child(op: str, data: str, ledger: str) -> None:
    """Runs one operation and prints its timing and peak memory as JSON.

    `OP:N` runs OP with N hashing processes (ingest:1 is the single-process path)."""
    import hashlib

    from trainguard.ledger import Ledger, hash_file, ingest, verify

    op, _, w = op.partition(":")
    workers = int(w) if w else None
    t0 = time.perf_counter()
    extra: dict = {}
    if op == "hash":  # gate's provenance step: leaves, root and file digest, nothing written
        fl = hash_file(data, workers=workers)
        extra.update(records=fl.count, merkle_root=fl.merkle_root)
    elif op == "bare":
        n = 0
        with open(data, "rb") as f:
            for line in f:
                hashlib.sha256(line).digest()
                n += 1
        extra["records"] = n
    else:
        with Ledger.open(ledger) as led:
            if op == "ingest":
                r = ingest(led, data, name="bench.jsonl", by="bench", workers=workers)
                extra["records"] = r.version["records"]
            else:
                r = verify(led, data, name="bench.jsonl", workers=workers)
                d = r.diff
                extra.update(records=r.records, ok=r.ok, modified=d.modified[:5], inserted=len(d.inserted),
                             deleted=len(d.deleted), moved=len(d.moved))
    seconds = time.perf_counter() - t0
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"op": op, "seconds": seconds, "peak_rss_mb": own, "worker_peak_rss_mb": kids, **extra}))


def replace_section(heading: str, md: list[str]) -> None:
    """Write `md` as the `heading` section of docs/_bench_provenance.md, keeping the other sections
    (each mode of this script owns one)."""
    doc = ROOT / "docs" / "_bench_provenance.md"
    doc.parent.mkdir(exist_ok=True)
    text = doc.read_text() if doc.exists() else ""
    sections = ["## " + x for x in ("\n" + text).split("\n## ")[1:]]
    body = "\n".join(md).rstrip("\n") + "\n"
    for i, sec in enumerate(sections):
        if sec.startswith(heading):
            sections[i] = body
            break
    else:
        sections.append(body)
    doc.write_text("\n".join(x.rstrip("\n") + "\n" for x in sections))


CARRY_HEADING = "## Carrying review decisions over: lookup by leaf hash"
# The lookup as trainguard ran it before schema v3 (no leaf index; the planner walked every decided
# row): kept only to measure "before".
V2_LOOKUP = ("SELECT r.* FROM reviews r JOIN wanted_leaves w ON w.leaf = r.leaf JOIN events e ON e.seq = r.event_seq"
             " WHERE r.status != 'pending' AND json_extract(e.payload, '$.carried_from') IS NULL ORDER BY r.event_seq")


def v2_lookup(led, leaves: set[str]) -> dict:
    led.conn.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_leaves(leaf TEXT PRIMARY KEY)")
    led.conn.execute("DELETE FROM wanted_leaves")
    led.conn.executemany("INSERT INTO wanted_leaves(leaf) VALUES (?)", [(x,) for x in leaves])
    return {r["leaf"]: dict(r) for r in led.conn.execute(V2_LOOKUP)}


def carry_over(n: int, work: Path, queue_sizes: tuple[int, ...] = (1, 1000), repeat: int = 3) -> list[dict]:
    """Time the carry-over lookup each gate run makes on `n` decided review rows: today's
    `Ledger.latest_human_decisions` (schema v3, `reviews_leaf` index) against the query and schema
    before it (v2). Rows are written straight into SQLite: the lookup does not read the chain, so
    a synthetic table times it faithfully."""
    import hashlib

    from trainguard.ledger import Ledger

    db = work / "carry.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with Ledger.open(db) as led, led.transaction():
        con = led.conn
        con.execute("INSERT INTO events(seq, ts, kind, actor, payload, prev_hash, hash) VALUES (1, '', 'review', 'b',"
                    " '{}', '', '')")
        con.execute("INSERT INTO gate_runs(id, path, merkle_root, verdict, reasons, policy, policy_sha256, report,"
                    " report_sha256, queued, records, by, at, event_seq) VALUES (1,'','','pass','[]','','','','',0,0,"
                    "'','',1)")
        leaf = [hashlib.sha256(i.to_bytes(8, "big")).hexdigest() for i in range(n)]
        con.executemany("INSERT INTO reviews(gate_run_id, row, leaf, findings, status, decided_by, reason,"
                        " decided_at, event_seq) VALUES (1, ?, ?, '[]', 'approved', 'b', 'ok', '', 1)",
                        ((i, leaf[i]) for i in range(n)))
    rng = random.Random(1)
    out = []
    for indexed in (True, False):
        with Ledger.open(db) as led:
            if not indexed:
                led.conn.execute("DROP INDEX IF EXISTS reviews_leaf")
            lookup = led.latest_human_decisions if indexed else (lambda w, led=led: v2_lookup(led, w))
            for q in queue_sizes:
                wanted = {leaf[rng.randrange(n)] for _ in range(q)}
                times = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    found = lookup(wanted)
                    times.append(time.perf_counter() - t0)
                assert len(found) == len(wanted)
                out.append({"index": indexed, "review_rows": n, "queued_leaves": q, "best_seconds": min(times)})
                print(f"carry-over, {'with' if indexed else 'without'} index, {q} leaves: {min(times):.4f} s",
                      file=sys.stderr)
    db.unlink()
    return out


def write_carry(rows: list[dict], n: int) -> None:
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "provenance_carry.json").write_text(json.dumps(rows, indent=2))
    by = {(r["index"], r["queued_leaves"]): r["best_seconds"] for r in rows}
    md = [CARRY_HEADING, "",
          f"`Ledger.latest_human_decisions` (each gate run's carry-over lookup) on a ledger of {n:,} decided "
          f"review rows; {os.cpu_count()} CPUs, Python {platform.python_version()}; best of 3.", "",
          "| leaves queued by the gate | before: v2 query, no index (ms) | after: `reviews_leaf` index (ms) | speed-up |",
          "|---|---|---|---|"]
    for q in sorted({r["queued_leaves"] for r in rows}):
        before, after = by[(False, q)], by[(True, q)]
        md.append(f"| {q:,} | {before * 1e3:,.2f} | {after * 1e3:,.2f} | {before / max(after, 1e-9):,.0f}x |")
    md += ["", f"Command: `python benchmarks/bench_provenance.py --carry-over {n}`", ""]
    replace_section(CARRY_HEADING, md)
    print("\n".join(md))


SCALE_HEADING = "## Provenance at scale: ingest and verify of millions of SST-2 rows"


def scale(sizes: list[int], work: Path, repeat: int, keep: bool) -> list[dict]:
    """ingest / verify / hash at each size on make_synthetic.py files, each op in a fresh process."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from make_synthetic import make

    out = []
    for n in sizes:
        data = work / f"syn-{n}.jsonl"
        if not data.exists():
            print(f"generating {data} ...", file=sys.stderr)
            make(n, data)
        edited = work / f"syn-{n}-edited.jsonl"
        edit_one(data, edited, n // 2)
        one, two = work / "scale-ledger.db", work / "scale-ledger-2.db"  # each ingest into an empty ledger
        for rep in range(repeat):
            _drop(one, two)
            load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
            for op, path, ledger, label in (
                    ("bare", data, one, "bare per-line sha256"), ("hash:1", data, one, "hash, 1 process"),
                    ("hash:2", data, one, "hash, 2 processes"), ("ingest", data, one, "ingest"),
                    ("verify", data, one, "verify (unchanged)"), ("verify", edited, one, "verify (1 record modified)"),
                    ("ingest:2", data, two, "ingest, 2 processes"),
                    ("verify:2", edited, two, "verify (1 record modified), 2 processes")):
                r = run(op, path, ledger)
                r.update(rows=n, label=label, rep=rep, load=load, file_mb=round(data.stat().st_size / 1e6, 1))
                out.append(r)
                print(f"[{n:,} #{rep}] {label}: {r['seconds']:.2f} s, peak {r['peak_rss_mb']:.0f} MB "
                      f"(+ worker {r['worker_peak_rss_mb']:.0f} MB), load {load}", file=sys.stderr)
        if not keep:
            data.unlink()
            data.with_name(data.name + ".truth.json").unlink(missing_ok=True)
        edited.unlink()
        _drop(one, two)
    return out


def _drop(*ledgers: Path) -> None:
    for db in ledgers:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)


def edit_one(src: Path, dst: Path, row: int) -> None:
    """Copy `src` with one record's label changed (streamed: the file may be GBs)."""
    with open(src, "rb") as f, open(dst, "wb") as g:
        for i, line in enumerate(f):
            if i == row:
                line = line.replace(b'"label":0', b'"label":9').replace(b'"label":1', b'"label":9')
            g.write(line)


def write_scale(rows: list[dict], commit: str) -> None:
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "provenance_scale.json").write_text(json.dumps({"commit": commit, "runs": rows}, indent=2))
    sizes = sorted({r["rows"] for r in rows})
    md = [SCALE_HEADING, "",
          f"Commit `{commit}`; {os.cpu_count()} CPUs shared with other jobs (1-minute load average at each "
          f"repeat: {', '.join(sorted({r['load'] for r in rows}))}), Python {platform.python_version()}. Files from "
          "`benchmarks/make_synthetic.py` (unique SST-2 sentence pairs, ~130 bytes a row). Best of the repeats, "
          "each operation in a fresh process; `bare` (a `for line in f: sha256(line)` loop in one process) is "
          "measured in the same run, and the ratio is bare time / operation time (the bar: >= 0.50 for "
          "ingest and verify, peak RSS <= 500 MB).", "",
          "| rows | file MB | operation | best s | rows/s | ratio to bare | peak RSS MB (main + largest worker) |",
          "|---|---|---|---|---|---|---|"]
    for n in sizes:
        here = [r for r in rows if r["rows"] == n]
        bare = min(r["seconds"] for r in here if r["label"].startswith("bare"))
        for label in dict.fromkeys(r["label"] for r in here):
            rs = [r for r in here if r["label"] == label]
            best = min(r["seconds"] for r in rs)
            md.append(f"| {n:,} | {rs[0]['file_mb']} | {label} | {best:.2f} | {n / best:,.0f} | {bare / best:.2f} | "
                      f"{max(r['peak_rss_mb'] for r in rs):.0f} + {max(r['worker_peak_rss_mb'] for r in rs):.0f} |")
    md += ["", "Command: `python benchmarks/bench_provenance.py " + " ".join(f"--scale {n}" for n in sizes) + "`", ""]
    replace_section(SCALE_HEADING, md)
    print("\n".join(md))


def run(op: str, data: Path, ledger: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", op, str(data), str(ledger)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def costs(leaves: int, work: Path, lines: int = 1_000_000) -> None:
    """Where ingest's time goes: the leaf write into SQLite by page size, and hashlib's per-record costs.

    Prints seconds; docs/benchmarks.md quotes them (`--costs 10000000`).
    """
    import hashlib

    import numpy as np

    from trainguard.ledger import Ledger, merkle, store

    rng = np.random.default_rng(0)
    pieces = [rng.bytes(min(merkle.BLOCK_LEAVES, leaves - i) * 32) for i in range(0, leaves, merkle.BLOCK_LEAVES)]
    root = merkle.block_roots_root([merkle.root(x) for x in pieces]).hex()
    saved = store.PAGE_SIZE
    try:
        for page in (4096, 65536, 4096, 65536):
            store.PAGE_SIZE = page
            db = work / "costs-ledger.db"
            _drop(db)
            with Ledger.open(db) as led:
                t = time.perf_counter()
                with led.transaction():
                    led.add_version("costs", "costs.jsonl", "jsonl", pieces, root, "0" * 64, 0, "bench")
                print(f"leaf write, {leaves:,} leaves, {page // 1024} KiB pages: {time.perf_counter() - t:.2f} s")
            _drop(db)
    finally:
        store.PAGE_SIZE = saved
    data = [rng.bytes(65).hex().encode() for _ in range(lines)]
    unit = b"\n".join(data) + b"\n"
    from trainguard.ledger.hashing import _hash_unit

    t = time.perf_counter()
    for line in data:
        hashlib.sha256(line).digest()
    bare = time.perf_counter() - t
    t = time.perf_counter()
    packed, _, _ = _hash_unit((unit, 1 << 20))
    leaf = time.perf_counter() - t
    t = time.perf_counter()
    merkle.root(packed)
    tree = time.perf_counter() - t
    print(f"per record, {lines:,} lines of 130 bytes: bare sha256 {bare / lines * 1e6:.2f} us, leaf "
          f"{leaf / lines * 1e6:.2f} us, its share of tree nodes {tree / lines * 1e6:.2f} us")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/tg-bench")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", nargs=3, metavar=("OP", "DATA", "LEDGER"))
    ap.add_argument("--carry-over", type=int, metavar="ROWS", help="only the carry-over lookup benchmark")
    ap.add_argument("--scale", type=int, action="append", metavar="ROWS",
                    help="ingest/verify at this many synthetic SST-2 rows (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the --scale data files in --workdir")
    ap.add_argument("--costs", type=int, metavar="LEAVES",
                    help="only the cost breakdown: leaf write by SQLite page size, per-record hash costs")
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.carry_over:
        write_carry(carry_over(args.carry_over, work), args.carry_over)
        return
    if args.costs:
        costs(args.costs, work)
        return
    if args.scale:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip() or "unknown"
        write_scale(scale(args.scale, work, args.repeat, args.keep), commit)
        return
    data = work / f"bench-{args.records}.jsonl"
    if not data.exists():
        print(f"generating {data} ...", file=sys.stderr)
        generate(data, args.records)
    n = args.records
    one = work / "one-modified.jsonl"
    edit(data, one, [n // 2])
    ends = work / "ends-modified.jsonl"
    edit(data, ends, [0, n - 1])
    ledger = work / "ledger.db"
    results: dict[str, list[dict]] = {}
    for rep in range(args.repeat):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{ledger}{suffix}").unlink(missing_ok=True)
        for op, path in (("bare", data), ("ingest", data), ("verify", data), ("verify", one), ("verify", ends)):
            label = op if op != "verify" else {data: "verify (unchanged)", one: "verify (1 record modified)",
                                               ends: "verify (first + last modified)"}[path]
            r = run(op, path, ledger)
            results.setdefault(label, []).append(r)
            print(f"[{rep}] {label}: {r['seconds']:.3f} s, peak {r['peak_rss_mb']:.0f} MB "
                  f"(+ workers {r['worker_peak_rss_mb']:.0f} MB)", file=sys.stderr)
    size = data.stat().st_size
    base = min(r["seconds"] for r in results["bare"])
    rows = []
    for label, rs in results.items():
        best = min(r["seconds"] for r in rs)
        rows.append({"operation": label, "best_seconds": round(best, 3),
                     "median_seconds": round(sorted(r["seconds"] for r in rs)[len(rs) // 2], 3),
                     "records_per_s": round(n / best), "mb_per_s": round(size / 1e6 / best, 1),
                     "speed_vs_bare": round(base / best, 2),
                     "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rs)),
                     "worker_peak_rss_mb": round(max(r["worker_peak_rss_mb"] for r in rs)),
                     "result": {k: v for k, v in rs[-1].items() if k in ("ok", "modified", "inserted", "deleted",
                                                                           "moved")}})
    meta = {"records": n, "file_mb": round(size / 1e6, 1), "mean_record_bytes": round(size / n),
            "cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
            "repeats": args.repeat, "command": f"python benchmarks/bench_provenance.py --records {n}"}
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "provenance.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    md = [
        "## Provenance ledger: ingest and verify",
        "",
        f"{n:,} JSONL records, {meta['file_mb']} MB (mean {meta['mean_record_bytes']} bytes/record); "
        f"{meta['cpus']} CPUs, Python {meta['python']}; best of {args.repeat} runs, each in a fresh process "
        "(wall time of the library call, excluding interpreter start-up).",
        "",
        "| operation | best s | records/s | MB/s | speed vs bare sha256 pass | peak RSS MB (main + workers) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(f"| {r['operation']} | {r['best_seconds']} | {r['records_per_s']:,} | {r['mb_per_s']} | "
                  f"{r['speed_vs_bare']:.2f}x | {r['peak_rss_mb']} + {r['worker_peak_rss_mb']} |")
    md += ["", "`bare` is `for line in f: hashlib.sha256(line).digest()` in one process: the bar is >= 0.50x for "
           "ingest and verify and < 500 MB peak. Ingest and verify hash records in one worker process per CPU "
           "(file shards), build the RFC 6962 tree and the whole-file SHA-256, and (ingest) write the leaves "
           "to SQLite in one transaction; verify compares Merkle roots and, when they differ, diffs the "
           "32-byte leaves with numpy.", "", f"Command: `{meta['command']}`", ""]
    replace_section(md[0], md)
    print("\n".join(md))


if __name__ == "__main__":
    main()
