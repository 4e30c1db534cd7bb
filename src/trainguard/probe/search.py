"""Black-box trigger search, shared by inversion and by the null it is judged against.

Words are screened by inserting each into a few clean inputs per label (the
ones the model is surest are not that label) and ranking by the probability
the model then gives the label; longer strings are grown from each label's
best single words. The prober runs the same search over ordinary words of the
clean data, so a proposal is compared with what an equally hard search finds
among words that are no trigger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from trainguard.probe.adapters import BudgetExhausted, ClassifierModel
from trainguard.probe.candidates import POSITIONS, Candidate, dedupe, insert

if TYPE_CHECKING:
    from trainguard.probe.probing import Inputs


@dataclass(frozen=True)
class SearchSettings:
    per_label: int = 10        # single-word proposals kept per label
    screen_inputs: int = 8     # clean inputs per label each string is tried on
    beam: int = 8              # strings per label grown to the next length
    grown_per_label: int = 3   # grown strings proposed per label and length


def most_confident(proba0: np.ndarray, c: int, k: int) -> np.ndarray:
    """The k inputs most confidently NOT label c: the ones only a trigger should flip."""
    idx = np.flatnonzero(proba0.argmax(axis=1) != c)
    return idx[np.argsort(-proba0[idx].max(axis=1), kind="stable")][:k]


def screen(model: ClassifierModel, inputs: "Inputs", proba0: np.ndarray, words: Sequence[str],
           s: SearchSettings) -> tuple[np.ndarray, str]:
    """[len(words), n_labels]: mean probability of label c over inputs not predicted c, string inserted.

    Rows not reached before the budget ran out stay NaN.
    """
    labels = model.labels
    sets = [most_confident(proba0, c, s.screen_inputs) for c in range(len(labels))]
    rows = np.unique(np.concatenate(sets)).astype(int)
    member = np.array([np.isin(rows, st) for st in sets])  # [C, S]
    out = np.full((len(words), len(labels)), np.nan)
    per_call = max(1, 4096 // max(len(rows), 1))
    for g in range(0, len(words), per_call):
        chunk = words[g:g + per_call]
        # positions rotate over the inputs, the same for every string: scores do not depend on list order
        texts = [insert(inputs.texts[i], w, POSITIONS[j % len(POSITIONS)]) for w in chunk for j, i in enumerate(rows)]
        try:
            proba = model.predict_proba(texts).reshape(len(chunk), len(rows), len(labels))
        except BudgetExhausted as e:
            return out, str(e)
        for c in range(len(labels)):
            if member[c].any():
                out[g:g + len(chunk), c] = proba[:, member[c], c].mean(axis=1)
    return out, ""


def rank_words(model: ClassifierModel, inputs: "Inputs", proba0: np.ndarray, words: Sequence[str],
               s: SearchSettings) -> tuple[list[list[str]], str]:
    """Per label, the words that push clean inputs furthest to it (best first)."""
    scores, why = screen(model, inputs, proba0, words, s)
    out = []
    for c in range(len(model.labels)):
        order = np.argsort(-np.nan_to_num(scores[:, c], nan=-1.0), kind="stable")[: max(s.per_label, s.beam)]
        out.append([words[i] for i in order])
    return out, why


def start(per_label: list[list[str]], s: SearchSettings) -> tuple[list[list[str]], list[list[str]]]:
    """The growth state after length 1: each label's best words are both the base and the beam."""
    beams = [lab[: s.beam] for lab in per_label]
    return beams, beams


def grow(model: ClassifierModel, inputs: "Inputs", proba0: np.ndarray, s: SearchSettings, state: Any,
         source: str) -> tuple[list[Candidate], int, str, Any]:
    """One more word: each label's beam gets a word of its length-1 beam at either end.

    A backdoor phrase planted in training data makes its words suspicious one
    by one, so growing from the best single words finds it; free optimisation
    over every k-word string (GCG) finds adversarial strings that flip clean
    models too. Returns (proposals, strings screened, why it stopped, state).
    """
    base, cur = state
    C = len(model.labels)
    grown = [dedupe(Candidate(g, source) for b in cur[c] for w in base[c] if w not in b.split()
                    for g in (f"{b} {w}", f"{w} {b}")) for c in range(C)]
    union = [c.text for c in dedupe(x for g in grown for x in g)]
    scores, why = screen(model, inputs, proba0, union, s)
    where = {t: i for i, t in enumerate(union)}
    out, beams = [], []
    for c in range(C):
        col = sorted(grown[c], key=lambda g: -np.nan_to_num(scores[where[g.text], c], nan=-1.0))
        beams.append([g.text for g in col[: s.beam]])
        bags: dict[tuple[str, ...], Candidate] = {}
        for g in col:  # the best order of each word set: proposals are distinct sets, not permutations
            bags.setdefault(tuple(sorted(g.text.split())), g)
        out.extend(list(bags.values())[: s.grown_per_label])
    return dedupe(out), len(union), why, (base, beams)
