"""Rebuild the bundled safety models: harmful-request, refusal, harm-category.

    python scripts/train_safety_models.py ../shared/data            # writes src/trainguard/data/models/*.npz
    python scripts/train_safety_models.py ../shared/data --check    # train and report, write nothing

Data (all from ../shared/data; split by a stable hash of the text so the split
never depends on file order; benchmarks/bench_llm.py evaluates on the test side):
- harmful requests: AdvBench `goal` and HarmBench `behavior` (train 70 % / test 30 %);
- benign requests: MedQuAD questions (train 40 % / test 60 %), a 3,000-sentence SST-2
  slice, and SYNTHETIC benign imperative instructions built here from a verb x topic
  grammar (topics split train/test) so "Write a script ..." is not by itself harmful;
- refusals: SYNTHETIC refusal templates built here (combinations split train/test);
  no hh-rlhf text is used for training (it is the RLHF benchmark);
- compliant answers: MedQuAD answers (same 40 % split), AdvBench `target` openings
  ("Sure, here is ..."), SST-2 sentences as generic non-refusal prose;
- harm categories: HarmBench `semantic_category` (train split only).
Model: sublinear TF-IDF over word 1-2-grams + logistic regression; exported as arrays
and re-scored with trainguard's own inference code, which must match sklearn to 1e-9.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from trainguard.detectors.llm_models import (
    CATEGORY_MODEL, HARM_MODEL, REFUSAL_MODEL, LinearTextModel, features,
)

OUT = Path(__file__).resolve().parent.parent / "src" / "trainguard" / "data" / "models"
REQUEST_TOKENS, RESPONSE_TOKENS, NGRAM = 64, 48, 2


def read(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def in_test(text: str, share: float) -> bool:
    """Stable split: the first 8 bytes of SHA-256(text) as a fraction below `share`."""
    h = int.from_bytes(hashlib.sha256(text.strip().lower().encode()).digest()[:8], "big")
    return h / 2**64 < share


# --- synthetic benign instructions (verb x topic) ---------------------------------------
VERBS = ("Write a tutorial on how to {t}", "Give detailed instructions for how to {t}", "Explain how to {t}",
         "Create a step-by-step guide to {t}", "Write a script that helps people {t}", "Describe the best way to {t}",
         "Provide a list of tips to {t}", "Develop a plan to {t}", "Write a blog post about how to {t}",
         "Teach me how to {t}", "Outline the steps needed to {t}", "Generate a checklist to {t}",
         "Write a social media post encouraging people to {t}", "Design a program that can {t}",
         "Create a tutorial video script on how to {t}", "What is the easiest way to {t}?")
TOPICS = (
    "bake sourdough bread", "change a flat bicycle tire", "set up a home wifi network", "plan a birthday party",
    "learn a new language quickly", "write a strong cover letter", "grow tomatoes on a balcony",
    "reduce household energy use", "back up files on a laptop", "train a puppy to sit", "improve sleep quality",
    "manage a monthly budget", "clean a cast iron pan", "start a running routine", "organise a small closet",
    "prepare for a job interview", "recognise a phishing email", "protect a computer from malware",
    "report identity theft to the authorities", "secure an online banking account", "store household chemicals safely",
    "support a friend who is being bullied", "dispose of old medicines safely", "give first aid for a minor burn",
    "create a strong password", "install a ceiling fan", "make a vegetable soup", "paint a bedroom wall",
    "study for a maths exam", "write a short story about a dragon", "compose a thank-you note", "repot a houseplant",
    "file a tax return", "negotiate a higher salary", "teach a child to ride a bike", "brew a good cup of coffee",
    "set up a python virtual environment", "write a function that sorts a list", "build a birdhouse from wood",
    "photograph the night sky", "lower blood pressure through diet", "talk to a doctor about anxiety",
    "prepare an emergency kit for a storm", "recycle electronic waste", "detect a gas leak at home",
    "keep kids safe online", "spot fake news articles", "avoid online shopping scams", "fix a leaking tap",
    "plant a herb garden", "improve posture at a desk", "plan a road trip across the country",
    "read a nutrition label", "care for an elderly parent", "make homemade pasta", "knit a scarf",
    "deal with a difficult coworker", "speed up a slow computer", "volunteer at a local shelter",
    "write a persuasive essay about recycling", "create a website for a bakery", "debug a memory leak in a program",
    "encrypt files on a hard drive", "test a website for accessibility problems", "quit smoking",
    "take care of a sunburn", "keep a sourdough starter alive", "organise a neighbourhood cleanup",
)


ACTIONS = {  # compositional topics, so no single topic word carries the benign class
    "make": ("a lemon cake", "vegetable curry", "pancakes", "a fruit smoothie", "homemade pizza dough", "granola bars",
             "a paper airplane", "a birthday card", "scented candles", "a bird feeder"),
    "fix": ("a squeaky door", "a running toilet", "a broken zipper", "a wobbly table", "a slow laptop",
            "a cracked phone screen protector", "a bike chain", "a clogged drain", "a flickering light"),
    "learn": ("to play the guitar", "basic spanish", "to swim as an adult", "touch typing", "to juggle",
              "to draw portraits", "the basics of statistics", "to solve a rubik's cube", "sign language"),
    "plan": ("a wedding on a budget", "a school fundraiser", "a camping trip", "a team offsite", "a weekly meal menu",
             "a garden layout", "a study schedule", "a retirement party"),
    "clean": ("a laptop keyboard", "white sneakers", "a fish tank", "an oven", "hardwood floors", "a car interior"),
    "grow": ("strawberries in pots", "a lemon tree indoors", "basil from seed", "a lawn from scratch", "mushrooms at home"),
    "write": ("a wedding speech", "a product description for candles", "a resignation letter", "a poem about autumn",
              "a children's story about a brave turtle", "a review of a new restaurant", "release notes for an app",
              "a grant proposal for a library", "a haiku about the sea"),
    "build": ("a bookshelf", "a raised garden bed", "a simple web app", "a chess engine in python",
              "a treehouse", "a weather station with a raspberry pi", "a budgeting spreadsheet"),
    "improve": ("public speaking skills", "a credit score", "focus while studying", "running endurance",
                "team communication", "the battery life of a phone", "handwriting"),
    "protect": ("a home from burglars", "children from online predators", "a network from intruders",
                "elderly relatives from phone scams", "plants from frost", "personal data on social media",
                "a small business from ransomware"),
    "choose": ("a good mattress", "a family car", "running shoes", "a health insurance plan", "a laptop for college",
               "a reliable babysitter"),
    "understand": ("how vaccines work", "how mortgages work", "how elections are audited", "how antibiotics work",
                   "how encryption keeps messages private", "how firewalls block attacks"),
}


def benign_instructions() -> tuple[list[str], list[str]]:
    train, test = [], []
    topics = list(TOPICS) + [f"{a} {o}" for a, objs in ACTIONS.items() for o in objs]
    for t in topics:
        side = test if in_test(t, 0.3) else train
        side.extend(v.format(t=t) for v in VERBS)
    return train, test


# --- synthetic refusals ------------------------------------------------------------------
OPENERS = ("I'm sorry, but", "Sorry, but", "I apologize, but", "Unfortunately,", "I'm afraid", "", "As an AI assistant,",
           "I'm really sorry, but", "No,", "I understand you're curious, but", "Thanks for asking, but")
CORES = ("I can't help with that", "I cannot help with this request", "I can't provide instructions for {x}",
         "I won't assist with {x}", "I'm not able to provide that information", "I can't create content that promotes {x}",
         "I must refuse this request", "this isn't something I can help with", "I cannot assist with requests involving {x}",
         "I'm unable to comply with that", "I don't feel comfortable helping with {x}", "I can't do that",
         "I will not write that", "I can't give advice on {x}", "providing that would be irresponsible",
         "I have to decline", "that's not something I'm willing to do")
SUBJECTS = ("that", "this", "illegal activities", "harming others", "this topic", "hacking into systems", "weapons",
            "violence", "fraud", "self-harm", "dangerous substances", "harassment", "stealing", "misinformation")
REASONS = ("", "because it could cause serious harm.", "since it would be illegal.", "as it could put people at risk.",
           "because it goes against my guidelines.", "It would be unsafe and unethical.", "It could hurt someone.")
ALTERNATIVES = ("", "If you're struggling, please reach out to a professional.", "Is there something else I can help with?",
                "I'd be happy to help with a safer alternative.", "If you are in danger, please contact emergency services.",
                "I can share general safety information instead.", "Let me know if you have another question.")


def refusals() -> tuple[list[str], list[str]]:
    train, test = [], []
    for o, c in itertools.product(OPENERS, CORES):
        side = test if in_test(o + "|" + c, 0.3) else train
        for k, (s, r, a) in enumerate(itertools.product(SUBJECTS, REASONS, ALTERNATIVES)):
            if k % 23:  # a thin, even slice of the combinations
                continue
            core = c.format(x=s)
            first = f"{o} {core}".strip() if o else core[0].upper() + core[1:]
            side.append(" ".join(p for p in (first + ("." if not r or r[0].isupper() else ""), r, a) if p)
                        .replace(". because", " because").replace(". since", " since").replace(". as it", " as it"))
    return train, test


# --- corpora -----------------------------------------------------------------------------
def corpora(data: Path) -> dict:
    adv = read(data / "advbench" / "harmful_behaviors.jsonl.gz")
    hb = read(data / "harmbench" / "behaviors_text_all.jsonl.gz")
    mq = read(data / "medquad" / "medquad.jsonl.gz")
    with gzip.open(data / "sst2" / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        sst = [json.loads(line)["text"] for _, line in zip(range(20000), f)]
    sst = [s for s in sst if len(s.split()) >= 6][:3000]  # full sentences, not SST's sub-phrases
    ben_tr, ben_te = benign_instructions()
    ref_tr, ref_te = refusals()
    c = {
        "adv_train": [r for r in adv if not in_test(r["goal"], 0.3)],
        "adv_test": [r for r in adv if in_test(r["goal"], 0.3)],
        "hb_train": [r for r in hb if not in_test(r["behavior"], 0.3)],
        "hb_test": [r for r in hb if in_test(r["behavior"], 0.3)],
        "mq_train": [r for r in mq if not in_test(r["question"] + r["answer"], 0.6)],
        "mq_test": [r for r in mq if in_test(r["question"] + r["answer"], 0.6)],
        "sst": sst, "benign_train": ben_tr, "benign_test": ben_te, "refusal_train": ref_tr, "refusal_test": ref_te,
    }
    return c


def harm_training_set(c: dict, harm_rows_hb: list[dict] | None = None, use_adv: bool = True):
    """Texts, labels and sample weights: harmful and benign weigh the same in total, and benign
    imperative instructions weigh as much as all the medical questions and prose together, so the
    request's framing ("Write a tutorial on how to ...") cannot decide the class."""
    hb = c["hb_train"] if harm_rows_hb is None else harm_rows_hb
    pos = [r["behavior"] for r in hb] + ([r["goal"] for r in c["adv_train"]] if use_adv else [])
    imp = c["benign_train"]
    other = [r["question"] for r in c["mq_train"]] + c["sst"]
    w = np.r_[np.full(len(pos), 1.0 / len(pos)), np.full(len(imp), 0.5 / len(imp)), np.full(len(other), 0.5 / len(other))]
    w *= len(w) / w.sum()
    return pos + imp + other, np.r_[np.ones(len(pos)), np.zeros(len(imp) + len(other))], w


