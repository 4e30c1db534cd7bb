"""End-to-end scan speed with the default detector set, one table that says which commit it measured.

Each case runs in a fresh Python process, so import time, model loading and peak RSS are its own, with the
embedding cache in a fresh directory (cold: every vector computed) and then again with that directory filled
(warm: what a re-scan of the same data pays). Figures are wall seconds of load + scan, CPU seconds
(user + system), rows per second, peak RSS and seconds per detector; the 1-minute load average before each
run is printed beside it, because 2 shared cores make wall time depend on whoever else runs.

    python benchmarks/bench_speed.py ../shared/data --out benchmarks/results/speed.json --md docs/_bench_speed.md
    python benchmarks/bench_speed.py ../shared/data --cases sst2 --md -        # one case, table to stdout

Cases (the issue-14 bars beside them): SST-2 train, all 67,349 rows as classification data (>= 10,000
rows/s); MedQuAD, all 16,407 question/answer pairs as instruction data; hh-rlhf harmless-base test, 2,312
preference pairs (<= 60 s cold).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = {
    # name: (file under the shared data folder, load options, bar)
    "sst2": ("sst2/train.jsonl.gz", {}, ("rows_per_s", ">=", 10_000)),
    "medquad": ("medquad/medquad.jsonl.gz",
                {"kind": "instruction", "fields": {"text": "question", "response": "answer"}}, None),
    "hh-rlhf": ("hh-rlhf/harmless-base-test.jsonl.gz", {}, ("cold_wall_s", "<=", 60)),
}


def _child(path: str, options: str, jobs: str) -> None:
    t0 = time.perf_counter()
    import trainguard as tg

    t1 = time.perf_counter()
    data = tg.load(path, **json.loads(options))
    t2 = time.perf_counter()
    report = tg.scan(data, jobs=jobs if jobs == "auto" else int(jobs))
    t3 = time.perf_counter()
    use = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the scan's forked detector processes, if any
    print(json.dumps({
        "rows": len(data), "kind": data.kind.value, "import_s": t1 - t0, "load_s": t2 - t1, "scan_s": t3 - t2,
        "cpu_s": use.ru_utime + use.ru_stime + kids.ru_utime + kids.ru_stime, "peak_rss_mb": use.ru_maxrss / 1024,
        "peak_rss_child_mb": kids.ru_maxrss / 1024,
        "detectors": {d.name: (d.status.value, round(d.seconds, 2)) for d in report.detectors},
        "findings": len(report.findings),
    }))


def run_case(name: str, shared: Path, cache: Path, jobs: str = "auto") -> dict:
    rel, options, _ = CASES[name]
    env = dict(os.environ, TRAINGUARD_CACHE_DIR=str(cache))
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", str(shared / rel), json.dumps(options), jobs],
                         capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"{name}: the scan failed:\n{out.stderr[-3000:]}")
    m = json.loads(out.stdout.strip().splitlines()[-1])
    m.update(wall_s=wall, load_before=load, rows_per_s=m["rows"] / (m["load_s"] + m["scan_s"]))
    return m


def commit() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=HERE, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" (with uncommitted changes)" if git("status", "--porcelain", "--", "src") else "")


def markdown(res: dict) -> str:
    lines = [
        f"Commit {res['commit']}, {res['cpus']} CPU cores, measured {res['date']}. Command: `{res['command']}`.",
        "",
        "Each run is a fresh process: wall = import + model loading + load + scan; rows/s = rows / (load + scan). "
        f"Detectors in {res.get('jobs', '1')} process(es) (`scan(jobs=...)`; `auto`, the CLI's default: one per CPU "
        "from 20,000 rows); CPU s includes those processes, and peak RSS is the scanning process's / the largest "
        "detector process's.",
        "Cold: an empty cache folder (no embeddings, no saved copy of the SmolLM2 weights); "
        "warm: the same folder after the cold run.",
        "",
        "| data | rows | cache | wall s | CPU s | load + scan s | rows/s | peak RSS MB | load avg before | bar |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, case in res["cases"].items():
        bar = CASES[name][2]
        for mode in ("cold", "warm"):
            m = case.get(mode)
            if not m:
                continue
            verdict = ""
            if bar:
                key, op, value = bar
                got = case["cold"]["wall_s"] if key == "cold_wall_s" else m[key]
                if key != "cold_wall_s" or mode == "cold":
                    ok = got >= value if op == ">=" else got <= value
                    verdict = f"{'met' if ok else 'not met'} ({key.replace('_', ' ')} {op} {value:,})"
            lines.append(f"| {name} ({m['kind']}) | {m['rows']:,} | {mode} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | "
                         f"{m['load_s'] + m['scan_s']:.1f} | {m['rows_per_s']:,.0f} | {m['peak_rss_mb']:,.0f}"
                         f"{' / ' + format(m['peak_rss_child_mb'], ',.0f') if m.get('peak_rss_child_mb') else ''} | "
                         f"{m['load_before']:.1f} | {verdict} |")
    lines += ["", "Seconds per detector (cold run; skipped ones are not listed):", ""]
    for name, case in res["cases"].items():
        dets = ", ".join(f"{d} {s}" for d, (status, s) in case["cold"]["detectors"].items() if status != "skipped")
        lines.append(f"- {name}: import {case['cold']['import_s']:.1f}, load {case['cold']['load_s']:.1f}; {dets}")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shared", type=Path, help="the shared data folder (../shared/data)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--no-warm", action="store_true", help="cold runs only")
    ap.add_argument("--out", type=Path, help="results JSON")
    ap.add_argument("--md", help="markdown table: a path, or - for stdout")
    ap.add_argument("--jobs", default="auto", help="scan(jobs=...): auto (the CLI's default) or a number")
    args = ap.parse_args()
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(names) - set(CASES)
    if unknown:
        ap.error(f"unknown case(s) {sorted(unknown)}; known: {', '.join(CASES)}")
    res = {"commit": commit(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "command": "".join(f"{k}={os.environ[k]} " for k in ("OMP_NUM_THREADS",) if k in os.environ)
           + "python benchmarks/bench_speed.py " + " ".join(sys.argv[1:]), "jobs": args.jobs, "cases": {}}
    for name in names:
        with tempfile.TemporaryDirectory(prefix="tg-speed-") as cache:
            case = {"cold": run_case(name, args.shared, Path(cache), args.jobs)}
            print(name, "cold", json.dumps(case["cold"]), flush=True)
            if not args.no_warm:
                case["warm"] = run_case(name, args.shared, Path(cache), args.jobs)
                print(name, "warm", json.dumps(case["warm"]), flush=True)
        res["cases"][name] = case
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")
    if args.md:
        text = markdown(res)
        sys.stdout.write(text) if args.md == "-" else Path(args.md).write_text(text)


if __name__ == "__main__":
    main()
