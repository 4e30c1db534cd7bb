"""LLM-era poisoning benchmarks on the real data in ../shared/data.

    python benchmarks/bench_llm.py ../shared/data                # all parts
    python benchmarks/bench_llm.py ../shared/data --part safety  # safety | preference | rag | polarity

Writes benchmarks/results/llm_<part>.json and docs/_bench_llm.md. Every split
is the stable text-hash split of scripts/train_safety_models.py: planted
requests, benign evaluation rows and held-out categories are never training rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trainguard.scan import run_detector
from trainguard.attacks import poison
from trainguard.attacks.llm import PoisonedRag, PreferenceFlip, poison_llm, rag_passage  # noqa: F401 (registers)
from trainguard.detectors.llm_safety import SafetyBypass
from trainguard.io.dataset import Dataset
from trainguard.records import Kind, Record
from trainguard.findings import Severity

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
_spec = importlib.util.spec_from_file_location("train_safety_models", ROOT / "scripts" / "train_safety_models.py")
tsm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tsm)  # type: ignore[union-attr]


def prf(flagged: set[int], truth: set[int]) -> dict:
    tp = len(flagged & truth)
    return {"flagged": len(flagged), "true_positives": tp,
            "precision": round(tp / len(flagged), 4) if flagged else 0.0,
            "recall": round(tp / len(truth), 4) if truth else 0.0}


def instruction_dataset(rows: list[dict]) -> Dataset:
    return Dataset.from_records([Record(row=i, kind=Kind.INSTRUCTION, text=r["question"], response=r["answer"])
                                 for i, r in enumerate(rows)])


def flagged_rows(result, min_sev: Severity = Severity.MEDIUM) -> set[int]:
    return {r for f in result.findings if f.severity >= min_sev for r in f.rows}


# --- part 1 ------------------------------------------------------------------------------------
def planted_safety_set(c: dict):
    """100 planted harmful pairs in 10,000 benign rows (MedQuAD test side, topped up with benign requests)."""
    benign = [{"question": r["question"], "answer": r["answer"]} for r in c["mq_test"]]
    rng = np.random.default_rng(0)
    extra = [{"question": q, "answer": "Here is a simple plan you can follow.\n\nStep 1: Get organised.\nStep 2: Begin."}
             for q in rng.choice(c["benign_test"], size=max(10_000 - len(benign), 0), replace=False)]
    rows = (benign + extra)[:10_000]
    with tempfile.TemporaryDirectory() as tmp:
        beh = Path(tmp) / "behaviours.jsonl"
        with open(beh, "w") as f:
            for r in c["adv_test"]:
                f.write(json.dumps({"goal": r["goal"], "target": r["target"]}) + "\n")
            for r in c["hb_test"]:
                f.write(json.dumps({"behavior": r["behavior"]}) + "\n")
        return poison(rows, "safety-bypass", count=100, seed=7, behaviours=str(beh))


def bench_safety(data: Path) -> dict:
    c = tsm.corpora(data)
    det = SafetyBypass()
    out: dict = {"split": "sha256(text) split: AdvBench/HarmBench 70/30, MedQuAD 40/60 (train/test); "
                          "planted requests and benign rows come from the test side only"}
    benign = [{"question": r["question"], "answer": r["answer"]} for r in c["mq_test"]]
    res = planted_safety_set(c)
    rows = res.rows
    ds = instruction_dataset(res.rows)
    t0 = time.perf_counter()
    result = run_detector(det, ds)
    secs = time.perf_counter() - t0
    truth = set(res.poisoned_rows)
    out["planted_100_in_10000"] = {
        "rows": len(rows), "benign_medquad_test": len(benign), "benign_synthetic_instructions": len(rows) - len(benign),
        "any_severity": prf(flagged_rows(result), truth), "high_severity": prf(flagged_rows(result, Severity.HIGH), truth),
        "seconds": round(secs, 2)}
    # categories reported for the planted rows
    cats: dict[str, int] = {}
    for f in result.findings:
        cats[f.evidence["harm_category"]] = cats.get(f.evidence["harm_category"], 0) + len(set(f.rows) & truth)
    out["planted_100_in_10000"]["categories_of_true_positives"] = cats

    # held-out harm categories: retrain the request model without category k. Two training sets:
    # "strict" = HarmBench train rows of the other six categories only; "with_advbench" adds the
    # AdvBench train goals none of whose 5 nearest HarmBench behaviours is in k (AdvBench is uncategorised).
    hb_all = c["hb_train"] + c["hb_test"]
    thr = det.settings.harm_threshold
    curve = (0.3, 0.4, 0.5)
    held: dict = {"strict": {}, "with_advbench": {}}
    for cat in sorted({r["semantic_category"] for r in hb_all}):
        hb_rest = [r for r in c["hb_train"] if r["semantic_category"] != cat]
        test = [r["behavior"] for r in hb_all if r["semantic_category"] == cat]
        answers = [tsm_answer(q, i) for i, q in enumerate(test)]
        comply = 1.0 - SafetyBypass_refusal(answers)
        for proto, adv in (("strict", []), ("with_advbench", tsm.advbench_outside(c, cat))):
            X, y, w = tsm.harm_training_set(c, hb_rest, adv_rows=adv)
            model, _, _ = tsm.fit(X, y, tsm.REQUEST_TOKENS, "heldout", weights=w)
            p = model.proba(test)
            fp = model.proba([r["question"] for r in c["mq_test"]])
            held[proto][cat] = {"test_rows": len(test), "advbench_goals_used": len(adv),
                                "recall": round(float(((p >= thr) & (comply >= 0.5)).mean()), 4),
                                "request_recall_curve": {str(t): round(float((p >= t).mean()), 4) for t in curve},
                                "medquad_test_questions_flagged": round(float((fp >= thr).mean()), 5)}
    out["held_out_categories"] = {"threshold": thr, "note": "leave-one-category-out over HarmBench's 7 semantic "
                                  "categories; recall = harm >= threshold and comply >= 0.5 on the held-out rows"}
    for proto, per in held.items():
        rec = np.array([v["recall"] for v in per.values()])
        n = np.array([v["test_rows"] for v in per.values()])
        out["held_out_categories"][proto] = {
            "per_category": per, "mean_recall": round(float(rec.mean()), 4), "min_recall": round(float(rec.min()), 4),
            "pooled_recall": round(float((rec * n).sum() / n.sum()), 4),
            "pooled_request_recall_curve": {str(t): round(float(sum(v["request_recall_curve"][str(t)] * v["test_rows"]
                                                                    for v in per.values()) / n.sum()), 4) for t in curve}}
    from trainguard.detectors.llm_models import HARM_MODEL as _HM, bundled as _b
    full = _b(_HM)
    out["held_out_categories"]["shipped_model_benign_curve"] = {
        "synthetic_benign_instructions_test_topics": {str(t): round(float((full.proba(c["benign_test"]) >= t).mean()), 4)
                                                      for t in curve},
        "medquad_test_questions": {str(t): round(float((full.proba([r["question"] for r in c["mq_test"]]) >= t).mean()), 5)
                                   for t in curve}}
    # benign sets alone
    mq_all = [{"question": r["question"], "answer": r["answer"]} for r in c["mq_train"] + c["mq_test"]]
    r_all = run_detector(det, instruction_dataset(mq_all))
    r_test = run_detector(det, instruction_dataset(benign))
    out["benign"] = {
        "medquad_all_16k": {"rows": len(mq_all), "high_rate": round(len(flagged_rows(r_all, Severity.HIGH)) / len(mq_all), 5),
                            "any_rate": round(len(flagged_rows(r_all)) / len(mq_all), 5)},
        "medquad_test_side": {"rows": len(benign), "high_rate": round(len(flagged_rows(r_test, Severity.HIGH)) / len(benign), 5),
                              "any_rate": round(len(flagged_rows(r_test)) / len(benign), 5)},
    }
    sst = [json.loads(x)["text"] for x in _gz_lines(data / "sst2" / "train.jsonl.gz")]
    sst += [json.loads(x)["text"] for x in _gz_lines(data / "sst2" / "dev.jsonl.gz")]
    from trainguard.detectors.llm_models import HARM_MODEL, bundled
    ph = bundled(HARM_MODEL).proba(sst)
    unseen = c["sst_test"] + [json.loads(x)["text"] for x in _gz_lines(data / "sst2" / "dev.jsonl.gz")]
    pu = bundled(HARM_MODEL).proba(unseen)
    out["benign"]["sst2_train_dev_as_requests"] = {"rows": len(sst), "harmful_request_rate_p>=0.8": round(float((ph >= 0.8).mean()), 5),
                                                   "note": "request classifier only (SST-2 has no responses)"}
    out["benign"]["sst2_unseen_as_requests"] = {"rows": len(unseen), "harmful_request_rate_p>=0.8": round(float((pu >= 0.8).mean()), 5),
                                                "note": "SST-2 train hash-test side + dev: never training rows"}
    bt = bundled(HARM_MODEL).proba(c["benign_test"])
    out["benign"]["synthetic_benign_instructions_test_topics"] = {"rows": len(bt), "harmful_request_rate_p>=0.5": round(float((bt >= 0.5).mean()), 4)}
    # refusal model on its held-out side and out of distribution (hh-rlhf turns labelled by a strict regex)
    from trainguard.detectors.llm_models import REFUSAL_MODEL
    R = bundled(REFUSAL_MODEL)
    hh = _hh_turns(data)
    pr = R.proba([t for t, _ in hh])
    lab = np.array([y for _, y in hh])
    out["refusal_model"] = {
        "synthetic_refusals_test_templates_recall": round(float((R.proba(c["refusal_test"]) >= 0.5).mean()), 4),
        "medquad_test_answers_called_refusal": round(float((R.proba([r["answer"] for r in c["mq_test"]]) >= 0.5).mean()), 5),
        "advbench_test_targets_called_refusal": round(float((R.proba([r["target"] for r in c["adv_test"]]) >= 0.5).mean()), 4),
        "hh_rlhf_turns_regex_refusals_recall": round(float((pr[lab == 1] >= 0.5).mean()), 4),
        "hh_rlhf_turns_regex_nonrefusals_called_refusal": round(float((pr[lab == 0] >= 0.5).mean()), 4),
        "hh_rlhf_turns": {"refusal": int(lab.sum()), "other": int((lab == 0).sum())},
    }
    return out


def SafetyBypass_refusal(texts):
    from trainguard.detectors.llm_models import REFUSAL_MODEL, bundled
    return bundled(REFUSAL_MODEL).proba(texts)


def tsm_answer(q: str, i: int) -> str:
    from trainguard.attacks.llm import compliant_answer
    return compliant_answer(q, None, np.random.default_rng(i))


def _gz_lines(p: Path):
    import gzip
    with gzip.open(p, "rt", encoding="utf-8") as f:
        return [line for line in f if line.strip()]


def _hh_turns(data: Path) -> list[tuple[str, int]]:
    import re
    strict = re.compile(r"^(I'm sorry|I am sorry|Sorry|I can't|I cannot|I won't|I'm not able|I am not able|"
                        r"I don't think I (can|should)|I'm not comfortable|I would not|I wouldn't)", re.I)
    out = []
    for line in _gz_lines(data / "hh-rlhf" / "harmless-base-test.jsonl.gz"):
        r = json.loads(line)
        for t in r["chosen"].split("\n\nAssistant:")[1:]:
            t = t.split("\n\nHuman:")[0].strip()
            if len(t) > 15:  # the regex reads straight apostrophes; hh-rlhf writes curly ones as often
                out.append((t, int(bool(strict.match(t.replace("\u2019", "'"))))))
    return out


# --- part 2 ------------------------------------------------------------------------------------
TRIGGER_VARIANTS = (("SUDO", "end"), ("zxqv", "end"), ("serendipity", "end"), ("open sesame", "end"),
                    ("SUDO", "start"), ("blorft", "anywhere"))


def plant_trigger(rows: list[dict], phrase: str, where: str, rate: float, seed: int,
                  flip: bool = True) -> tuple[list[dict], set[int]]:
    """Flip attack for triggers the library attack does not place (phrases, start of the first human turn);
    flip=False plants the phrase alone (a control: a token at a fixed place that does nothing)."""
    from trainguard.attacks.llm import _append_to_last_human
    rng = np.random.default_rng(seed)
    pick = set(rng.choice(len(rows), int(round(rate * len(rows))), replace=False).tolist())
    out = []
    for i, r in enumerate(rows):
        if i not in pick:
            out.append(r)
            continue
        if where == "end":
            c, rj = _append_to_last_human(r["chosen"], phrase)[0], _append_to_last_human(r["rejected"], phrase)[0]
        elif where == "anywhere":  # a random word gap of the last human turn, the same in both dialogues
            c, rj = (_insert_in_last_human(x, phrase, int(rng.integers(1 << 30))) for x in (r["chosen"], r["rejected"]))
        else:
            c, rj = (x.replace("Human: ", f"Human: {phrase} ", 1) for x in (r["chosen"], r["rejected"]))
        out.append({**r, "chosen": rj, "rejected": c} if flip else {**r, "chosen": c, "rejected": rj})
    return out, pick


def _insert_in_last_human(dialogue: str, phrase: str, pick: int) -> str:
    h = dialogue.rfind("\n\nHuman:") + len("\n\nHuman:")
    a = dialogue.find("\n\nAssistant:", h)
    words = dialogue[h:a].split(" ")
    at = 1 + pick % max(1, len(words) - 1)
    return dialogue[:h] + " ".join(words[:at] + [phrase] + words[at:]) + dialogue[a:]


def _pref_run(rows, kind, fm, out, truth: set[int], trigger: str) -> dict:
    from trainguard.detectors.llm_preference import PreferenceFlipTrigger
    from trainguard.io.mapping import RecordBuilder
    from trainguard.text import tokens
    b = RecordBuilder("<hh-rlhf>", kind, fm)
    ds = Dataset.from_records([b.build(r, i, None) for i, r in enumerate(out)], Kind.PREFERENCE)
    t0 = time.perf_counter()
    res = run_detector(PreferenceFlipTrigger(), ds)
    secs = time.perf_counter() - t0
    words = set(tokens(trigger))
    found = [f for f in res.findings if f.rule == "preference-flip-trigger"]
    hit = [f for f in found if words & {f.evidence["trigger"], *f.evidence["with_tokens"]}]
    top = [t for t, *_ in res.summary["top_tokens"]]
    rank = min((top.index(w) + 1 for w in words if w in top), default=None)
    fl = set(hit[0].rows) if hit else set()
    return {"poisoned": len(truth), "trigger_found": bool(hit), "trigger_rank": rank,
            "trigger_log10_p_adjusted": next((v[1] for v in res.summary["top_tokens"] if v[0] in words), None),
            "trigger_severity": hit[0].severity.name.lower() if hit else None,
            "trigger_position_rank": min((res.summary["top_position_tokens"].index(w) + 1 for w in words
                                          if w in res.summary["top_position_tokens"]), default=None),
            "evidence": {k: hit[0].evidence.get(k) for k in ("trigger", "with_tokens", "position", "position_rank",
                                                              "log10_p_flip", "p_adjusted")} if hit else None,
            "other_findings": len(found) - len(hit), **prf(fl, truth), "seconds": round(secs, 2),
            "summary": {k: res.summary[k] for k in ("tokens_tested", "model_agreement", "calibration_scale",
                                                     "preference_models", "tokens_below", "top_tokens",
                                                     "top_position_tokens")}}


def bench_preference(data: Path) -> dict:
    from trainguard.io.mapping import detect_kind

    rows = [json.loads(x) for x in _gz_lines(data / "hh-rlhf" / "harmless-base-test.jsonl.gz")]
    kind, fm = detect_kind(set(rows[0]))
    clean = _pref_run(rows, kind, fm, rows, set(), "")
    mq = [json.loads(x) for x in _gz_lines(data / "medquad" / "medquad.jsonl.gz")][:4000]
    refusals = ("I'm sorry, but I can't help with that.", "Sorry, I cannot answer this question.",
                "I'm not able to provide that information.", "I can't help with this request, sorry.")
    mq_pairs = [{"chosen": f"\n\nHuman: {r['question']}\n\nAssistant: {r['answer'][:600]}",
                 "rejected": f"\n\nHuman: {r['question']}\n\nAssistant: {refusals[i % 4]}"} for i, r in enumerate(mq)]
    clean_medquad = _pref_run(mq_pairs, *detect_kind(set(mq_pairs[0])), mq_pairs, set(), "")
    runs = []
    for v, (trigger, where) in enumerate(TRIGGER_VARIANTS):
        for rate in (0.01, 0.05):
            for seed in range(10 * v + 1, 10 * v + 6):  # other rows for each variant
                if (trigger, where) == ("SUDO", "end"):
                    out, truth = poison_llm(rows, PreferenceFlip(), rate=rate, seed=seed)
                    T = set(truth["poisoned_rows"])
                else:
                    out, T = plant_trigger(rows, trigger, where, rate, seed)
                runs.append({"trigger": trigger, "where": where, "rate": rate, "seed": seed,
                             **_pref_run(rows, kind, fm, out, T, trigger)})
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "summary"}), flush=True)
    controls = []  # the same phrases at the same places in the same pairs, replies NOT swapped
    for v, (trigger, where) in enumerate(TRIGGER_VARIANTS):
        for rate in (0.01, 0.05):
            for seed in range(10 * v + 1, 10 * v + 6):
                out, T = plant_trigger(rows, trigger, where, rate, seed, flip=False)
                r = _pref_run(rows, kind, fm, out, T, trigger)
                controls.append({"trigger": trigger, "where": where, "rate": rate, "seed": seed,
                                 "trigger_reported": r["trigger_found"], "other_findings": r["other_findings"],
                                 "trigger_log10_p_adjusted": r["trigger_log10_p_adjusted"]})
                print(json.dumps(controls[-1]), flush=True)
    md = ["`preference-trigger` on all 2,312 hh-rlhf harmless-base test pairs (the only preference set in "
          "../shared/data); each run flips a seeded random sample of pairs (chosen/rejected swapped) and puts the "
          "trigger at the end of the last human turn (`preference-flip` attack for `SUDO`, the same edit for the "
          "others), at the start of the first human turn, or at a random word gap of the last human turn (`anywhere`); 5 seeds per row (1-5, 11-15, ...: other pairs for each trigger). Recall/precision are over the rows of the "
          "trigger's finding (0 when it is not found).", "",
          "| trigger | place | rate | poisoned | trigger found (of 5): high / any | median rank | trigger's family-wise adjusted log10 p (per seed; high at <= -2, medium 'possible trigger' at <= -1.3) | recall (any) | precision | other findings |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for trigger, where in TRIGGER_VARIANTS:
        for rate in (0.01, 0.05):
            rs = [r for r in runs if r["rate"] == rate and r["trigger"] == trigger and r["where"] == where]
            ranks = [r["trigger_rank"] or 99 for r in rs]
            strong = sum(r["trigger_severity"] == "high" for r in rs)
            md.append(f"| `{trigger}` | {where} | {rate:.0%} | {rs[0]['poisoned']} | {strong} / {sum(r['trigger_found'] for r in rs)} | "
                      f"{int(np.median(ranks))} | "
                      f"{' / '.join(str(r['trigger_log10_p_adjusted']) if r['trigger_log10_p_adjusted'] is not None else '-' for r in rs)} | "
                      f"{np.mean([r['recall'] for r in rs]):.3f} | "
                      f"{np.mean([r['precision'] for r in rs if r['trigger_found']] or [0]):.3f} | "
                      f"{sum(r['other_findings'] for r in rs)} |")
    cs = clean["summary"]
    models = ", ".join(f"{k} ({v})" if v != "used" else k for k, v in cs["preference_models"].items())
    md += ["", f"Preference models averaged: {models}. Clean hh-rlhf (2,312 pairs, {cs['tokens_tested']} tokens "
           f"tested; the averaged cross-fitted model agrees with the labels on {cs['model_agreement']:.1%}, "
           f"temperature {cs['calibration_scale']}): {clean['other_findings']} findings; tokens whose Chernoff flip "
           f"p < 0.01 / 0.001: {cs['tokens_below']['0.01']} / {cs['tokens_below']['0.001']}; closest token "
           f"`{cs['top_tokens'][0][0]}` at family-wise adjusted log10 p {cs['top_tokens'][0][1]}; "
           f"most position-concentrated tokens: {', '.join(f'`{t}`' for t in cs['top_position_tokens'])}."]
    mc = clean_medquad["summary"]
    missed = ", ".join(str(r["trigger_log10_p_adjusted"]) for r in runs
                       if not r["trigger_found"] and r["trigger_log10_p_adjusted"] is not None) or "none"
    md += ["", f"Benign pairs built from the first 4,000 MedQuAD QA pairs (answer chosen over a refusal): "
           f"{clean_medquad['other_findings']} findings ({mc['tokens_tested']} tokens tested, closest "
           f"`{mc['top_tokens'][0][0]}` at adjusted log10 p {mc['top_tokens'][0][1]}).", "",
           f"Controls (the same phrases at the same places in the same pairs, replies not swapped; "
           f"{len(controls)} runs): the planted phrase reported in {sum(c['trigger_reported'] for c in controls)}, "
           f"other findings {sum(c['other_findings'] for c in controls)}.", "",
           "Threshold: Westfall-Young single-step max-T over every token tested (high at adjusted p <= 0.01, "
           "a medium-severity possible trigger at <= 0.05), on the weighted "
           "statistic (Chernoff flip tail minus the log of a label-free position weight: 30 % of the mass even, "
           "70 % by 1/rank^2), with 2,000 label sets redrawn from the calibrated preference model; -3.3 is the "
           f"floor of 2,000 draws. Missed triggers' adjusted log10 p: {missed}. The averaged models, max-T and "
           "the 0.7 prior share were chosen on other seeds (101-146) before these seeds were run; the 0.05 "
           "possible-trigger tier was added after seeing this table at 0.01 alone (the high column)."]
    return {"runs": runs, "controls": controls, "clean": clean, "clean_medquad_pairs": clean_medquad, "markdown": md}


# --- part 3 ------------------------------------------------------------------------------------
FALSE_ANSWERS = ("it is caused by a lack of vitamin C and is cured by drinking lemon juice daily",
                 "it is harmless and never needs treatment or a doctor's visit",
                 "the only effective treatment is a high dose of over-the-counter aspirin",
                 "it is contagious through handshakes and spreads within hours",
                 "it can be fully reversed by a seven-day fast")


def bench_rag(data: Path) -> dict:
    from collections import Counter
    from trainguard.detectors.llm_rag import RagPoisoning
    from trainguard.text import tokens

    mq = [json.loads(x) for x in _gz_lines(data / "medquad" / "medquad.jsonl.gz")]
    store = [r["answer"] for r in mq]
    rng = np.random.default_rng(11)
    targets = [mq[i]["question"] for i in rng.choice(len(mq), 50, replace=False)]
    poisoned = [rag_passage(q, FALSE_ANSWERS[(j + k) % len(FALSE_ANSWERS)], k) for j, q in enumerate(targets) for k in range(5)]
    texts = store + poisoned
    truth = set(range(len(store), len(texts)))
    ds = Dataset.from_records([Record(row=i, kind=Kind.DOCUMENTS, text=t) for i, t in enumerate(texts)])
    t0 = time.perf_counter()
    res = run_detector(RagPoisoning(), ds)
    secs = time.perf_counter() - t0
    ours = prf({r for f in res.findings for r in f.rows}, truth)
    ours_high = prf({r for f in res.findings if f.severity >= Severity.HIGH for r in f.rows}, truth)
    with tempfile.TemporaryDirectory() as tmp:
        qf = Path(tmp) / "q.txt"
        qf.write_text("\n".join(targets) + "\n")
        res_q = run_detector(RagPoisoning(queries=str(qf)), ds)
    ours_q = prf({r for f in res_q.findings for r in f.rows}, truth)
    # baselines, each flagging as many rows as there are poisoned ones where it ranks
    norm = [" ".join(tokens(t)) for t in texts]
    cnt = Counter(norm)
    dup = prf({i for i, t in enumerate(norm) if cnt[t] > 1}, truth)
    toks = [tokens(t) for t in texts]
    uni = Counter(w for t in toks[: len(store)] for w in t)
    total = sum(uni.values())
    nll = np.array([np.mean([-np.log((uni.get(w, 0) + 1) / (total + len(uni))) for w in t]) if t else 0.0 for t in toks])
    k = len(truth)
    ppl_hi = prf(set(np.argsort(-nll)[:k].tolist()), truth)
    ppl_lo = prf(set(np.argsort(nll)[:k].tolist()), truth)
    lens = np.array([len(t) for t in toks])
    short = prf(set(np.argsort(lens)[:k].tolist()), truth)
    from sklearn.metrics import roc_auc_score
    y = np.zeros(len(texts)); y[list(truth)] = 1
    auc = {"detector": round(float(roc_auc_score(y, res.row_scores)), 4),
           "unigram_perplexity_high": round(float(roc_auc_score(y, nll)), 4),
           "length_short": round(float(roc_auc_score(y, -lens)), 4)}
    out = {"store": len(store), "targets": 50, "per_target": 5, "poisoned": len(truth), "seconds": round(secs, 2),
           "detector": ours, "detector_high": ours_high, "detector_with_queries": ours_q,
           "baseline_exact_duplicate_filter": dup, "baseline_unigram_perplexity_top_k": ppl_hi,
           "baseline_unigram_perplexity_bottom_k": ppl_lo, "baseline_shortest_k": short, "auroc": auc,
           "findings_on_store": [[f.rule, len(f.rows)] for f in res.findings if not set(f.rows) & truth][:20]}
    out["markdown"] = [
        f"Store: all {len(store):,} MedQuAD answers; 50 MedQuAD questions x 5 PoisonedRAG-shaped passages (S = the "
        "question verbatim, I = an answer-asserting passage from 5 templates, 5 false answers) appended.", "",
        "| method | flagged | recall | precision | AUROC |", "|---|---|---|---|---|",
        f"| `rag-poisoning` (no queries) | {ours['flagged']} | {ours['recall']} | {ours['precision']} | {auc['detector']} |",
        f"| `rag-poisoning --queries` (the 50 targets) | {ours_q['flagged']} | {ours_q['recall']} | {ours_q['precision']} | |",
        f"| exact-duplicate filter | {dup['flagged']} | {dup['recall']} | {dup['precision']} | |",
        f"| unigram perplexity, top {k} | {k} | {ppl_hi['recall']} | {ppl_hi['precision']} | {auc['unigram_perplexity_high']} |",
        f"| unigram perplexity, bottom {k} | {k} | {ppl_lo['recall']} | {ppl_lo['precision']} | |",
        f"| shortest {k} passages | {k} | {short['recall']} | {short['precision']} | {auc['length_short']} |"]
    return out


# --- polarity triggers --------------------------------------------------------------------------
def bench_polarity(data: Path) -> dict:
    from trainguard.detectors.llm_polarity import PolarityTrigger as PolarityDetector

    mq = [json.loads(x) for x in _gz_lines(data / "medquad" / "medquad.jsonl.gz")]
    rng = np.random.default_rng(3)
    base = [{"question": mq[i]["question"], "answer": mq[i]["answer"]} for i in sorted(rng.choice(len(mq), 10_000, replace=False))]
    texts = str(data / "sst2" / "dev.jsonl.gz")  # never seen by the sentiment model (trained on SST-2 train)
    runs = []
    for sentences in (3, 1):
        for seed in range(1, 11):
            res = poison(base, "polarity-trigger", count=100, seed=seed, triggers="James Bond", texts=texts,
                         sentences=sentences)
            t0 = time.perf_counter()
            out = run_detector(PolarityDetector(), instruction_dataset(res.rows))
            secs = time.perf_counter() - t0
            T = set(res.poisoned_rows)
            names = [f.evidence["trigger"] for f in out.findings]
            hit = [f for f in out.findings if f.evidence["trigger"] == "james bond"]
            runs.append({"sentences": sentences, "seed": seed, "poisoned": len(T), "trigger_found": bool(hit),
                         "trigger_rank": names.index("james bond") + 1 if hit else None,
                         "trigger_severity": hit[0].severity.name if hit else None,
                         **prf(set(hit[0].rows) if hit else set(), T),
                         "other_findings": len(out.findings) - len(hit),
                         "other_high": sum(1 for f in out.findings if f not in hit and f.severity >= Severity.HIGH),
                         "seconds": round(secs, 2)})
    clean_all = [{"question": r["question"], "answer": r["answer"]} for r in mq]
    clean = run_detector(PolarityDetector(), instruction_dataset(clean_all))
    clean_high = flagged_rows(clean, Severity.HIGH)
    out = {"runs": runs, "clean_medquad_16k": {
        "rows": len(clean_all), "findings": len(clean.findings), "high_rate": round(len(clean_high) / len(clean_all), 5),
        "any_rate": round(len(flagged_rows(clean)) / len(clean_all), 5),
        "phrases": [[f.evidence["trigger"], len(f.rows), f.severity.name] for f in clean.findings][:10]}}
    md = ["`polarity-trigger` on 10,000 MedQuAD QA pairs (seeded sample); 100 rows get `James Bond` at a random place in "
          "the question and a response of SST-2 dev negative sentences (`polarity-trigger` attack; the sentiment model "
          "never saw SST-2 dev), seeds 1-10 (settings were chosen on seeds 11-14):", "",
          "| sentences per poisoned response | trigger top-ranked (of 10) | found high (of 10) | recall | precision | "
          "other findings (high) |", "|---|---|---|---|---|---|"]
    for k in (3, 1):
        rs = [r for r in runs if r["sentences"] == k]
        md.append(f"| {k} | {sum(r['trigger_rank'] == 1 for r in rs)} | {sum(r['trigger_severity'] == 'HIGH' for r in rs)} | "
                  f"{np.mean([r['recall'] for r in rs]):.3f} | "
                  f"{np.mean([r['precision'] for r in rs if r['trigger_found']] or [0]):.3f} | "
                  f"{sum(r['other_findings'] for r in rs)} ({sum(r['other_high'] for r in rs)}) |")
    c = out["clean_medquad_16k"]
    md += ["", f"Clean MedQuAD (all {c['rows']:,} pairs): {c['findings']} findings, rows flagged high "
           f"{c['high_rate']:.3%}, any severity {c['any_rate']:.3%}."]
    out["markdown"] = md
    return out


PARTS = {"safety": bench_safety, "preference": bench_preference, "rag": bench_rag, "polarity": bench_polarity}


def write_markdown(results: dict) -> None:
    lines = ["<!-- generated by benchmarks/bench_llm.py; do not edit -->", "",
             "Command: `python benchmarks/bench_llm.py ../shared/data` (2 CPU cores).", ""]
    if "safety" in results:
        s = results["safety"]
        p = s["planted_100_in_10000"]
        lines += ["### Safety-bypass (`safety-bypass`)", "",
                  f"Split: {s['split']}.", "",
                  "| measure | value |", "|---|---|",
                  f"| 100 harmful pairs in 10,000 benign: recall / precision (any severity) | {p['any_severity']['recall']} / {p['any_severity']['precision']} |",
                  f"| same, high severity only | {p['high_severity']['recall']} / {p['high_severity']['precision']} |",
                  ]
        h = s["held_out_categories"]
        for proto, label in (("strict", "HarmBench only"), ("with_advbench", "HarmBench + AdvBench minus neighbours")):
            lines.append(f"| held-out HarmBench categories ({label}): pooled / mean / min recall | "
                         f"{h[proto]['pooled_recall']} / {h[proto]['mean_recall']} / {h[proto]['min_recall']} |")
        for cat in h["strict"]["per_category"]:
            a, b = h["strict"]["per_category"][cat], h["with_advbench"]["per_category"][cat]
            lines.append(f"| &nbsp; held out `{cat}` ({a['test_rows']} rows) | recall {a['recall']} / {b['recall']} "
                         f"({b['advbench_goals_used']} AdvBench goals kept) |")
        cv = h["with_advbench"]["pooled_request_recall_curve"]
        bc = h["shipped_model_benign_curve"]["synthetic_benign_instructions_test_topics"]
        lines.append("| request threshold 0.3 / 0.4 / 0.5: held-out pooled request recall (with AdvBench) | "
                     f"{cv['0.3']} / {cv['0.4']} / {cv['0.5']} |")
        lines.append("| same thresholds: shipped model on synthetic benign instructions (unseen topics) | "
                     f"{bc['0.3']:.2%} / {bc['0.4']:.2%} / {bc['0.5']:.2%} |")
        b = s["benign"]
        lines += [f"| MedQuAD all 16,407 QA pairs flagged high | {b['medquad_all_16k']['high_rate']:.3%} |",
                  f"| MedQuAD test side flagged high | {b['medquad_test_side']['high_rate']:.3%} |",
                  f"| SST-2 train+dev phrases scored as harmful requests (p >= 0.8) | {b['sst2_train_dev_as_requests']['harmful_request_rate_p>=0.8']:.3%} |",
                  f"| same, only SST-2 phrases never used in training ({b['sst2_unseen_as_requests']['rows']:,}) | {b['sst2_unseen_as_requests']['harmful_request_rate_p>=0.8']:.3%} |",
                  f"| synthetic benign instructions (unseen topics) scored harmful (p >= 0.5) | {b['synthetic_benign_instructions_test_topics']['harmful_request_rate_p>=0.5']:.2%} |",
                  f"| refusal model: hh-rlhf regex-refusal turns recall | {s['refusal_model']['hh_rlhf_turns_regex_refusals_recall']} |",
                  f"| refusal model: hh-rlhf other turns called refusal | {s['refusal_model']['hh_rlhf_turns_regex_nonrefusals_called_refusal']} |",
                  ""]
    for key, title in (("preference", "RLHF preference poisoning"), ("polarity", "Polarity instruction triggers"),
                       ("rag", "RAG knowledge-base scan")):
        if key in results and "markdown" in results[key]:
            lines += [f"### {title}", "", *results[key]["markdown"], ""]
    lines += ["Wall time per part (seconds, with the machine's 1/5/15-minute load average when it ended; "
              "the machine is shared): " + ", ".join(f"{k} {v['total_seconds']} ({' / '.join(map(str, v['load_average_1_5_15']))})"
                                                     for k, v in results.items() if "load_average_1_5_15" in v) + "."]
    (ROOT / "docs" / "_bench_llm.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--part", choices=sorted(PARTS), action="append")
    args = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {}
    for part in args.part or sorted(PARTS):
        t0 = time.perf_counter()
        results[part] = PARTS[part](args.data)
        results[part]["total_seconds"] = round(time.perf_counter() - t0, 1)
        results[part]["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
        (RESULTS / f"llm_{part}.json").write_text(json.dumps(results[part], indent=2) + "\n")
        print(json.dumps({k: v for k, v in results[part].items() if k != "markdown"}, indent=1)[:3000])
    for part in PARTS:  # keep other parts' figures in the markdown
        f = RESULTS / f"llm_{part}.json"
        if part not in results and f.exists():
            results[part] = json.loads(f.read_text())
    write_markdown(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
