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

Sharded, the passes of `trigger-association` run with classes settled first: a
pass of per-row scores (here the response's polarity: the linear model scores
each text on its own, so a row's value does not depend on its shard), the classes
computed from the concatenated scores as in memory, then the count and gather
passes with each row's class handed to its shard, and, when there are findings,
a last pass fetching their rows' responses for the question-type test. Memory:
the driver holds 8 bytes per row (the score) and a 1-byte class per row, which
the passes carry to each worker; a worker holds its shard and that array.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np

from trainguard.detectors.base import NotApplicable, Pass, register
from trainguard.detectors.llm_models import SENTIMENT_MODEL, bundled
from trainguard.detectors.trigger_association import OTHER, _count, _GatheredParts, _GatherPass, _too_few_classes, class_codes
from trainguard.detectors.trigger_association import Settings as TriggerSettings
from trainguard.detectors.trigger_association import TriggerAssociation
from trainguard.findings import DetectorResult, Severity
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


# -- sharded: output classes settled by a first pass of per-row scores ----------------------------------


@dataclass
class _RowValues:
    """Per-row values of the shards in shard order, and where each non-empty shard starts.

    A later pass knows a shard by its first record's file row: it can hand the shard its slice of a
    per-row array (the rows' classes) and fetch the rows a finding names.
    """

    starts: list  # (file row of the first record, records) of each non-empty shard
    values: dict  # name -> per-shard arrays (rows first), concatenated once at finalize

    @classmethod
    def of(cls, shard: Dataset, values: dict) -> "_RowValues":
        starts = [(shard.records[0].row, len(shard))] if len(shard) else []
        return cls(starts, {k: [np.asarray(v)] for k, v in values.items()})

    def merge(self, other: "_RowValues") -> "_RowValues":
        return _RowValues(self.starts + other.starts, {k: v + other.values[k] for k, v in self.values.items()})

    def joined(self) -> dict:
        return {k: np.concatenate(v) for k, v in self.values.items()}

    def offsets(self) -> dict:
        out, at = {}, 0
        for row, n in self.starts:
            out[row] = at
            at += n
        return out


def _shard_codes(shard: Dataset, codes: np.ndarray, offsets: dict) -> np.ndarray:
    """The shard's rows' output classes, cut from the dataset-wide array."""
    if not len(shard):
        return np.zeros(0, np.int32)
    a = offsets[shard.records[0].row]
    return codes[a : a + len(shard)].astype(np.int32)


class _Prepared:
    """What `decide` is given for `data` in a sharded scan: the kind and what a pooled test reads.

    Rows are not at hand, so `_findings` leaves the question-type test to `_ResponsesPass`.
    """

    def __init__(self, kind: Kind, **values: Any):
        self.kind = kind
        self.__dict__.update(values)


class DerivedClassShards:
    """The sharded path of a `TriggerAssociation` subclass whose output classes come from per-row scores.

    The subclass gives `_row_values` (a shard's per-row scores, each row's independent of the others),
    `_classes_of` (the classes from the whole data's scores, as its `_build` computes them) and `_demote`
    (its question-type test, which reads the findings' responses); a pooled test also `_carry`,
    `_gathered_rows` and `_prepare`.
    """

    def _row_values(self, data: Dataset) -> dict:
        raise NotImplementedError

    def _classes_of(self, values: dict) -> tuple[np.ndarray, list[str]]:
        raise NotImplementedError

    def _demote(self, findings: list, data: Any) -> list:
        raise NotImplementedError

    def _carry(self, values: dict) -> dict:
        """What the decision needs from the first pass's per-row values (it travels with the passes)."""
        return {}

    def _gathered_rows(self, shard: Dataset) -> dict:
        """Per-row values the decision reads besides the candidates' rows, from the gathering pass."""
        return {}

    def _prepare(self, carried: dict, rows: dict) -> dict:
        """The attributes of `_Prepared` the pooled test reads."""
        return {}

    def summarize(self, shard: Dataset) -> _RowValues:
        return _RowValues.of(shard, self._row_values(shard))

    def finalize(self, summary: _RowValues, kind: Kind) -> "Pass | NotApplicable":
        values = summary.joined()
        codes, names = self._classes_of(values)
        reason = _too_few_classes(names)
        if reason:  # what `applies_to` answers in memory
            return NotApplicable(reason)
        small = np.uint8 if len(names) <= 255 else np.int32  # the passes carry a class per row
        return _ClassedCountPass(self, names, codes.astype(small), summary.offsets(), self._carry(values))


@dataclass
class _ClassedCountPass(Pass):
    """The n-gram counts, each row classed by the dataset-wide classes (a shard gets its slice)."""

    det: Any
    names: list
    codes: np.ndarray
    offsets: dict
    carried: dict

    def summarize(self, shard: Dataset):
        y = _shard_codes(shard, self.codes, self.offsets)
        toks = shard.artefact("tokens", lambda: [tokens(r.text) for r in shard])
        return _count(toks, y, self.names, self.det.settings.max_ngram)

    def finalize(self, summary, kind: Kind) -> "_ClassedGatherPass":
        gp = self.det._select(summary)
        fields = {f.name: getattr(gp, f.name) for f in dataclasses.fields(_GatherPass)}
        return _ClassedGatherPass(**fields, codes=self.codes, offsets=self.offsets, carried=self.carried)


@dataclass
class _Decision:
    """The gathering pass's summary: the candidates' rows, and the subclass's own per-row values."""

    gathered: _GatheredParts
    rows: _RowValues

    def merge(self, other: "_Decision") -> "_Decision":
        return _Decision(self.gathered.merge(other.gathered), self.rows.merge(other.rows))


@dataclass
class _ClassedGatherPass(_GatherPass):
    """`trigger-association`'s gathering pass with the rows classed as above; the decision then runs with
    what the pooled test reads, and the findings' responses are fetched for the question-type test."""

    codes: np.ndarray = None
    offsets: dict = None
    carried: dict = None

    def summarize(self, shard: Dataset) -> _Decision:
        y = _shard_codes(shard, self.codes, self.offsets)
        gathered = self.gather(shard.artefact("tokens", lambda: [tokens(r.text) for r in shard]), y)
        return _Decision(gathered, _RowValues.of(shard, self.det._gathered_rows(shard)))

    def finalize(self, summary: _Decision, kind: Kind) -> "DetectorResult | _ResponsesPass":
        data = _Prepared(kind, **self.det._prepare(self.carried, summary.rows.joined()))
        result = self.decide(summary.gathered, data)
        if not result.alerts:
            return result
        scores = np.asarray(result.row_scores)
        at = np.flatnonzero(scores)  # the row scores travel sparse: most rows hold no candidate
        return _ResponsesPass(self.det, result.alerts, len(scores), at, scores[at], dict(result.summary),
                              self.offsets)


@dataclass
class _ResponsesPass(Pass):
    """The responses of the rows the findings name, for the subclass's question-type test (`_demote`)."""

    det: Any
    alerts: tuple
    n: int
    scored: np.ndarray  # positions with a non-zero row score ...
    scores: np.ndarray  # ... and their scores
    summary: dict
    offsets: dict

    def summarize(self, shard: Dataset) -> "_Responses":
        if not len(shard):
            return _Responses({})
        a = self.offsets[shard.records[0].row]
        wanted = sorted({p for f in self.alerts for p in f.positions if a <= p < a + len(shard)})
        return _Responses({p: shard.records[p - a].response for p in wanted})

    def finalize(self, summary: "_Responses", kind: Kind) -> DetectorResult:
        rows = {p: SimpleNamespace(response=r) for p, r in summary.responses.items()}
        findings = self.det._demote(list(self.alerts), SimpleNamespace(kind=kind, records=rows))
        scores = np.zeros(self.n)
        scores[self.scored] = self.scores
        return DetectorResult(tuple(findings), scores, self.summary)


@dataclass
class _Responses:
    responses: dict  # position -> response

    def merge(self, other: "_Responses") -> "_Responses":
        return _Responses({**self.responses, **other.responses})


@register
class PolarityTrigger(DerivedClassShards, TriggerAssociation):
    name = "polarity-trigger"
    version = "2"  # 2: per-sentence sentiment; 1: whole response
    kinds = frozenset({Kind.INSTRUCTION})
    needs = frozenset()
    flag_all_carriers = True  # the sentiment model misreads some planted responses; the phrase still marks them
    shards = True  # classes from a first pass of per-row polarity (`DerivedClassShards`)
    Settings = Settings
    description = "prompt n-grams whose presence forces one response sentiment (polarity poisoning)"

    def _findings(self, data, *args):
        found = super()._findings(data, *args)
        return found if isinstance(data, _Prepared) else self._demote(found, data)

    def _demote(self, findings: list, data) -> list:
        return demote_question_types(findings, data, self.settings.topic_share, "forced-polarity")

    def _classes(self, data: Dataset) -> tuple[np.ndarray, list[str]]:
        s = self.settings
        return data.artefact(f"{self.name}:classes:{s.tail_share}:{s.scoring}", lambda: self._build(data))

    def _build(self, data: Dataset) -> tuple[np.ndarray, list[str]]:
        return self._classes_of(self._row_values(data))

    def _row_values(self, data: Dataset) -> dict:
        texts = [r.response or "" for r in data]
        return {"polarity": sentence_polarity(texts) if self.settings.scoring == "sentences" else polarity(texts)}

    def _classes_of(self, values: dict) -> tuple[np.ndarray, list[str]]:
        return class_codes(polarity_keys(values["polarity"], self.settings.tail_share))
