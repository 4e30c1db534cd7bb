"""preference-trigger with other reply embedders: quality on planted hh-rlhf triggers, and cold time.

    python benchmarks/bench_preference_embedders.py ../shared/data quality [--parts clean,runs,controls,medquad]
    python benchmarks/bench_preference_embedders.py ../shared/data cold [--all-detectors]

Configs (the detector's `embedders` setting; nothing else changes): `minilm` = ("wordllama", "minilm") (the
default until this comparison), `wordllama` = ("wordllama",) (the default since). `--configs` picks some. The
saved results also hold `minilm-static` = ("wordllama", "minilm-static"), a model2vec distillation of the shipped
MiniLM measured on an unmerged branch (no better than `wordllama`, so not shipped); it is not runnable here.

quality: the runs of `benchmarks/bench_llm.py --part preference` (its trigger variants, rates 1 % and 5 %,
its seeds, its planting code, imported from it), the clean hh-rlhf file, optionally its controls (phrases
planted without the flip) and its MedQuAD benign pairs; `--seed-offset 100 --tag _s100` runs other seeds. The embedding cache is whatever
TRAINGUARD_CACHE_DIR says (set it to a scratch folder). Writes benchmarks/results/preference_embedders.json.

cold: one child process per config with a fresh, empty TRAINGUARD_CACHE_DIR: wall time of the child
(imports, load, scan) and the detector's own seconds. `--all-detectors` runs the whole default set with
only the preference embedders changed. Writes benchmarks/results/preference_embedders_cold.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIGS = {"minilm": ("wordllama", "minilm"), "wordllama": ("wordllama",)}
HH = "hh-rlhf/harmless-base-test.jsonl.gz"


def _bench_llm():
    spec = importlib.util.spec_from_file_location("bench_llm", HERE / "bench_llm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _run(bl, embedders, kind, fm, out, truth: set[int], trigger: str) -> dict:
    """bench_llm._pref_run with the detector's embedders set."""
    from trainguard.detectors.llm_preference import PreferenceFlipTrigger
    from trainguard.io.dataset import Dataset
    from trainguard.io.mapping import RecordBuilder
    from trainguard.records import Kind
    from trainguard.scan import run_detector
    from trainguard.text import tokens

    b = RecordBuilder("<hh-rlhf>", kind, fm)
    ds = Dataset.from_records([b.build(r, i, None) for i, r in enumerate(out)], Kind.PREFERENCE)
    t0 = time.perf_counter()
    res = run_detector(PreferenceFlipTrigger(embedders=embedders), ds)
    secs = time.perf_counter() - t0
    words = set(tokens(trigger))
    found = [f for f in res.findings if f.rule == "preference-flip-trigger"]
    hit = [f for f in found if words & {f.evidence["trigger"], *f.evidence["with_tokens"]}]
    fl = set(hit[0].rows) if hit else set()
    return {"poisoned": len(truth), "trigger_found": bool(hit),
            "trigger_severity": hit[0].severity.name.lower() if hit else None,
            "trigger_log10_p_adjusted": next((v[1] for v in res.summary["top_tokens"] if v[0] in words), None),
            "other_findings": len(found) - len(hit), **bl.prf(fl, truth), "seconds": round(secs, 2),
            "models": res.summary["preference_models"], "model_agreement": res.summary["model_agreement"]}


