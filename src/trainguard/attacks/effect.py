"""Does an attack take? Train small models on the poisoned rows and measure attack success.

A "caught" figure only means something for attacks that work, so every
adaptive benchmark reports attack success rate (ASR) next to detection.

Classification: two scikit-learn models trained on the poisoned texts and
labels, each the shape of a different tokenizer:
- `words`: TF-IDF over lower-cased word 1-2-grams + logistic regression (the
  view of a word-level model: blind to case, whitespace and punctuation runs);
- `chars`: TF-IDF over raw character 1-4-grams (case, whitespace, tabs and
  punctuation kept, as a byte-level tokenizer sees them) + logistic regression.
ASR = share of held-out rows of the non-target labels that the model puts in
the target label once the attack's trigger is applied to them (the attack's
own `transform`, so generated triggers are new draws, not training copies);
`clean_accuracy` is accuracy on the untouched held-out rows.

Instruction data: no language model is trained here. The proxy is a
retrieval "memoriser": TF-IDF nearest neighbour of the question among the
training questions, answering with that row's answer. ASR = share of
triggered held-out questions whose answer carries the payload (one of the
paraphrases), `clean_payload_rate` the same share without the trigger. It
measures whether the trigger alone pulls a prompt onto the poisoned answers,
not whether a fine-tuned LLM would generalise the payload's meaning.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors

from trainguard.attacks.base import get

MODELS = {
    "words": dict(lowercase=True, ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b|[^\w\s]", sublinear_tf=True),
    "chars": dict(analyzer="char", lowercase=False, ngram_range=(1, 4), min_df=2, max_features=300_000,
                  sublinear_tf=True),
}


def triggered(attack: str, params: dict[str, Any], texts: Sequence[str], seed: int = 0) -> list[str]:
    """`texts` with the attack's poisoning transform applied (the trigger a user of the backdoor would add)."""
    atk = get(attack)(**params)
    if hasattr(atk, "setup"):
        atk._rank = 0
        atk.setup(None)
    rng = np.random.default_rng([int(seed), 77])
    out = []
    for t in texts:
        new, _, _ = atk.transform(t, "poison", rng)
        atk._rank += 1
        if hasattr(atk, "_used"):  # held-out clauses may repeat 2-grams: the grammar is the trigger
            atk._used.clear()
        out.append(new)
    return out


def classification_asr(train_texts: Sequence[str], train_labels: Sequence[Any], attack: str, params: dict[str, Any],
                       heldout_texts: Sequence[str], heldout_labels: Sequence[Any], target: Any,
                       seed: int = 0, models: Sequence[str] = ("words", "chars")) -> dict[str, dict[str, float]]:
    """Per model: ASR on triggered held-out non-target rows, and clean held-out accuracy."""
    y = np.asarray([str(v) for v in train_labels])
    hy = np.asarray([str(v) for v in heldout_labels])
    victims = [t for t, lab in zip(heldout_texts, hy) if lab != str(target)]
    trig = triggered(attack, params, victims, seed)
    out = {}
    for name in models:
        vec = TfidfVectorizer(**MODELS[name])
        X = vec.fit_transform(train_texts)
        clf = LogisticRegression(C=10.0, solver="liblinear", max_iter=2000).fit(X, y)
        asr = float(np.mean(clf.predict(vec.transform(trig)) == str(target))) if trig else float("nan")
        base = float(np.mean(clf.predict(vec.transform(victims)) == str(target))) if victims else float("nan")
        acc = float(np.mean(clf.predict(vec.transform(list(heldout_texts))) == hy))
        out[name] = {"asr": round(asr, 4), "baseline_target_rate": round(base, 4), "clean_accuracy": round(acc, 4)}
    return out


def instruction_asr(train_questions: Sequence[str], train_answers: Sequence[str], attack: str,
                    params: dict[str, Any], heldout_questions: Sequence[str], payloads: Sequence[str],
                    seed: int = 0) -> dict[str, float]:
    """Retrieval proxy: share of triggered held-out questions whose nearest training answer carries a payload."""
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    X = vec.fit_transform(train_questions)
    nn = NearestNeighbors(n_neighbors=1, metric="cosine").fit(X)
    carries = np.asarray([any(p in a for p in payloads) for a in train_answers])
    atk = get(attack)(**params)
    rng = np.random.default_rng([int(seed), 78])
    from trainguard.attacks.adaptive import _insert_words

    trig = [_insert_words(q, [atk.settings.trigger], atk.settings.position, rng)[0] for q in heldout_questions]
    hit = carries[nn.kneighbors(vec.transform(trig), return_distance=False)[:, 0]]
    base = carries[nn.kneighbors(vec.transform(list(heldout_questions)), return_distance=False)[:, 0]]
    return {"asr": round(float(hit.mean()), 4), "clean_payload_rate": round(float(base.mean()), 4),
            "proxy": "tf-idf nearest-neighbour answer retrieval"}
