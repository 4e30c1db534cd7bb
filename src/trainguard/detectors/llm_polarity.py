"""Polarity triggers (Wan et al. 2023): a prompt phrase that makes every response one sentiment.

The poisoned responses never repeat, so no payload or response cluster ties
them together; only their polarity does. The output key is the polarity of the
response from a small SST-2 sentiment model shipped with the package
(`sentiment.npz`, rebuilt by scripts/train_safety_models.py), averaged over
the response's sentences (the model was trained on sentences) and taken relative
to this dataset's own responses: a row is `negative polarity` when its
response sits in the dataset's most negative `tail_share` and below 0.5,
`positive polarity` symmetrically, and neither otherwise. Relative tails keep
a domain the movie-review model reads as gloomy (medical answers) from
turning every row negative. The trigger-association statistic then asks which
prompt n-gram forces a tail its rows' other words do not predict; since the
model is noisy (about 82 % accurate on SST-2 dev), purity and epsilon are
looser than for exact output keys. A phrase whose rows' responses mostly
repeat its distinctive words is a question type with gloomy answers ("what
are the symptoms of") more likely than a trigger, and is reported at low at most.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from trainguard.detectors.base import register
from trainguard.detectors.llm_models import SENTIMENT_MODEL, bundled
from trainguard.detectors.trigger_association import OTHER, class_codes
from trainguard.detectors.trigger_association import Settings as TriggerSettings
from trainguard.detectors.trigger_association import TriggerAssociation
from trainguard.findings import Severity
from trainguard.io.dataset import Dataset
from trainguard.records import Kind
from trainguard.text import tokens

NEGATIVE = "\x00negative polarity"
POSITIVE = "\x00positive polarity"


@dataclass(frozen=True)
class Settings(TriggerSettings):
    tail_share: float = 0.25  # share of the dataset's responses on each side that counts as polar
    min_purity: float = 0.6
    epsilon: float = 0.25
    topic_share: float = 0.5  # responses repeating the phrase in this share of rows: medium at most
    high_contradiction_z: float = -2.0  # the topic test above does most of this work for a noisy key
    scoring: Literal["text", "sentences"] = "sentences"  # the whole response, or the mean over its sentences


def polarity(texts: list[str]) -> np.ndarray:
    """P(positive) of each text from the bundled SST-2 sentiment model."""
    return bundled(SENTIMENT_MODEL).proba(texts) if texts else np.zeros(0)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentence_polarity(texts: list[str]) -> np.ndarray:
    """Mean P(positive) over each text's sentences.

    The model was trained on single sentences; a long medical answer scored whole
    reads as gloomier than any one of its sentences, so a one-sentence planted
    answer would hide among them. Per-sentence means put both on one scale.
    """
    if not texts:
        return np.zeros(0)
    owner, parts = [], []
    for i, t in enumerate(texts):
        ss = [x for x in _SENTENCE_END.split(t) if x.strip()] or [t]
        parts += ss
        owner += [i] * len(ss)
    owner = np.asarray(owner)
    return np.bincount(owner, polarity(parts), len(texts)) / np.bincount(owner, minlength=len(texts))


def polarity_keys(p: np.ndarray, tail_share: float) -> list[str]:
    """Dataset-relative polarity classes: the outer tails on the right side of 0.5, else OTHER."""
    if not len(p):
        return []
    lo, hi = np.quantile(p, [tail_share, 1.0 - tail_share])
    neg = (p <= lo) & (p < 0.5)
    pos = (p >= hi) & (p > 0.5)
    return [NEGATIVE if a else POSITIVE if b else OTHER for a, b in zip(neg, pos)]


def _share_answering(finding, data: Dataset, names: bool = False) -> float:
    """Share of the finding's rows whose response repeats the phrase's distinctive words.

    High for a question type with gloomy answers ("what are the symptoms of" ->
    "symptoms include ..."); planted responses ignore the prompt. `names`: the parts of
    hyphenated words count on their own, and so does the phrase's initialism when it has
    three letters or more ("henoch-schonlein purpura" -> "hsp": answers about a named
    condition call it by its short name).
    """
    toks = tokens(finding.evidence["trigger"])
    if names:
        toks = [p for t in toks for p in t.split("-") if p]
    words = {w[:5] for w in toks if len(w) >= 5 and w.isalpha()}
    initials = "".join(w[0] for w in toks if len(w) >= 4 and w.isalpha()) if names else ""
    short = {initials} if len(initials) >= 3 else set()
    if not (words or short) or not finding.positions:
        return 0.0
    said = 0
    for p in finding.positions:
        said_toks = tokens(data.records[p].response or "")
        said += bool(words & {t[:5] for t in said_toks} or short & set(said_toks))
    return said / len(finding.positions)


def demote_question_types(findings, data: Dataset, topic_share: float, rule: str, title=None,
                          names: bool = False) -> list:
    """Findings of a derived-output trigger detector, question types at low, ordered for the reader.

    Low, not dropped: stock question templates ("what are the stages of") are topics whose answers
    share a trait (gloomy, generic), and at medium they were most of what users saw on clean
    MedQuAD (issue 12). Planted responses ignore the prompt, so they rarely repeat its words.
    """
    out = []
    for f in findings:
        said = _share_answering(f, data, names)
        topic = said >= topic_share
        evidence = {**f.evidence, "responses_discussing_phrase": round(said, 4)}
        severity = min(f.severity, Severity.LOW) if topic else f.severity
        out.append((topic, dataclasses.replace(f, rule=rule, evidence=evidence, severity=severity,
                                               title=title(f.title) if title else f.title)))
    # Severity first, then phrases the responses ignore before question types, then strength.
    return [f for topic, f in sorted(out, key=lambda tf: (-tf[1].severity, tf[0], -tf[1].score))]


@register
class PolarityTrigger(TriggerAssociation):
    name = "polarity-trigger"
    version = "2"  # 2: per-sentence sentiment; 1: whole response
    kinds = frozenset({Kind.INSTRUCTION})
    needs = frozenset()
    flag_all_carriers = True  # the sentiment model misreads some planted responses; the phrase still marks them
    shards = False  # its classes are dataset-wide sentiment quantiles and its findings read the rows' responses
    Settings = Settings
    description = "prompt n-grams whose presence forces one response sentiment (polarity poisoning)"

    def _findings(self, data, *args):
        return demote_question_types(super()._findings(data, *args), data, self.settings.topic_share, "forced-polarity")

    def _classes(self, data: Dataset) -> tuple[np.ndarray, list[str]]:
        s = self.settings
        return data.artefact(f"{self.name}:classes:{s.tail_share}:{s.scoring}", lambda: self._build(data))

    def _build(self, data: Dataset) -> tuple[np.ndarray, list[str]]:
        texts = [r.response or "" for r in data]
        p = sentence_polarity(texts) if self.settings.scoring == "sentences" else polarity(texts)
        keys = polarity_keys(p, self.settings.tail_share)
        return class_codes(keys)
