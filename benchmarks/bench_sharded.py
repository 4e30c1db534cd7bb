"""Sharded scans: in memory vs in-process shards vs a real Dask cluster of 1 and 2 worker processes.

Each configuration runs its driver in a fresh process so peak RSS is its own. Dask modes start a
real `dask scheduler` and N `dask worker --no-nanny --nthreads 1` processes on 127.0.0.1 (torn
down after), and report the bytes the scheduler process read and wrote during the scan (its
/proc/PID/io rchar + wchar: every message through it, task descriptors and results included) and
every process's peak RSS (VmHWM). The input is `benchmarks/make_synthetic.py` output (unique rows,
a planted trigger), written under /tmp and deleted after, or a given --file.

    python benchmarks/bench_sharded.py --rows 1000000 --shard-rows 100000 --out benchmarks/results/sharded.json
    python benchmarks/bench_sharded.py --rows 1000000 --modes shards,dask1,dask2   # skip the in-memory run
    python benchmarks/bench_sharded.py --file /tmp/syn-1m.jsonl --modes memory,shards --md docs/_bench_sharded.md

The detectors are the default set (`--detectors default`: for this classification data
trigger-association, invisible-characters and near-duplicates, all sharded) or a comma-separated list.
Each mode reports wall and CPU seconds (user + system of the driver; Dask modes add the workers'),
CPU microseconds per row and peak RSS per process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = "default"
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def _child(mode: str, path: str, shard_rows: int, address: str, detectors: str = DEFAULT) -> None:
    from trainguard.scan import scan
    from trainguard.findings import Severity
    from trainguard.sharded import scan_sharded

    DETECTORS = None if detectors == DEFAULT else detectors.split(",")
    t0 = time.perf_counter()
    if mode == "memory":
        report = scan(path, detectors=DETECTORS)
    elif mode == "shards":
        report = scan_sharded(path, detectors=DETECTORS, shard_rows=shard_rows)
    else:
        from distributed import Client

        with Client(address, timeout="30s") as client:
            report = scan_sharded(path, detectors=DETECTORS, shard_rows=shard_rows, client=client)
    seconds = time.perf_counter() - t0
    digest = sorted((f.detector, f.rule, f.rows, f.record_ids, f.lines) for f in report.findings)
    use = resource.getrusage(resource.RUSAGE_SELF)
    flagged = {r for f in report.findings if f.severity >= Severity.HIGH for r in f.rows}
    truth = Path(path + ".truth.json")
    planted = {p["row"] for p in json.loads(truth.read_text())["poisoned"]} if truth.exists() else None
    print(json.dumps({"records": report.dataset.records, "seconds": seconds, "cpu_s": use.ru_utime + use.ru_stime,
                      "peak_rss_mb": use.ru_maxrss / 1024, "findings": len(report.findings),
                      "flagged_high": len(flagged),
                      "planted_found": None if planted is None else len(planted & flagged), "failed": [r.name for r in report.failed],
                      "status": {r.name: r.status.value for r in report.detectors},
                      "row_scores": hashlib.sha256(b"".join(report.row_scores[k].tobytes()
                                                            for k in sorted(report.row_scores))).hexdigest(),
                      "digest": hashlib.sha256(str(digest).encode()).hexdigest(),
                      "full_digest": _full_digest(report),
                      "summaries": {r.name: dict(r.summary or {}) for r in report.detectors}}))


def _full_digest(report) -> str:
    """sha256 of every finding as the JSON report writes it (rows, ids, lines, severity, score, evidence)."""
    body = json.dumps([f.to_dict() for f in report.findings], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _proc(pid: int) -> dict:
    """rchar+wchar bytes, peak RSS and CPU seconds of a live process, from /proc."""
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return {"io_bytes": int(io["rchar"]) + int(io["wchar"]), "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
            "cpu_s": (int(stat[11]) + int(stat[12])) / tick}


def _warm() -> None:
    import trainguard.detectors.builtin  # noqa: F401
    import trainguard.sharded  # noqa: F401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_run(mode: str, path: Path, shard_rows: int, workers: int, logs: Path, detectors: str = DEFAULT) -> dict:
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    cmds = [[str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]]
    cmds += [[str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
              "--host", "127.0.0.1", "--memory-limit", "0"] for _ in range(workers)]
    procs = [subprocess.Popen(c, stdout=open(logs / f"{mode}-{i}.log", "w"), stderr=subprocess.STDOUT)
             for i, c in enumerate(cmds)]
    try:
        from distributed import Client

        with Client(address, timeout="60s") as probe:
            probe.wait_for_workers(workers, timeout=120)
            probe.run(_warm)  # imports done before timing, as on a long-lived cluster
        before = _proc(procs[0].pid)
        worker_before = [_proc(p.pid)["cpu_s"] for p in procs[1:]]
        out = subprocess.run([sys.executable, __file__, "--child", mode, str(path), str(shard_rows), address, detectors],
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        after = _proc(procs[0].pid)
        ws = [_proc(p.pid) for p in procs[1:]]
        result.update(scheduler_bytes=after["io_bytes"] - before["io_bytes"],
                      scheduler_peak_rss_mb=after["peak_rss_mb"],
                      worker_peak_rss_mb=[w["peak_rss_mb"] for w in ws],
                      worker_cpu_s=[w["cpu_s"] - b for w, b in zip(ws, worker_before)])
        return result
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--file", type=Path, help="scan this file instead of generating one")
    ap.add_argument("--shard-rows", type=int, default=100_000)
    ap.add_argument("--modes", default="memory,shards,dask1,dask2")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--md", type=Path, help="also write the docs table here")
    ap.add_argument("--detectors", default=DEFAULT, help="'default' (the default set) or a comma-separated list")
    ap.add_argument("--child", nargs=5)
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], int(args.child[2]), args.child[3], args.child[4])
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        path = args.file
        if path is None:
            path = Path(tmp) / f"syn-{args.rows}.jsonl"
            subprocess.run([sys.executable, str(HERE / "make_synthetic.py"), "--rows", str(args.rows),
                            "--out", str(path)], check=True)
        truth = Path(str(path) + ".truth.json")
        planted = [p["row"] for p in json.loads(truth.read_text())["poisoned"]] if truth.exists() else None
        results = {}
        for mode in args.modes.split(","):
            load = os.getloadavg()
            if mode.startswith("dask"):
                r = _cluster_run(mode, path, args.shard_rows, int(mode[4:]), Path(tmp), args.detectors)
            else:
                out = subprocess.run([sys.executable, __file__, "--child", mode, str(path), str(args.shard_rows),
                                      "-", args.detectors], capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
            r["load_average_before"] = load
            results[mode] = r
            extra = ""
            if mode.startswith("dask"):
                extra = (f"  scheduler {r['scheduler_bytes'] / 1e6:,.1f} MB through, peak {r['scheduler_peak_rss_mb']:,.0f} MB;"
                         f" workers peak {', '.join(f'{m:,.0f}' for m in r['worker_peak_rss_mb'])} MB")
            print(f"{mode:7s} {r['records']:,} rows  {r['seconds']:,.1f} s  cpu {_cpu(r):,.1f} s  "
                  f"{r['records'] / r['seconds']:,.0f} rows/s  "
                  f"driver peak {r['peak_rss_mb']:,.0f} MB  findings {r['findings']}  planted found "
                  f"{r['planted_found']}{extra}  (load {load[0]:.1f})", flush=True)
    same = len({r["digest"] for r in results.values()}) == 1
    same_scores = len({r["row_scores"] for r in results.values()}) == 1
    print(f"identical findings (rows, ids, lines) across modes: {same}; identical row scores: {same_scores}")
    if "dask1" in results and "dask2" in results:
        print(f"dask speed-up 2 vs 1 workers: {results['dask1']['seconds'] / results['dask2']['seconds']:.2f}x")
    rows = next(iter(results.values()))["records"] if results else args.rows
    summary = {"commit": commit, "rows": rows, "shard_rows": args.shard_rows, "identical_findings": same,
               "identical_row_scores": same_scores, "detectors": args.detectors,
               "planted": None if planted is None else len(planted), "load_average_after": os.getloadavg(),
               "results": results}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))
    if args.md:
        args.md.write_text(markdown(summary))


MODES = {"memory": "in memory (`trainguard scan`)", "shards": "in-process shards (`--shard-rows`)",
         "dask1": "Dask, 1 worker process (`--scheduler`)", "dask2": "Dask, 2 worker processes (`--scheduler`)"}


def _cpu(r: dict) -> float:
    """CPU seconds of the scan: the driver's, plus the workers' on a cluster."""
    return r["cpu_s"] + sum(r.get("worker_cpu_s", ()))


def markdown(summary: dict) -> str:
    """The docs table for one run, with the commit and loads it was measured at."""
    rows = ["| mode | wall s | CPU s | CPU µs/row | rows/s | driver peak RSS | scheduler: bytes through, peak RSS "
            "| worker peak RSS | planted rows found (high) | findings identical |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, r in summary["results"].items():
        sched = (f"{r['scheduler_bytes'] / 1e6:,.1f} MB, {r['scheduler_peak_rss_mb']:,.0f} MB"
                 if "scheduler_bytes" in r else "-")
        workers = ", ".join(f"{m:,.0f} MB" for m in r.get("worker_peak_rss_mb", ())) or "-"
        found = "-" if r.get("planted_found") is None else f"{r['planted_found']} / {summary['planted']}"
        rows.append(f"| {MODES.get(mode, mode)} | {r['seconds']:,.0f} | {_cpu(r):,.0f} "
                    f"| {1e6 * _cpu(r) / r['records']:,.0f} | {r['records'] / r['seconds']:,.0f} "
                    f"| {r['peak_rss_mb']:,.0f} MB | {sched} | {workers} | {found} "
                    f"| {summary['identical_findings'] and summary.get('identical_row_scores', True)} |")
    loads = ", ".join(f"{r['load_average_before'][0]:.1f}" for r in summary["results"].values())
    dets = summary.get("detectors", DEFAULT)
    dets = "the default detector set" if dets == DEFAULT else f"detectors {dets}"
    return ("\n".join(rows) + f"\n\n{summary['rows']:,} rows, shards of {summary['shard_rows']:,}, {dets}, commit "
            f"{summary['commit']}, 1-minute load average before each mode: {loads}. Findings identical: the same "
            f"findings (rows, record ids, lines) and bit-identical row scores in every mode.\n")


if __name__ == "__main__":
    main()
