"""Sharded scans of instruction, preference and document files: the whole default set, in memory vs shards.

Three real files, each with attacks planted by trainguard's own simulators (so the LLM-era detectors have
findings to agree on), written under a temporary folder and deleted after:

- MedQuAD, all 16,407 question/answer pairs as instruction data, in five contiguous blocks, each poisoned
  by one attack: safety-bypass (50 AdvBench behaviours answered), polarity-trigger ("James Bond", 100),
  payload (append "as the clinic now advises", 80), covert-encoding (base64, 30), covert-persona (system
  prompt, 30);
- hh-rlhf harmless-base test, 2,312 preference pairs, 46 (2 %) flipped behind the trigger "sudo";
- a RAG store: the 16,407 MedQuAD answers plus 250 question-style and 250 paraphrased poisoned passages
  (bench_rag_variants' targets, seed 0).

Each file goes through `benchmarks/bench_sharded.py --modes memory,shards` (each mode a fresh process,
each with its own empty embedding cache, so both pay every model load and embedding), and one table says
whether findings and row scores were identical, what was found, the time and the peak RSS.

    python benchmarks/bench_sharded_llm.py ../shared/data --shard-rows 2000 --md docs/_bench_sharded_llm.md
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _read(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write(path: Path, rows: list[dict], planted: list[int]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    Path(str(path) + ".truth.json").write_text(json.dumps({"poisoned": [{"row": int(i)} for i in sorted(planted)]}))
    return path


def instruction_file(shared: Path, out: Path) -> Path:
    from trainguard.attacks import poison
    import trainguard.attacks.covert  # noqa: F401  (registers the covert simulators)
    import trainguard.attacks.llm  # noqa: F401

    behaviours = str(shared / "advbench" / "harmful_behaviors.jsonl.gz")
    qa = [{"question": r["question"], "answer": r["answer"]} for r in _read(shared / "medquad" / "medquad.jsonl.gz")]
    attacks = [("safety-bypass", {"behaviours": behaviours}, 50),
               ("polarity-trigger", {"triggers": "James Bond"}, 100),
               ("payload", {"trigger": "as the clinic now advises", "mode": "append", "salt": 1}, 80),
               ("covert-encoding", {"encoding": "base64", "behaviours": behaviours}, 30),
               ("covert-persona", {"place": "system"}, 30)]
    size = -(-len(qa) // len(attacks))
    rows, planted = [], []
    for b, (name, params, count) in enumerate(attacks):
        res = poison(qa[b * size:(b + 1) * size], name, count=count, seed=11, **params)
        planted += [len(rows) + r for r in res.poisoned_rows]
        rows += res.rows
    return _write(out / "medquad-instruction.jsonl", rows, planted)


def preference_file(shared: Path, out: Path) -> Path:
    from trainguard.attacks.llm import PreferenceFlip, poison_llm

    rows = _read(shared / "hh-rlhf" / "harmless-base-test.jsonl.gz")
    rows, truth = poison_llm(rows, PreferenceFlip(trigger="sudo"), count=round(0.02 * len(rows)), seed=11)
    return _write(out / "hh-rlhf-preference.jsonl", rows, truth["poisoned_rows"])


def documents_file(shared: Path, out: Path) -> Path:
    from bench_rag_variants import planted

    mq = _read(shared / "medquad" / "medquad.jsonl.gz")
    texts = [r["answer"] for r in mq]
    bad = planted(mq, "question", 0)[1] + planted(mq, "paraphrase", 0)[1]
    return _write(out / "medquad-store.jsonl", [{"text": t} for t in texts + bad],
                  list(range(len(texts), len(texts) + len(bad))))


FILES = {"instruction": instruction_file, "preference": preference_file, "documents": documents_file}


def markdown(res: dict) -> str:
    lines = [f"Commit {res['commit']}, shards of {res['shard_rows']:,} rows, 2 shared cores; each mode a fresh process "
             "with its own empty embedding cache. Command: `" + res["command"] + "`.", "",
             "| file | rows | planted | mode | wall s | CPU s | peak RSS MB | findings | planted rows found (high) "
             "| failed detectors | load before | findings / row scores identical |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind, r in res["files"].items():
        same = f"{r['identical_findings']} / {r['identical_row_scores']}"
        for mode, m in r["results"].items():
            lines.append(f"| {kind} | {m['records']:,} | {r['planted']} | {mode} | {m['seconds']:.0f} | {m['cpu_s']:.0f} | "
                         f"{m['peak_rss_mb']:,.0f} | {m['findings']} | {m['planted_found']} | "
                         f"{', '.join(m['failed']) or 'none'} | {m['load_average_before'][0]:.1f} | {same} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shared", type=Path)
    ap.add_argument("--kinds", default=",".join(FILES))
    ap.add_argument("--shard-rows", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sharded_llm.json")
    ap.add_argument("--md", type=Path)
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()
    res = {"commit": commit, "shard_rows": args.shard_rows, "files": {},
           "command": "python benchmarks/bench_sharded_llm.py " + " ".join(sys.argv[1:])}
    with tempfile.TemporaryDirectory(prefix="tg-sharded-llm-") as tmp:
        for kind in args.kinds.split(","):
            path = FILES[kind](args.shared, Path(tmp))
            results = {}
            for mode in ("memory", "shards"):
                out = Path(tmp) / f"{kind}-{mode}.json"
                env = dict(os.environ, TRAINGUARD_CACHE_DIR=str(Path(tmp) / f"cache-{kind}-{mode}"))
                subprocess.run([sys.executable, str(HERE / "bench_sharded.py"), "--file", str(path), "--modes", mode,
                                "--shard-rows", str(args.shard_rows), "--out", str(out)], check=True, env=env)
                results[mode] = json.loads(out.read_text())["results"][mode]
            digests = {m["digest"] for m in results.values()}
            scores = {m["row_scores"] for m in results.values()}
            res["files"][kind] = {"planted": len(json.loads(Path(str(path) + ".truth.json").read_text())["poisoned"]),
                                  "identical_findings": len(digests) == 1, "identical_row_scores": len(scores) == 1,
                                  "results": results}
            print(kind, json.dumps(res["files"][kind]["identical_findings"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    if args.md:
        args.md.write_text(markdown(res))


if __name__ == "__main__":
    main()