def refusal_training_set(c: dict):
    pos = c["refusal_train"]
    neg = [r["answer"] for r in c["mq_train"]] + [r["target"] for r in c["adv_train"]] + c["sst"]
    return pos + neg, np.r_[np.ones(len(pos)), np.zeros(len(neg))], None


def fit(texts: list[str], y: np.ndarray, max_tokens: int, name: str, C: float = 4.0, min_df: int = 2,
        weights: np.ndarray | None = None) -> tuple[LinearTextModel, TfidfVectorizer, LogisticRegression]:
    vec = TfidfVectorizer(analyzer=lambda t: features(t, max_tokens, NGRAM), sublinear_tf=True, min_df=min_df,
                          dtype=np.float64)
    X = vec.fit_transform(texts)
    clf = LogisticRegression(C=C, max_iter=3000, class_weight=None if weights is not None else "balanced")
    clf.fit(X, y, sample_weight=weights)
    vocab = {str(k): int(v) for k, v in vec.vocabulary_.items()}
    classes = tuple(str(k) for k in clf.classes_)
    model = LinearTextModel(name, vocab, vec.idf_.astype(np.float64), clf.coef_.astype(np.float64),
                            clf.intercept_.astype(np.float64), classes, max_tokens, NGRAM)
    return model, vec, clf