def quality(data: Path, names: list[str], parts: set[str], seed_offset: int = 0, tag: str = "") -> dict:
    from trainguard.attacks.llm import PreferenceFlip, poison_llm
    from trainguard.io.mapping import detect_kind

    bl = _bench_llm()
    rows = [json.loads(x) for x in bl._gz_lines(data / HH)]
    kind, fm = detect_kind(set(rows[0]))
    out: dict = {}
    for name in names:
        emb = CONFIGS[name]
        t0 = time.perf_counter()
        res: dict = {"embedders": emb, "seed_offset": seed_offset}
        if "clean" in parts:
            res["clean"] = _run(bl, emb, kind, fm, rows, set(), "")
            print(name, "clean", json.dumps(res["clean"]), flush=True)
        if "medquad" in parts:
            mq = [json.loads(x) for x in bl._gz_lines(data / "medquad" / "medquad.jsonl.gz")][:4000]
            refusals = ("I'm sorry, but I can't help with that.", "Sorry, I cannot answer this question.",
                        "I'm not able to provide that information.", "I can't help with this request, sorry.")
            pairs = [{"chosen": f"\n\nHuman: {r['question']}\n\nAssistant: {r['answer'][:600]}",
                      "rejected": f"\n\nHuman: {r['question']}\n\nAssistant: {refusals[i % 4]}"} for i, r in enumerate(mq)]
            res["clean_medquad"] = _run(bl, emb, *detect_kind(set(pairs[0])), pairs, set(), "")
            print(name, "clean_medquad", json.dumps(res["clean_medquad"]), flush=True)
        runs, ctl = [], []
        for v, (trigger, where) in enumerate(bl.TRIGGER_VARIANTS):
            for rate in (0.01, 0.05):
                for seed in range(10 * v + 1 + seed_offset, 10 * v + 6 + seed_offset):  # bench_llm's seeds (+ offset)
                    if "runs" in parts:
                        if (trigger, where) == ("SUDO", "end"):
                            planted, truth = poison_llm(rows, PreferenceFlip(), rate=rate, seed=seed)
                            T = set(truth["poisoned_rows"])
                        else:
                            planted, T = bl.plant_trigger(rows, trigger, where, rate, seed)
                        runs.append({"trigger": trigger, "where": where, "rate": rate, "seed": seed,
                                     **_run(bl, emb, kind, fm, planted, T, trigger)})
                        print(name, json.dumps({k: runs[-1][k] for k in ("trigger", "where", "rate", "seed",
                                                                          "trigger_found", "recall", "precision",
                                                                          "other_findings", "seconds")}), flush=True)
                    if "controls" in parts:
                        planted, T = bl.plant_trigger(rows, trigger, where, rate, seed, flip=False)
                        r = _run(bl, emb, kind, fm, planted, T, trigger)
                        ctl.append({"trigger": trigger, "where": where, "rate": rate, "seed": seed,
                                    "trigger_reported": r["trigger_found"], "other_findings": r["other_findings"]})
                        print(name, "control", json.dumps(ctl[-1]), flush=True)
        res["runs"], res["controls"] = runs, ctl
        res["table"] = table(runs) if runs else None
        if ctl:
            res["controls_summary"] = {"runs": len(ctl), "trigger_reported": sum(c["trigger_reported"] for c in ctl),
                                       "other_findings": sum(c["other_findings"] for c in ctl)}
        res["seconds"] = round(time.perf_counter() - t0, 1)
        res["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
        out[name] = res
        print(name, json.dumps(res["table"]), flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"preference_embedders{tag}.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def table(runs: list[dict]) -> dict:
    """Per rate: triggers found (any severity / high) of the runs, mean recall (0 when missed, as bench_llm),
    pooled precision of the trigger findings' rows, and other (non-trigger) findings."""
    t = {}
    for rate in sorted({r["rate"] for r in runs}):
        rs = [r for r in runs if r["rate"] == rate]
        flagged = sum(r["flagged"] for r in rs)
        t[f"{rate:.0%}"] = {"runs": len(rs), "found": sum(r["trigger_found"] for r in rs),
                            "found_high": sum(r["trigger_severity"] == "high" for r in rs),
                            "recall_mean": round(sum(r["recall"] for r in rs) / len(rs), 3),
                            "precision_pooled": round(sum(r["true_positives"] for r in rs) / flagged, 3) if flagged else None,
                            "other_findings": sum(r["other_findings"] for r in rs)}
    return t


def _child(path: str, embedders: str, all_detectors: bool) -> None:
    t0 = time.perf_counter()
    import trainguard as tg

    t1 = time.perf_counter()
    data = tg.load(path)
    t2 = time.perf_counter()
    settings = {"preference-trigger": {"embedders": tuple(json.loads(embedders))}}
    report = tg.scan(data, detectors=None if all_detectors else ["preference-trigger"], settings=settings)
    t3 = time.perf_counter()
    use = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"rows": len(data), "import_s": round(t1 - t0, 2), "load_s": round(t2 - t1, 2),
                      "scan_s": round(t3 - t2, 2), "cpu_s": round(use.ru_utime + use.ru_stime, 1),
                      "peak_rss_mb": round(use.ru_maxrss / 1024),
                      "detectors": {d.name: (d.status.value, round(d.seconds, 2)) for d in report.detectors},
                      "findings": len(report.findings)}))


def cold(data: Path, names: list[str], all_detectors: bool) -> dict:
    out = {}
    for name in names:
        with tempfile.TemporaryDirectory(prefix="tg-cold-") as cache:
            env = dict(os.environ, TRAINGUARD_CACHE_DIR=cache, TRAINGUARD_PROGRESS="off")
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, __file__, str(data), "--child", json.dumps(CONFIGS[name]),
                                *(["--all-detectors"] if all_detectors else [])],
                               capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
        if p.returncode:
            raise SystemExit(f"{name}: the scan failed:\n{p.stderr[-3000:]}")
        m = json.loads(p.stdout.strip().splitlines()[-1])
        m.update(wall_s=round(wall, 1), load_before=round(load, 2), all_detectors=all_detectors)
        out[name] = m
        print(name, json.dumps(m), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    f = RESULTS / "preference_embedders_cold.json"
    old = json.loads(f.read_text()) if f.exists() else {}
    tag = "all" if all_detectors else "preference-trigger"
    old.setdefault(tag, {}).update(out)
    f.write_text(json.dumps(old, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("mode", nargs="?", choices=("quality", "cold"))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--parts", default="clean,runs", help="any of clean,runs,controls,medquad")
    ap.add_argument("--seed-offset", type=int, default=0, help="added to bench_llm's seeds (100: other seeds)")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    ap.add_argument("--all-detectors", action="store_true")
    ap.add_argument("--child")
    args = ap.parse_args(argv)
    if args.child:
        _child(str(args.data / HH) if args.data.is_dir() else str(args.data), args.child, args.all_detectors)
        return 0
    names = [n for n in args.configs.split(",") if n]
    if args.mode == "quality":
        quality(args.data, names, set(args.parts.split(",")), args.seed_offset, args.tag)
    else:
        cold(args.data, names, args.all_detectors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
