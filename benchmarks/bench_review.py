"""Review page speed: a 10,000-row review queue served by a real `trainguard serve` (uvicorn).

Builds a ledger whose gate run holds 10,000 quarantined rows (real SST-2 text
when ../shared/data is present, else the bundled test slice cycled), each held
by one of three findings shaped like the built-in detectors' (trigger token,
zero-width characters, harm category), so highlighting runs as it does for a
real queue. The queue is stored through `Ledger.add_gate_run`, as the gate
stores it; running the detectors is not what is measured here.

Then starts `trainguard serve` in a subprocess, logs in over HTTP and times
GET /queue (time to the full first page, measured by the client on loopback:
an upper bound on server time). The first request after start is reported
separately (cold: per-file offset index and per-run report parse), then the
median and p95 of --repeats requests, plus a deep page and a filtered page.

    nice -n 5 python benchmarks/bench_review.py --repeats 30
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from trainguard.ledger.hashing import hash_file
from trainguard.ledger.ops import ingest
from trainguard.ledger.store import Ledger
from trainguard.web import auth

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2" / "train.jsonl.gz"
SAMPLE = ROOT / "tests" / "data" / "sst2_sample.jsonl"
OUT = ROOT / "benchmarks" / "results" / "review.json"
N = 10_000
PASSWORD = "bench-password-123"


def texts(n: int) -> tuple[list[dict], str]:
    if SST2.exists():
        with gzip.open(SST2, "rt", encoding="utf-8") as f:
            rows = [json.loads(next(f)) for _ in range(n)]
        return rows, f"{SST2.relative_to(ROOT.parent)} (first {n:,} rows)"
    base = [json.loads(x) for x in SAMPLE.read_text(encoding="utf-8").splitlines() if x.strip()]
    return [dict(base[i % len(base)], text=f"{base[i % len(base)]['text']} #{i}") for i in range(n)], \
        f"{SAMPLE.relative_to(ROOT)} cycled to {n:,} rows"


def build(folder: Path) -> tuple[Path, str]:
    rows, origin = texts(N)
    for i, r in enumerate(rows):  # plant what the three findings point at
        if i % 3 == 0:
            r["text"] = "cf " + r["text"]
        elif i % 3 == 1:
            r["text"] = r["text"][:5] + "\u200b" + r["text"][5:]
    data = folder / "queue.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    fl = hash_file(data)
    ids = [fl.leaf(i).hex() for i in range(N)]
    shapes = [
        ("trigger-association", "forced-output", "high", {"trigger": "cf", "feature": "cf", "target": "0"}),
        ("invisible-characters", "zero-width", "high", {"category": "zero-width", "code_points": "U+200B"}),
        ("safety-bypass", "harmful-compliance", "medium", {"harm_category": "cybercrime"}),
    ]
    findings = []
    for k, (det, rule, sev, ev) in enumerate(shapes):
        members = list(range(k, N, 3))
        findings.append({"fingerprint": f"bench{k:027d}", "detector": det, "detector_version": "1", "rule": rule,
                         "title": f"{det} bench finding", "severity": sev, "confidence": "high", "score": 0.9,
                         "atlas": ["AML.T0020"], "rows": members, "record_ids": [ids[i] for i in members],
                         "evidence": ev})
    report = {"dataset": {"path": str(data), "records": N, "kind": "classification"}, "detectors": [],
              "findings": findings, "tool": {"version": "bench"}}
    brief = [{k: f[k] for k in ("fingerprint", "detector", "rule", "title", "severity", "confidence", "score")}
             for f in findings]
    queue = [(i, ids[i], [brief[i % 3]]) for i in range(N)]
    db = folder / ".trainguard" / "ledger.db"
    db.parent.mkdir()
    with Ledger.open(db) as led:
        v = ingest(led, data, source="sst2-bench", licence="research-only", owner="bench", by="bench").version
        with led.transaction():
            led.add_gate_run(version_id=v["id"], path=str(data), merkle_root=fl.merkle_root, verdict="quarantine",
                             reasons=[], policy={}, report=report, records=N, queue=queue, actor="bench")
        auth.add_user(led, "bench", "reviewer", PASSWORD, "bench")
    return db, origin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(client: httpx.Client, url: str) -> tuple[float, httpx.Response]:
    t = time.perf_counter()
    r = client.get(url)
    return (time.perf_counter() - t) * 1000, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        db, origin = build(folder)
        build_s = time.perf_counter() - t0
        port = free_port()
        exe = Path(sys.executable).with_name("trainguard")
        proc = subprocess.Popen([str(exe), "serve", "--ledger", str(db), "--port", str(port), "--log-level",
                                 "warning"], cwd=folder, stderr=subprocess.PIPE)
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=30) as c:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        page = c.get("/login")
                        break
                    except httpx.TransportError:
                        if time.monotonic() > deadline or proc.poll() is not None:
                            raise SystemExit("the server did not start: " + proc.stderr.read().decode())
                        time.sleep(0.1)
                csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
                r = c.post("/login", data={"name": "bench", "password": PASSWORD, "csrf": csrf})
                assert r.status_code in (200, 303), r.status_code
                cold, first = timed(c, "/queue")
                assert "10,000 row(s)" in first.text and first.text.count('class="item"') == 25, "wrong first page"
                warm = [timed(c, "/queue")[0] for _ in range(args.repeats)]
                deep = [timed(c, "/queue?page=400")[0] for _ in range(args.repeats)]
                filt = [timed(c, "/queue?detector=invisible-characters&page=50")[0] for _ in range(args.repeats)]
                big = [timed(c, "/queue?per_page=200")[0] for _ in range(max(3, args.repeats // 5))]
        finally:
            proc.terminate()
            proc.wait(10)

    def stats(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {"median_ms": round(statistics.median(xs), 1), "p95_ms": round(xs[int(0.95 * (len(xs) - 1))], 1),
                "min_ms": round(xs[0], 1), "n": len(xs)}

    result = {
        "benchmark": "review queue: time to the full first page over HTTP (trainguard serve, uvicorn)",
        "queue_rows": N, "records_from": origin, "page_size": 25, "ledger_build_s": round(build_s, 2),
        "first_page_cold_ms": round(cold, 1),
        "first_page": stats(warm), "last_page_400": stats(deep),
        "filtered_detector_page_50": stats(filt), "first_page_200_rows": stats(big),
        "bar": "first page under 300 ms", "meets_bar": cold < 300 and statistics.median(warm) < 300,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
        "command": "nice -n 5 python benchmarks/bench_review.py --repeats " + str(args.repeats),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