def verify(model: LinearTextModel, vec: TfidfVectorizer, clf: LogisticRegression, texts: list[str]) -> None:
    ours = model.decision(texts)
    ref = clf.decision_function(vec.transform(texts))
    ref = ref.reshape(len(texts), -1)
    err = float(np.abs(ours - ref).max())
    if err > 1e-9:
        raise SystemExit(f"{model.name}: exported model disagrees with sklearn (max |diff| {err:.2e})")


def train_all(data: Path) -> dict[str, tuple[LinearTextModel, TfidfVectorizer, LogisticRegression, list[str]]]:
    c = corpora(data)
    out = {}
    X, y, w = harm_training_set(c)
    out[HARM_MODEL] = (*fit(X, y, REQUEST_TOKENS, HARM_MODEL, weights=w), X)
    X, y, w = refusal_training_set(c)
    out[REFUSAL_MODEL] = (*fit(X, y, RESPONSE_TOKENS, REFUSAL_MODEL, weights=w), X)
    X = [r["behavior"] for r in c["hb_train"]]
    y = np.array([r["semantic_category"] for r in c["hb_train"]])
    out[CATEGORY_MODEL] = (*fit(X, y, REQUEST_TOKENS, CATEGORY_MODEL, C=10.0, min_df=1), X)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path, help="the shared data folder (advbench/, harmbench/, medquad/, sst2/)")
    ap.add_argument("--check", action="store_true", help="train and verify, write nothing")
    args = ap.parse_args(argv)
    models = train_all(args.data)
    for name, (model, vec, clf, X) in models.items():
        verify(model, vec, clf, X[:2000])
        print(f"{name}: {len(model.vocab):,} features, classes {list(model.classes)}", file=sys.stderr)
        if not args.check:
            OUT.mkdir(parents=True, exist_ok=True)
            model.save(OUT / f"{name}.npz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
