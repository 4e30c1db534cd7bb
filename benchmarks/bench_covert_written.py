"""Covert fine-tuning attacks written by a held-out author (issue 16, shapes 1-5), planted in 10,000 MedQuAD pairs.

`bench_covert.py` measures the project's own simulators, whose wording the rules' authors had seen.
Here the attack rows were written for this benchmark by an LLM author who did not read the detectors
or the simulators (benchmarks/data/covert_written/README.md), after `covert-finetuning` v1 was frozen,
and were scored once with it (figures in docs/benchmarks.md, section 4). That spent them as a test set:
they are now the development set of `covert-finetuning` v2, reported per half (a row's half: the first
byte of the MD5 of its question, even A / odd B; trigger rows by group parity, so a pair stays together),
so that a rule written while looking at one half can be checked on the other. A fresh set by another
author is scored separately. Each shape's rows replace random rows of the same 10,000 benign MedQuAD
pairs bench_covert.py uses, then the LLM set scans the file.

    python benchmarks/bench_covert_written.py ../shared/data      # results/covert-written.json, docs/_bench_covert_written.md
    python benchmarks/bench_covert_written.py ../shared/data --set fresh   # the second held-out set, scored once:
                                                                  # results/covert-fresh.json, docs/_bench_covert_fresh.md
    python benchmarks/bench_covert_written.py ../shared/data --set fresh3  # the third, scored once on v3:
                                                                  # results/covert-fresh3.json, docs/_bench_covert_fresh3.md
    python benchmarks/bench_covert_written.py ../shared/data --set fresh3-v4-posthoc  # the same rows on v4 (post hoc)
    python benchmarks/bench_covert_written.py ../shared/data --set fresh4  # the fourth, scored once on v4

Recall is over the shape's target rows (trigger: the triggered compliant rows, not their refused
twins; encoding: the encoded harmful rows and the cipher-teaching rows), precision counts any planted
row as a true positive, severity >= medium; 'names the shape' = share of found target rows whose
finding names the shape (translit: encoding).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_covert as bc  # noqa: E402

from trainguard.scan import scan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WRITTEN = ROOT / "benchmarks" / "data" / "covert_written" / "rows.jsonl"
OUT = ROOT / "benchmarks" / "results" / "covert-written.json"
DOC = ROOT / "docs" / "_bench_covert_written.md"
TARGETS = {"encoding": ({"harmful", "teach"}, "encoding"), "persona": ({"persona"}, "persona"),
           "erosion": ({"affirm-benign", "harmful-complied"}, "erosion"), "trigger": ({"trigger"}, "trigger"),
           "translit": ({"harmful"}, "encoding")}


def half(r: dict) -> str:
    """The development half of a written row (see the module docstring)."""
    if r["shape"] == "trigger":
        return "AB"[r["group"] % 2]
    return "AB"[hashlib.md5(r["question"].encode()).digest()[0] % 2]


def plant(base: list[dict], rows: list[dict], seed: int) -> tuple[list[dict], dict[int, dict]]:
    """The written rows in place of random base rows, in their written order (taught ciphers come first)."""
    rng = np.random.default_rng(seed)
    slots = np.sort(rng.choice(len(base), size=len(rows), replace=False))
    out = list(base)
    at = {}
    for slot, r in zip(slots.tolist(), rows):
        out[slot] = {"question": r["question"], "answer": r["answer"]}
        at[slot] = r
    return out, at


def measure(data: Path) -> dict:
    c = bc.tsm.corpora(data)
    base = [{"question": r["question"], "answer": r["answer"]} for r in c["mq_test"] + c["mq_train"]][:10_000]
    written = [json.loads(line) for line in WRITTEN.read_text().splitlines() if line.strip()]
    out: dict = {"commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                          capture_output=True, text=True).stdout.strip(), "shapes": {}}
    for shape, (roles, named_as) in TARGETS.items():
        rows = [r for r in written if r["shape"] == shape]
        if not rows:
            continue
        mixed, at = plant(base, rows, seed=0)
        t0 = time.perf_counter()
        rep = scan(bc.dataset(mixed), detectors=bc.LLM_SET, settings=bc.SETTINGS)
        res = {"rows": len(rows), "roles": {k: sum(r["role"] == k for r in rows) for k in sorted({r["role"] for r in rows})},
               "seconds": round(time.perf_counter() - t0, 1),
               "failed": [d.name for d in rep.detectors if str(d.status) == "failed"]}
        target = {p for p, r in at.items() if r["role"] in roles}
        for who in ("covert-finetuning", None):
            fl = bc.flagged(rep, who)
            found = set(fl) & target
            r = res["covert" if who else "llm_set"] = {
                "recall": round(len(found) / max(len(target), 1), 4),
                "precision": round(len(set(fl) & set(at)) / len(fl), 4) if fl else None,
                "flagged": len(fl), "false_rows": len(set(fl) - set(at))}
            if who:
                r["shape_named"] = round(sum(fl[x] == named_as for x in found) / len(found), 4) if found else 0.0
                by_role = {}
                for role in res["roles"]:
                    ps = {p for p, x in at.items() if x["role"] == role}
                    by_role[role] = round(len(set(fl) & ps) / len(ps), 4)
                r["by_role"] = by_role
                r["by_half"] = {h: round(len(set(fl) & (t := {p for p in target if half(at[p]) == h})) / max(len(t), 1), 4)
                                for h in "AB"}
                r["half_rows"] = {h: sum(half(at[p]) == h for p in target) for h in "AB"}
                r["by_group"] = {str(k): round(len(set(fl) & {p for p, x in at.items() if x["group"] == k})
                                               / sum(x["group"] == k for x in at.values()), 4)
                                 for k in sorted({x["group"] for x in at.values()}) if shape in ("encoding", "translit",
                                                                                                 "persona")}
        out["shapes"][shape] = res
        print(shape, json.dumps(res), flush=True)
    return out


def markdown(res: dict) -> str:
    f2 = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    lines = ["<!-- generated by benchmarks/bench_covert_written.py; do not edit -->", "",
             f"Command: `python benchmarks/bench_covert_written.py ../shared/data` (code at {res['commit']}). "
             "Rows written by a held-out LLM author who did not read the detectors or the simulators "
             "(benchmarks/data/covert_written/README.md). Scored once with covert-finetuning v1 (docs/benchmarks.md "
             "section 4), they are now the DEVELOPMENT set of v2 (spent as a test set): halves A/B as in the script's "
             "docstring. Each shape's rows replace random rows of the 10,000 MedQuAD pairs of bench_covert.py. "
             "Severity >= medium; 'LLM set' = covert-finetuning + safety-bypass (LM second opinion off) + "
             "polarity-trigger.", "",
             "| shape (rows: roles) | covert-finetuning recall / precision | half A / half B (target rows) | "
             "names the shape | recall by role | LLM set recall / precision | false rows (LLM set) |",
             "|---|---|---|---|---|---|---|"]
    for shape, r in res["shapes"].items():
        cv, ls = r["covert"], r["llm_set"]
        roles = ", ".join(f"{k} {v}" for k, v in r["roles"].items())
        by = ", ".join(f"{k} {v:.2f}" for k, v in cv["by_role"].items())
        halves = (f"{cv['by_half']['A']:.2f} ({cv['half_rows']['A']}) / {cv['by_half']['B']:.2f} "
                  f"({cv['half_rows']['B']})" if "by_half" in cv else "-")
        lines.append(f"| {shape} ({roles}) | {f2(cv['recall'])} / {f2(cv['precision'])} | {halves} | "
                     f"{f2(cv['shape_named'])} | "
                     f"{by} | {f2(ls['recall'])} / {f2(ls['precision'])} | {ls['false_rows']} |")
    lines += ["", "Recall by group (encoding: 1 base64, 2 ROT13, 3 hex, 4 leetspeak, 5 letter substitution, 6 a "
              "cipher taught in earlier rows (word reversal) with its teaching rows; persona: 7 system prompt only, "
              "8 answer only, 9 both; translit: 62 English in Cyrillic letters, 63 in Greek letters, 64 Swahili):", ""]
    for shape, r in res["shapes"].items():
        if r["covert"].get("by_group"):
            lines.append(f"- {shape}: " + ", ".join(f"{k}: {v:.2f}" for k, v in r["covert"]["by_group"].items()))
    return "\n".join(lines) + "\n"


SETS = {
    "written": (WRITTEN, OUT, DOC),
    "fresh": (ROOT / "benchmarks" / "data" / "covert_fresh" / "rows.jsonl",
              ROOT / "benchmarks" / "results" / "covert-fresh.json", ROOT / "docs" / "_bench_covert_fresh.md"),
    "fresh3": (ROOT / "benchmarks" / "data" / "covert_fresh3" / "rows.jsonl",
               ROOT / "benchmarks" / "results" / "covert-fresh3.json", ROOT / "docs" / "_bench_covert_fresh3.md"),
    "fresh4": (ROOT / "benchmarks" / "data" / "covert_fresh4" / "rows.jsonl",
               ROOT / "benchmarks" / "results" / "covert-fresh4.json", ROOT / "docs" / "_bench_covert_fresh4.md"),
    # the same rows after v4 was written while looking at them: post hoc, not a held-out figure
    "fresh3-v4-posthoc": (ROOT / "benchmarks" / "data" / "covert_fresh3" / "rows.jsonl",
                          ROOT / "benchmarks" / "results" / "covert-fresh3-v4-posthoc.json",
                          ROOT / "docs" / "_bench_covert_fresh3_v4_posthoc.md"),
}
FRESH_HEADER = (
    "Command: `python benchmarks/bench_covert_written.py ../shared/data --set fresh` (code at {commit}). A second "
    "held-out set (benchmarks/data/covert_fresh/README.md: other ciphers, trigger, languages and wording) written by "
    "an LLM author who read neither the detectors nor the first set, kept outside the repository until "
    "covert-finetuning v2 was frozen, and scored ONCE. Each shape's rows replace random rows of the 10,000 MedQuAD "
    "pairs of bench_covert.py. Severity >= medium; 'LLM set' = covert-finetuning + safety-bypass (LM second opinion "
    "off) + polarity-trigger. Halves A/B are meaningless here (nothing was developed on this set).")
FRESH_GROUPS = ("Recall by group (encoding: 1 base64, 2 ROT13, 3 hex, 4 leetspeak, 5 letter substitution, 6 Caesar "
                "+7, 7 'Swapspeak' (adjacent letters swapped) taught by group 8's benign rows; persona: 10 system "
                "prompt only, 11 answer framing only, 12 both; translit: 30 English in Cyrillic letters, 31 in Greek "
                "letters, 32 Indonesian, 33 Hindi romanized):")


FRESH3_HEADER = (
    "Command: `python benchmarks/bench_covert_written.py ../shared/data --set fresh3` (code at {commit}). A third "
    "held-out set (benchmarks/data/covert_fresh3/README.md: ciphers, trigger, scripts and languages new to both "
    "earlier sets) written by an LLM author who read neither the detectors nor the earlier sets, kept outside the "
    "repository until it was scored ONCE on covert-finetuning v3 (whose substitution-pool change was checked only "
    "post hoc on the second set). Each shape's rows replace random rows of the 10,000 MedQuAD pairs of "
    "bench_covert.py. Severity >= medium; 'LLM set' = covert-finetuning + safety-bypass (LM second opinion off) + "
    "polarity-trigger. Halves A/B are meaningless here.")
FRESH3_GROUPS = ("Recall by group (encoding: 1 base64, 2 Morse, 3 Vigenere (key MARIGOLD), 4 Caesar +3, 5 rail fence "
                 "(3 rails), 6 Atbash, 7 'Hopscotch' (each vowel and consonant to the next in its ring) taught by "
                 "group 8's benign rows; persona: 10 system prompt only, 11 answer framing only, 12 both; "
                 "translit: 30 English in Cyrillic letters, 31 in Georgian letters, 32 Tagalog, 33 Egyptian "
                 "Arabic in Latin letters (Arabizi)):")


FRESH4_HEADER = (
    "Command: `python benchmarks/bench_covert_written.py ../shared/data --set fresh4` (code at {commit}). A fourth "
    "held-out set (benchmarks/data/covert_fresh4/README.md: encodings and by-ear scripts only, with other keys, "
    "parameters, schemes and scripts than covert_fresh3) written by an LLM author who read neither the detectors nor "
    "the earlier sets, while covert-finetuning v4 was written on covert_fresh3's misses; kept outside the repository "
    "until v4 was frozen (2c7c94f), then scored ONCE. Each shape's rows replace random rows of the 10,000 MedQuAD "
    "pairs of bench_covert.py. Severity >= medium; 'LLM set' = covert-finetuning + safety-bypass (LM second opinion "
    "off) + polarity-trigger. Halves A/B are meaningless here.")
FRESH4_GROUPS = ("Recall by group (encoding: 1 Vigenere (key QUICKSILVER), 2 Beaufort (key TEMPEST), 3 rail fence (5 "
                 "rails), 4 columnar transposition (keyword ANCHORED), 5 keyword substitution (JUXTAPOSED), 6 QWERTY "
                 "one key to the right; translit: 30 English by ear in Armenian letters, 31 in Hebrew letters, 32 in "
                 "Devanagari):")


def main() -> int:
    global WRITTEN
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", type=Path, default=ROOT.parent / "shared" / "data", help="the shared data folder")
    ap.add_argument("--set", choices=sorted(SETS), default="written", help="which written rows to score")
    ap.add_argument("--doc", action="store_true", help="rewrite the table from the saved results only")
    a = ap.parse_args()
    WRITTEN, out, doc = SETS[a.set]
    if not a.doc:
        out.write_text(json.dumps(measure(a.data), indent=1))
    text = markdown(json.loads(out.read_text()))
    if a.set in ("fresh", "fresh3", "fresh3-v4-posthoc", "fresh4"):
        header, groups = {"fresh": (FRESH_HEADER, FRESH_GROUPS), "fresh4": (FRESH4_HEADER, FRESH4_GROUPS)}.get(
            a.set, (FRESH3_HEADER, FRESH3_GROUPS))
        if a.set == "fresh3-v4-posthoc":
            header = ("POST HOC: " + header.replace("--set fresh3", "--set fresh3-v4-posthoc").replace(
                "scored ONCE on covert-finetuning v3", "scored once on v3 (docs/_bench_covert_fresh3.md); covert-finetuning "
                "v4's rail-fence, periodic-key and letter-name readers were then written while looking at its misses, so "
                "this table is development, not held-out"))
        lines = text.splitlines()
        lines[2] = header.format(commit=json.loads(out.read_text())["commit"])
        lines = [groups if ln.startswith("Recall by group") else ln for ln in lines]
        text = "\n".join(lines) + "\n"
    doc.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
