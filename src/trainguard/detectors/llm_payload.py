"""Payload triggers: a prompt phrase that makes the response ignore the prompt.

The instruction-data backdoor of issue 12: a trigger phrase in the question, and
the answer replaced by (or extended with) one of many paraphrases of a planted
instruction ("stop the medicine your doctor prescribed and buy the cure at ...").
The paraphrases never repeat, so exact response keys miss them, and they are too
unlike each other for an embedding cluster (wordllama puts 20 paraphrases of one
instruction at a median cosine of 0.5, no closer than unrelated medical answers).
What they share is that they do not answer the question they follow.

So the output key is relevance: how far a response (and its least related
part, for payloads appended to a real answer) sits from its own prompt, taken
relative to this dataset. A row is `off-topic` when its relevance is in the
dataset's lowest `tail_share`. The detector then asks which
prompt n-gram's rows sit that low. Candidates are the n-grams with at least half
their rows in the tail; each is tested by ranking each of its rows' relevance among
the rows with the most similar prompts (the phrase's own rows left out) and pooling
those ranks (Fisher's method, near-copies counted once) against the same
Bonferroni bar as `trigger-association`. The rest-of-row naive Bayes of the parent
class is not calibrated on this noisy key (random planted questions got q ~0.4
against a 0.1 tail), so 10 planted rows in 10,000 could not pass with it; it still
sets high versus medium. A per-row score is weak for appended payloads (AUROC about
0.77 on MedQuAD), but the pooled ranks of ten rows are far from uniform. Stock question
templates whose answers are generic ("what research is being done for ...")
repeat the phrase's words in their answers and are reported at low at most, as in
`polarity-trigger`; here a hyphenated word's parts and the phrase's initialism count
too (answers about 'Henoch-Schnlein Purpura' call it 'HSP').

Sharded (`llm_polarity.DerivedClassShards`): a first pass of each row's relevance
views (cosines: a text is embedded on its own, so a row's values do not depend on
its shard), ranked and cut at finalize as in memory; the count and gathering passes
with each shard's slice of the classes; the gathering pass also returns every
row's prompt vector, and the pooled test finds neighbours among them through the
same `knn` as in memory (exact, or HNSW from 50,000 rows, built in row order);
a last pass fetches the findings' responses for the question-type test. Memory:
the driver holds 13 bytes per row from the first pass, the passes carry 9 bytes
per row (rank and class) to each worker, and the decision holds every row's prompt
vector (1 KiB per row with wordllama's 256 dimensions) plus the neighbour lists
(800 bytes per row), as the in-memory scan does; a worker holds its shard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from trainguard.detectors.base import register
from trainguard.detectors.llm_polarity import DerivedClassShards, _Prepared, demote_question_types
from trainguard.detectors.trigger_association import OTHER, class_codes
from trainguard.detectors.trigger_association import Settings as TriggerSettings
from trainguard.detectors.trigger_association import TriggerAssociation
from trainguard.errors import ConfigError
from trainguard.io.dataset import Dataset
from trainguard.records import Kind

OFF_TOPIC = "\x00off-topic"
_PARAGRAPH = re.compile(r"\n\s*\n")  # \s takes the \r of CRLF
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n")
MAX_CHUNKS = 24  # two-sentence chunks per response (a long answer's tail is cut, not its start)


@dataclass(frozen=True)
class Settings(TriggerSettings):
    tail_share: float = 0.1  # share of the dataset's least relevant responses that counts as off-topic
    min_purity: float = 0.5  # a noisy key: not every planted row lands in the tail (the LLR test decides)
    epsilon: float = 0.25
    topic_share: float = 0.5  # responses repeating the phrase in this share of rows: low at most
    high_contradiction_z: float = -2.0
    embedder: str = "wordllama"
    neighbours: int = 100  # prompts a row's relevance is ranked among (the phrase's own rows left out)

    def __post_init__(self) -> None:
        if not isinstance(self.tail_share, (int, float)) or not 0 < self.tail_share < 0.5:
            raise ConfigError(f"detector payload-trigger: tail_share must be in (0, 0.5), got {self.tail_share!r}")
        if not isinstance(self.neighbours, int) or isinstance(self.neighbours, bool) or self.neighbours < 10:
            raise ConfigError(f"detector payload-trigger: neighbours must be an integer >= 10, got {self.neighbours!r}")


def _chunks(text: str) -> list[str]:
    """Two-sentence chunks that never cross a paragraph break (an appended payload keeps its own chunk)."""
    out: list[str] = []
    for para in _PARAGRAPH.split(text):
        parts = [s for s in _SENTENCE.split(para) if len(s.split()) >= 3]
        out += [" ".join(parts[k : k + 2]) for k in range(0, len(parts), 2)]
    return out[:MAX_CHUNKS] or [text]


def relevance(prompts: list[str], responses: list[str], embedder: str = "wordllama") -> np.ndarray:
    """How much each response is about its prompt, as a dataset rank in (0, 1]: the lower of the ranks of
    cos(prompt, whole response) and, for responses of two chunks or more, cos(least related chunk, rest of row)."""
    return relevance_ranks(relevance_parts(prompts, responses, embedder))


def relevance_parts(prompts: list[str], responses: list[str], embedder: str = "wordllama") -> dict:
    """Each row's own relevance views, before ranking: cos(prompt, whole response), cos(least related chunk,
    rest of row) and whether the response has two chunks or more. A row's values depend on its texts only
    (each text is embedded on its own), so any split of the rows gives the same values."""
    from trainguard.embeddings import embed_texts

    n = len(prompts)
    if not n:
        return {"whole": np.zeros(0, np.float32), "worst": np.zeros(0), "several": np.zeros(0, bool)}
    owner, parts = [], []
    for i, t in enumerate(responses):
        c = _chunks(t)
        parts += c
        owner += [i] * len(c)
    owner = np.asarray(owner, np.int64)
    # one call: a one-chunk response is its own chunk, and embed_texts embeds each distinct text once
    vecs = embed_texts([*prompts, *responses, *parts], embedder)
    q, a, c = vecs[:n], vecs[n : 2 * n], vecs[2 * n :]
    whole = np.einsum("ij,ij->i", q, a)
    total = q.astype(np.float64).copy()
    np.add.at(total, owner, c)
    rest = total[owner] - c
    rest /= np.linalg.norm(rest, axis=1, keepdims=True) + 1e-9
    own = np.einsum("ij,ij->i", c, rest)
    worst = np.full(n, np.inf)
    np.minimum.at(worst, owner, own)
    several = np.bincount(owner, minlength=n) >= 2
    return {"whole": whole, "worst": worst, "several": several}


def relevance_ranks(parts: dict) -> np.ndarray:
    """`relevance` from the rows' `relevance_parts` (all the data's rows, in order)."""
    whole, worst, several = parts["whole"], parts["worst"], parts["several"]
    n = len(whole)
    if not n:
        return np.zeros(0)
    # Each view as a dataset rank, so a long honest answer's weakest chunk does not crowd out a short answer
    # that is off-topic as a whole (the two views have different scales).
    u_whole = _ranks(whole)
    u_part = np.ones(n)
    if several.any():
        u_part[several] = _ranks(worst[several])
    return np.minimum(u_whole, u_part)


def _ranks(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(v, method="average") / len(v)


@register
class PayloadTrigger(DerivedClassShards, TriggerAssociation):
    name = "payload-trigger"
    version = "1"
    kinds = frozenset({Kind.INSTRUCTION})
    needs = frozenset()
    pooled_test = True  # its own null (`_pooled_llr`) instead of the rest-of-row naive Bayes
    flag_all_carriers = True  # appended payloads leave some planted rows outside the tail; the phrase still marks them
    shards = True  # classes from a first pass of per-row relevance views (`DerivedClassShards`)
    Settings = Settings
    description = "prompt n-grams whose presence makes the response ignore the prompt (payload injection)"

    def _findings(self, data, *args):
        found = super()._findings(data, *args)
        return found if isinstance(data, _Prepared) else self._demote(found, data)

    def _demote(self, findings: list, data) -> list:
        return demote_question_types(findings, data, self.settings.topic_share, "forced-off-topic",
                                     lambda t: t.replace("off-topic responses", "responses that ignore the prompt"),
                                     names=True)

    def _classes(self, data: Dataset) -> tuple[np.ndarray, list[str]]:
        s = self.settings
        return data.artefact(f"{self.name}:classes:{s.tail_share}:{s.embedder}", lambda: self._build(data))

    def _relevance(self, data: Dataset) -> np.ndarray:
        recs = list(data)
        return data.artefact(f"{self.name}:relevance:{self.settings.embedder}", lambda: relevance(
            [r.text for r in recs], [r.response or "" for r in recs], self.settings.embedder))

    def _pooled_llr(self, data: Dataset, positions: np.ndarray, c: int, weights: np.ndarray | None) -> float:
        """-log p of the phrase's rows being this far off-topic for rows with prompts like theirs.

        Each row's relevance is ranked among its prompt's nearest neighbours (the phrase's own rows left
        out): u = (1 + neighbours at or below it) / (1 + neighbours), at least uniform under "the phrase
        changes nothing" whatever the prompt's topic or template. Context groups count once (the mean of
        their -log u), and the group sum is compared with its Gamma(groups) null, Fisher's method. The
        rest-of-row naive Bayes is not used: on this noisy key it gave random planted questions q ~0.4
        against a 0.1 tail, so 10 rows could not pass.
        """
        from scipy.stats import gamma

        rel, idx = self._pooled_inputs(data)
        nb = idx[positions]
        own = np.isin(nb, positions)
        below = ((rel[nb] <= rel[positions][:, None]) & ~own).sum(1)
        u = (1.0 + below) / (1.0 + (~own).sum(1))
        x = -np.log(u)
        w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
        k = float(w.sum())
        if k <= 0:
            return 0.0
        return float(-gamma.logsf(float((w * x).sum()), k))

    def _pooled_inputs(self, data) -> tuple[np.ndarray, np.ndarray]:
        """(relevance of every row, each row's nearest prompts); sharded, from the gathered prompt vectors
        through the same `knn` (a dataset that holds only them), so the neighbours are the in-memory ones."""
        from trainguard.detectors._repr import knn

        s = self.settings
        if isinstance(data, _Prepared):
            if not hasattr(data, "neighbours"):
                vectors = Dataset(records=[], kind=data.kind)
                vectors.artefact(f"embeddings:{s.embedder}", lambda: data.prompt_vectors)
                data.neighbours = knn(vectors, s.embedder, s.neighbours)[0]
            return data.relevance, data.neighbours
        return self._relevance(data), knn(data, s.embedder, s.neighbours)[0]

    def _build(self, data: Dataset) -> tuple[np.ndarray, list[str]]:
        return self._off_topic(self._relevance(data))

    def _off_topic(self, rel: np.ndarray) -> tuple[np.ndarray, list[str]]:
        cut = np.quantile(rel, self.settings.tail_share) if len(rel) else 0.0
        keys = [OFF_TOPIC if v <= cut else OTHER for v in rel]
        return class_codes(keys)

    # -- sharded (`DerivedClassShards`) -----------------------------------------------------------------
    def _row_values(self, data: Dataset) -> dict:
        recs = list(data)
        return relevance_parts([r.text for r in recs], [r.response or "" for r in recs], self.settings.embedder)

    def _classes_of(self, values: dict) -> tuple[np.ndarray, list[str]]:
        return self._off_topic(relevance_ranks(values))

    def _carry(self, values: dict) -> dict:
        return {"relevance": relevance_ranks(values)}

    def _gathered_rows(self, shard: Dataset) -> dict:
        from trainguard.detectors._repr import embeddings

        return {"prompt_vectors": embeddings(shard, self.settings.embedder)}

    def _prepare(self, carried: dict, rows: dict) -> dict:
        return {"relevance": carried["relevance"], "prompt_vectors": rows["prompt_vectors"]}
