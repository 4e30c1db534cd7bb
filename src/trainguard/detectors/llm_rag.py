"""RAG knowledge-base scan: injected instructions, hidden text, PoisonedRAG passage groups.

PoisonedRAG writes passages as S (+) I: the target question S (so the passage is
retrieved for it) followed by text asserting the attacker's answer, several per
question. Perplexity and duplicate filters miss them (fluent, not duplicates).
What gives them away in a store is the group: several passages that open with
the same question and then say different things, where honest stores hold one
answer per question (copies of it are duplicates, not a group). With a queries
file, passages opening with a near-copy of a known query are flagged too.

An attacker need not repeat S verbatim. Paraphrased S (black-box) is caught by
`near-question-group`: question-like openings are keyed by their rarest content
word (the subject), the subject is masked, and the remaining *asks* are compared
by embedding, so "what triggers X?" meets "can you tell me what causes X?" while
"how is X treated?" stays apart (honest FAQ stores ask many questions about one
subject, once each). White-box S (HotFlip-optimised, semi-gibberish) is caught by
`optimised-lead-group`: openings with tokenizer debris that share rare subject
words; openings with words found nowhere else in the store score higher and, with
a queries file, match a query whose content words they carry.

Sharded (issue 14, `trainguard scan --shard-rows N`): one map collects per-row facts (flags, the lead question's
digest, word ids of the opening, of the first 16 words and of the text's content words, the word count, the
embedding) and the words' document counts; the planner builds every group that could be reported from them
(subject and optimised groups, query matches, the whole store's kNN for claim groups); a second map gathers only
those groups' passages (by content digest), on which the decision runs as in memory. In memory (`run`) it is the
same code on one shard, and every per-row value (wordllama embeddings included: the same alone or in any batch) is
the same whatever the shard, so findings, row scores and summary do not depend on the split; with an embedder whose
vectors depend on the batch, a scan of more than one shard fails (closed) instead.
Memory: the driver holds per row the embedding (1 KB for wordllama's 256 dimensions), a 4-byte id per distinct content
word and per opening word, two 16-byte digests and a few flags (about 1.5 KB a passage on MedQuAD, 0.5 KB of it word
ids), plus the vocabulary with its counts, the kNN lists and the gathered passages' bodies; a worker holds its shard
and the same facts for its rows.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from trainguard.detectors.base import Pass, ShardedDetector, register
from trainguard.errors import ConfigError
from trainguard.findings import ATLAS_POISON_TRAINING_DATA, Alert, Confidence, DetectorResult, Severity
from trainguard.io.dataset import Dataset
from trainguard.records import Kind
from trainguard.text import SUSPICIOUS, tokens

ATLAS_RAG_POISONING = "AML.T0070"
ATLAS_FALSE_RAG_ENTRY = "AML.T0071"
OWASP = ["LLM04", "LLM08"]

INJECTION = re.compile(
    r"ignore (all |any )?(the )?(previous|prior|above) (instructions|prompts?)|disregard (the|all|any|your) "
    r"(previous |prior )?(instructions|context|rules)|you are now (a|an|in)\b|system prompt|"
    r"\b(respond|answer|reply) (only )?with\b|when (you are |you're )?asked about\b|"
    r"do not (tell|mention|reveal)\b.{0,40}\b(user|anyone)|\[/?INST\]|<\|im_start\|>|<\|system\|>|"
    r"\bas an ai (language )?model,? you must\b", re.IGNORECASE)
HIDDEN_MARKUP = re.compile(r"<!--.*?-->|display\s*:\s*none|font-size\s*:\s*0|color\s*:\s*(white|#fff\b)", re.I | re.S)
_LEAD = re.compile(r"^\s*([^?]{8,300}\?)")
_WORD = re.compile(r"\w+(?:['’-]\w+)*")
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)")
_MARK = re.compile(r"^(?:\d\w*|[ivx]+|[a-z]|\w*\d\w*)$")  # subtype markers: "type 2", "III", "A"
_DEBRIS = re.compile(r"^##|[^\w\s.,;:?!()\[\]*'\"’/%&+\-]")  # wordpiece fragments, stray symbols
_ADDRESS = re.compile(r"@\w|://|^www\.")  # e-mail and web addresses are not debris
_STOP = frozenset(("a an the is are was were be been of to for in on at by with and or what which who whom how why "
                   "when where does do did can could should would will i my me you your it its this that these those "
                   "there any some about from into than then as if not no what's how's it's there's may might "
                   "must has have had").split())
_INTERROGATIVE = frozenset("what how why when where which who whom whose what's how's is are does do did can could "
                           "should will would may might".split())
# words of a request lead-in ("could you tell me", "quick question:", "I'd like to know") carry no ask
_REQUEST = frozenset(("know tell explain wondering wonder question q ask asking understand curious learn me please quick "
                      "can could would you i i'd i'm was like to want does do anyone somebody someone help us let "
                      "about more we need hi hello hey").split())
# how a question without a question mark opens; bare "when"/"you"/"to" start statements too often
_REQUEST_START = frozenset(["tell", "please", "question", "q", "quick", "can", "could", "would", "does", "do", "did",
                            "i'd", "explain", "anyone", "hi", "hello", "hey", "i was", "i want", "i wonder", "i would",
                            "i need", "we need", "we want"])
OPENING_WORDS = 24


@dataclass(frozen=True)
class Settings:
    queries: str = ""  # optional JSONL/text file of user questions (one per line or {"question": ...})
    min_group: int = 3  # passages opening with the same question and saying different things
    body_dup_jaccard: float = 0.8  # bodies this similar are copies, not disagreeing passages
    query_jaccard: float = 0.8  # lead-sentence token overlap counting as a near-copy of a query
    embedder: str = "wordllama"  # compares the asks of question-like openings (minilm: more semantic, needs torch)
    ask_similarity: float = 0.9  # cosine between subject-masked asks counting as the same question asked again
    near_medium_group: int = 4  # near-question groups with fewer different answers are reported at low: honest
    # FAQ stores ask one question about three related subjects ("signs and symptoms of" three chondrodysplasias)
    query_similarity: float = 0.8  # cosine between a query and a passage opening (sharing its subject word)
    debris_tokens: int = 1  # tokenizer-debris tokens in an opening that make it look optimised (HotFlip-style)
    lone_words: int = 1  # opening words found nowhere else in the store: a weaker optimised-S cue (scores, queries)
    claim_min_group: int = 4  # claim groups: passages, no question, that are each other's nearest neighbours ...
    claim_max_group: int = 8
    claim_gap: float = 0.03  # ... this much closer to each other than to anything else in the store ...
    claim_max_words: int = 100  # ... and short, as PoisonedRAG writes them (median words per passage)
    claim_tightness: float = 0.75  # subject groups: mean cosine between members ...
    claim_gap_subject: float = -0.05  # ... minus the cosine from a member to its nearest outsider, at least this
    claim_short_words: int = 60  # ... and at most this many words per passage (median)
    # opt-in dense claim groups (padded passages, any length) on a sentence encoder's vectors, e.g. "minilm": on
    # 16k passages about 18 min on 2 CPU cores the first time (the embedding cache makes rescans fast), no sharding
    claim_embedder: str = ""
    claim_dense_step: float = 0.19  # ... the median member's 4 nearest neighbours this much above its 5th-8th

    def __post_init__(self) -> None:
        for name in ("ask_similarity", "query_similarity"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise ConfigError(f"detector rag-poisoning: {name} must be a cosine in (0, 1], got {v!r}")
        if not isinstance(self.min_group, int) or self.min_group < 2:
            raise ConfigError(f"detector rag-poisoning: min_group must be an integer >= 2, got {self.min_group!r}")
        if not isinstance(self.near_medium_group, int) or self.near_medium_group < 2:
            raise ConfigError("detector rag-poisoning: near_medium_group must be an integer >= 2, "
                              f"got {self.near_medium_group!r}")
        for name in ("claim_tightness", "claim_gap_subject"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not -1 <= v <= 1:
                raise ConfigError(f"detector rag-poisoning: {name} must be a number in [-1, 1], got {v!r}")
        if not isinstance(self.claim_embedder, str):
            raise ConfigError(f"detector rag-poisoning: claim_embedder must be an embedder name or empty, "
                              f"got {self.claim_embedder!r}")
        if not isinstance(self.claim_dense_step, (int, float)) or not 0 <= self.claim_dense_step <= 1:
            raise ConfigError(f"detector rag-poisoning: claim_dense_step must be in [0, 1], got {self.claim_dense_step!r}")
        if not isinstance(self.claim_short_words, int) or self.claim_short_words < 1:
            raise ConfigError(f"detector rag-poisoning: claim_short_words must be an integer >= 1, "
                              f"got {self.claim_short_words!r}")
        if not isinstance(self.lone_words, int) or self.lone_words < 1:
            raise ConfigError(f"detector rag-poisoning: lone_words must be an integer >= 1, got {self.lone_words!r}")
        if not (isinstance(self.claim_min_group, int) and isinstance(self.claim_max_group, int)
                and 3 <= self.claim_min_group <= self.claim_max_group <= 32):
            raise ConfigError("detector rag-poisoning: claim_min_group and claim_max_group must be integers with "
                              f"3 <= min <= max <= 32, got {self.claim_min_group!r}, {self.claim_max_group!r}")
        if not isinstance(self.debris_tokens, int) or self.debris_tokens < 1:
            raise ConfigError(f"detector rag-poisoning: debris_tokens must be an integer >= 1, got {self.debris_tokens!r}")


def _norm(text: str) -> str:
    return " ".join(tokens(text))


def _jac(a: set, b: set) -> float:
    return len(a & b) / max(len(a | b), 1)


def _opening(text: str) -> tuple[int, list[str]]:
    """End offset of the first sentence and its lower-cased words (at most OPENING_WORDS)."""
    m = _SENTENCE_END.search(text, 0, 400)
    end = m.end() if m else min(len(text), 400)
    return end, _WORD.findall(text[:end].lower())[:OPENING_WORDS]


def strip_request(words: list[str]) -> list[str]:
    """Drop a request lead-in so "can you tell me what causes X" compares as "what causes X"."""
    k = 0
    while k < min(len(words) - 2, 8) and words[k] in _REQUEST:
        k += 1
    if k and words[k - 1] in _INTERROGATIVE and words[k] not in _INTERROGATIVE:
        k -= 1  # "can X be treated": the "can" was the question, not a lead-in
    return words[k:]


def _content(words: list[str]) -> list[str]:
    return [w for w in words if w not in _STOP and sum(c.isalpha() for c in w) >= 3]


def _question_like(text: str, end: int, words: list[str]) -> bool:
    """Ends with a question mark, or opens as a request ("Tell me ...", "I'd like to know ...", "Do you ...")."""
    if text[:end].rstrip().endswith("?"):
        return True
    return bool(words) and (words[0] in _REQUEST_START or " ".join(words[:2]) in _REQUEST_START)


def _debris(text: str, end: int) -> int:
    """Tokenizer debris near the start: what HotFlip-optimised text leaves behind in a fluent passage."""
    return sum(1 for t in text[: max(end, 200)].split()[:OPENING_WORDS] if _DEBRIS.search(t) and not _ADDRESS.search(t))


def _mask_subject(words: list[str], subject: set[str]) -> str:
    out: list[str] = []
    for w in words:
        w = "X" if w in subject else w
        if not (out and out[-1] == "X" and w == "X"):
            out.append(w)
    return " ".join(out)


def _components(adj) -> np.ndarray:
    """Connected-component label per node of a (dense or sparse) adjacency matrix."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    return connected_components(csr_matrix(adj), directed=False)[1]


def _components_of_edges(n: int, edges: list[tuple[int, int]]) -> np.ndarray:
    from scipy.sparse import coo_matrix

    a = np.array([e[0] for e in edges], dtype=np.int64)
    b = np.array([e[1] for e in edges], dtype=np.int64)
    return _components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)))


def load_queries(path: str) -> list[str]:
    import json

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"queries file {p} not found")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}:{n}: not JSON ({e.msg})") from None
            q = obj.get("question") or obj.get("query") or obj.get("text")
            if not isinstance(q, str):
                raise ConfigError(f"{p}:{n}: no question/query/text field")
            out.append(q)
        else:
            out.append(line.strip())
    return out


# Subject groups (`_claim_groups`, way 2): linkage cosine to start from, its step while a group is too large, where to
# stop; and the passages a word may be in to still count as one passage's own detail (a private name or study).
_LINK_FIRST, _LINK_STEP, _LINK_LAST = 0.70, 0.03, 0.95
_PRIVATE_DF = 20


@register
class RagPoisoning(ShardedDetector):
    name = "rag-poisoning"
    version = "4"  # 3: claim groups (no question at all); 4: subject groups, opening-subject check, near-question
    # groups of fewer than 4 answers at low
    kinds = frozenset({Kind.DOCUMENTS})
    atlas = (ATLAS_RAG_POISONING, ATLAS_FALSE_RAG_ENTRY, ATLAS_POISON_TRAINING_DATA)
    Settings = Settings
    description = ("passages with injected instructions or hidden text, and PoisonedRAG groups: question-led, "
                   "paraphrased or optimised openings, and short claim groups with no question")

    # `run` is the one-shard case: summarize the whole store, plan the groups, gather their passages, decide.
    def summarize(self, shard: Dataset) -> "_Facts":
        return _Facts.of(shard, self.settings)

    def finalize(self, summary: "_Facts", kind: Kind) -> "_TextsPass":
        return _plan(self, summary)

    def _finding(self, rule, title, rows, score, sev, evidence) -> Alert:
        return Alert(rule=rule, title=title, positions=tuple(sorted(set(rows))), score=float(score), severity=sev,
                     confidence=Confidence.HIGH if score >= 0.8 else Confidence.MEDIUM,
                     evidence={**evidence, "owasp": OWASP})

    @staticmethod
    def _snip(text: str, rule: str) -> str:
        m = (INJECTION if rule == "prompt-injection" else HIDDEN_MARKUP).search(text)
        a = max(0, (m.start() if m else 0) - 40)
        return text[a: a + 120]  # raw: renderers escape


def _digest(text: str) -> bytes:
    """128-bit name of a text: the gather pass asks shards for passages by content (shards do not know their offset)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _is_content(w: str) -> bool:
    return w not in _STOP and sum(c.isalpha() for c in w) >= 3  # `_content`'s test, one word at a time


@dataclass
class _Ragged:
    """Per-row lists of word ids, flat: row i's ids are flat[start[i]:start[i + 1]]."""

    lens: np.ndarray  # int64 per row
    flat: np.ndarray  # int32 word ids

    def merged(self, other: "_Ragged", remap: np.ndarray) -> "_Ragged":
        return _Ragged(np.concatenate([self.lens, other.lens]), np.concatenate([self.flat, remap[other.flat]]))

    def rows(self) -> list[np.ndarray]:
        return np.split(self.flat, np.cumsum(self.lens)[:-1]) if len(self.lens) else []


@dataclass
class _Facts:
    """What a shard tells the planner: per-row flags, keys and word ids, the words' document counts, embeddings."""

    n: int
    vocab: list[str]  # every word seen (first-seen order); ids index it
    index: dict[str, int]
    df: np.ndarray  # per word: rows whose text holds it (words of an opening cut at 400 characters may count 0)
    digest: np.ndarray  # (n, 2) uint64: `_digest` of the text
    lead: np.ndarray  # (n, 2) uint64: `_digest` of the normalised lead question; zeros without one
    flags: np.ndarray  # (n, 5) bool: has a lead, injection, hidden text, question-like opening, tokenizer debris
    n_words: np.ndarray  # whitespace words per row
    X: np.ndarray  # (n, dim) float32 embeddings (per row, batch-independent)
    content: _Ragged  # the text's distinct content words
    # lone words: words of the first 16 found in no other passage and not repeated in this one (made-up tokens, not
    # a rare name); here the candidates (with a letter, once in the text), whose document count decides
    head_once: _Ragged
    opening: _Ragged  # the first sentence's words (`_opening`), in order
    snips: dict  # rule -> evidence snippets of its first 5 rows
    parts: int = 1  # shards merged into this summary
    X2: np.ndarray | None = None  # (n, dim) `claim_embedder` vectors, when set

    @classmethod
    def of(cls, shard: Dataset, s: Settings) -> "_Facts":
        from trainguard.detectors._repr import embeddings

        vocab: list[str] = []
        index: dict[str, int] = {}
        content_word: list[bool] = []  # per id, tested once: `_content`'s test and "has a letter"
        lettered: list[bool] = []

        def intern(w: str) -> int:
            j = index.get(w)
            if j is None:
                j = index[w] = len(vocab)
                vocab.append(w)
                content_word.append(_is_content(w))
                lettered.append(any(c.isalpha() for c in w))
            return j

        recs = shard.records
        n = len(recs)
        present: list[int] = []
        lists: tuple[list[int], list[int], list[int]] = ([], [], [])
        lens = np.zeros((3, n), np.int64)
        digest = np.zeros((n, 2), np.uint64)
        lead = np.zeros((n, 2), np.uint64)
        flags = np.zeros((n, 5), bool)
        n_words = np.zeros(n, np.int64)
        snips: dict[str, list[str]] = {"prompt-injection": [], "hidden-text": []}
        for i, r in enumerate(recs):
            text = r.text
            words = _WORD.findall(text.lower())
            distinct = dict.fromkeys(words)
            ids = [intern(w) for w in distinct]
            present += ids
            counts = Counter(words)
            end, head = _opening(text)
            rows = ([j for j in ids if content_word[j]],
                    [j for w in dict.fromkeys(words[:16]) if counts[w] == 1 and lettered[j := index[w]]],
                    [intern(w) for w in head])
            for k, row in enumerate(rows):
                lists[k].extend(row)
                lens[k, i] = len(row)
            digest[i] = np.frombuffer(_digest(text), np.uint64)
            m = _LEAD.match(text)
            if m:
                lead[i] = np.frombuffer(_digest(_norm(m.group(1))), np.uint64)
            inj = bool(INJECTION.search(text))
            hid = bool(HIDDEN_MARKUP.search(text) or SUSPICIOUS.search(text))  # any(is_suspicious(c) for c in text)
            flags[i] = (m is not None, inj, hid, _question_like(text, end, head), _debris(text, end) >= s.debris_tokens)
            for rule, hit in (("prompt-injection", inj), ("hidden-text", hid)):
                if hit and len(snips[rule]) < 5:
                    snips[rule].append(RagPoisoning._snip(text, rule))
            n_words[i] = len(text.split())
        df = np.bincount(np.asarray(present, np.int64), minlength=len(vocab)).astype(np.int64)
        ragged = [_Ragged(lens[k], np.asarray(lists[k], np.int32)) for k in range(3)]
        X = np.asarray(embeddings(shard, s.embedder), np.float32)
        X2 = np.asarray(embeddings(shard, s.claim_embedder), np.float32) if s.claim_embedder else None
        return cls(n, vocab, index, df, digest, lead, flags, n_words, X, *ragged, snips, 1, X2)

    def merge(self, other: "_Facts") -> "_Facts":
        vocab, index = list(self.vocab), dict(self.index)
        remap = np.empty(len(other.vocab), np.int32)
        for k, w in enumerate(other.vocab):
            j = index.get(w)
            if j is None:
                j = index[w] = len(vocab)
                vocab.append(w)
            remap[k] = j
        df = np.zeros(len(vocab), np.int64)
        df[: len(self.df)] = self.df
        df[remap] += other.df  # remap is one-to-one
        return _Facts(self.n + other.n, vocab, index, df, np.concatenate([self.digest, other.digest]),
                      np.concatenate([self.lead, other.lead]), np.concatenate([self.flags, other.flags]),
                      np.concatenate([self.n_words, other.n_words]), np.concatenate([self.X, other.X]),
                      self.content.merged(other.content, remap), self.head_once.merged(other.head_once, remap),
                      self.opening.merged(other.opening, remap),
                      {k: (v + other.snips[k])[:5] for k, v in self.snips.items()}, self.parts + other.parts,
                      None if self.X2 is None else np.concatenate([self.X2, other.X2]))


def _neighbour_jaccard(content: _Ragged, nbr: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Jaccard of each row's content words with each of its neighbours' (`_jac` on the sets), as sparse row products."""
    from scipy.sparse import csr_matrix

    n, k = nbr.shape
    out = np.zeros((n, k))
    if not n or not k:
        return out
    indptr = np.concatenate([[0], np.cumsum(content.lens)])
    width = int(content.flat.max(initial=-1)) + 1
    C = csr_matrix((np.ones(len(content.flat), np.int64), content.flat, indptr), shape=(n, width))
    C.sort_indices()
    for a in range(0, n, chunk):
        rows = np.repeat(np.arange(a, min(a + chunk, n)), k)
        other = nbr[a: a + chunk].ravel()
        inter = np.asarray(C[rows].multiply(C[other]).sum(1)).ravel()
        union = content.lens[rows] + content.lens[other] - inter
        out[a: a + chunk] = (inter / np.maximum(union, 1)).reshape(-1, k)
    return out


# Embedders whose vector for a passage is the same embedded alone or in any batch (wordllama: a mean of static token
# vectors; padding adds exact zeros; checked bit for bit). Others (tfidf-svd fits on the texts it embeds; minilm runs
# a transformer on padded batches, not checked) fail a scan of more than one shard rather than risk differing.
_ROW_WISE_EMBEDDERS = frozenset({"wordllama"})


def _knn(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`_repr.knn` on a matrix (the merged shards' rows): exact below ANN_MIN_ROWS, HNSW above."""
    from trainguard.detectors._repr import ANN_MIN_ROWS, exact_knn

    if len(X) >= ANN_MIN_ROWS:
        from trainguard.detectors._ann import ann_knn

        return ann_knn(X, k)
    return exact_knn(X, k)


def _plan(det: RagPoisoning, f: _Facts) -> "_TextsPass":
    """Every group that could be reported, from the per-row facts; the passages they need are gathered next."""
    from trainguard.embeddings import embed_texts

    s = det.settings
    if f.parts > 1 and s.embedder not in _ROW_WISE_EMBEDDERS:
        raise ConfigError(f"detector rag-poisoning: embedder {s.embedder!r} gives a passage a vector that depends on "
                          "the passages embedded with it, so shards would not match the whole store; use "
                          f"{', '.join(sorted(_ROW_WISE_EMBEDDERS))} or scan without --shard-rows")
    if f.parts > 1 and s.claim_embedder and s.claim_embedder not in _ROW_WISE_EMBEDDERS:
        raise ConfigError(f"detector rag-poisoning: claim_embedder {s.claim_embedder!r} gives a passage a vector that "
                          "depends on the passages embedded with it, so shards would not match the whole store; "
                          "scan without --shard-rows")
    n, vocab = f.n, f.vocab
    df = Counter({w: int(c) for w, c in zip(vocab, f.df.tolist()) if c})
    opening_ids = f.opening.rows()
    content = f.content.rows()
    words_cache: dict[int, list[str]] = {}

    def opening(i: int) -> list[str]:
        if i not in words_cache:
            words_cache[i] = [vocab[j] for j in opening_ids[i].tolist()]
        return words_cache[i]

    has_lead, inj, hid, qlike_flag, debris_flag = f.flags.T
    by_lead: dict[bytes, list[int]] = defaultdict(list)
    for i in np.flatnonzero(has_lead).tolist():
        by_lead[f.lead[i].tobytes()].append(i)
    early: dict[int, float] = {}

    def raise_score(i: int, v: float) -> None:
        early[i] = max(early.get(i, 0.0), v)

    # near-question groups: question-like openings keyed by subject, the asks (subject masked) compared by
    # embedding; made-up words alone are too common in honest stores (rare names) to group on: they add to scores
    # and queries
    qlike = np.flatnonzero(qlike_flag).tolist()
    debris = set(np.flatnonzero(debris_flag).tolist())
    head_once = f.head_once
    alone = (f.df[head_once.flat] == 1).astype(np.float64)  # in this passage only
    lone = np.bincount(np.repeat(np.arange(n), head_once.lens), weights=alone, minlength=n)
    garbled = debris | set(np.flatnonzero(lone >= s.lone_words).tolist())
    for i in garbled:
        raise_score(i, 0.2 if i not in debris else 0.3)
    asks = {i: strip_request(opening(i)) for i in set(qlike) | garbled}
    marks = {i: frozenset(w for w in opening(i) if _MARK.match(w) and w not in _STOP) for i in asks}
    subject_cap = max(20, 0.01 * n)

    def subject_of(i: int) -> str | None:
        words = [w for w in _content(asks[i]) if 2 <= df[w] <= subject_cap]
        return min(words, key=lambda w: (df[w], w)) if words else None

    by_subject: dict[str, list[int]] = defaultdict(list)
    for i in qlike:
        if (w := subject_of(i)) is not None:
            by_subject[w].append(i)
    groups = [(w, g) for w, g in sorted(by_subject.items()) if len(g) >= s.min_group]
    masked, owners = [], []
    for w, g in groups:
        seen = Counter(x for i in g for x in set(_content(asks[i])))
        subject = {x for x, c in seen.items() if 2 * c >= len(g)} | {w}
        masked += [_mask_subject(asks[i], subject) for i in g]
        owners.append(len(masked))
    vecs = embed_texts(masked, s.embedder, cache="off") if masked else np.zeros((0, 1), np.float32)
    start, mark_id = 0, {}
    near_groups: list[tuple[str, list[int]]] = []
    for (w, g), stop in zip(groups, owners):
        v, start = vecs[start:stop], stop
        sim = v @ v.T
        kinds = np.array([mark_id.setdefault(marks[i], len(mark_id)) for i in g])
        same = (sim >= s.ask_similarity) & (kinds[:, None] == kinds[None, :])  # "type 1" never meets "type 2"
        neighbours = same.sum(1) - 1
        for k, i in enumerate(g):  # a weak, graded score for question-like openings asked again nearby
            raise_score(i, 0.1 + 0.1 * min(int(neighbours[k]), 3))
        lab = _components(same)
        for c in np.unique(lab):
            rows = [g[k] for k in np.flatnonzero(lab == c)]
            if len(rows) >= s.min_group:  # fewer cannot give min_group different answers
                near_groups.append((w, rows))
    # optimised-lead groups: debris-laden openings sharing rare subject words
    optimised: list[tuple[list[int], list[str]]] = []
    if debris:
        rare_cap = max(5, 0.002 * n)
        # a word found only in debris-laden passages is more debris (recurring odd tokens), not a subject
        in_debris = Counter(vocab[j] for i in debris for j in content[i].tolist())
        rare = {i: {w for w in _content(asks[i]) if 2 <= df[w] <= rare_cap and in_debris[w] < df[w]} for i in debris}
        rows_d = sorted(i for i in debris if rare[i])
        index: dict[str, list[int]] = defaultdict(list)
        for k, i in enumerate(rows_d):
            for w in rare[i]:
                index[w].append(k)
        edges = [(a, b) for ks in index.values() for x, a in enumerate(ks) for b in ks[x + 1:]
                 if 2 * len(rare[rows_d[a]] & rare[rows_d[b]]) >= min(len(rare[rows_d[a]]), len(rare[rows_d[b]]))]
        lab = _components_of_edges(len(rows_d), edges)
        for c in np.unique(lab):
            rows = [rows_d[k] for k in np.flatnonzero(lab == c)]
            if len(rows) >= s.min_group:
                optimised.append((rows, sorted(set.intersection(*(rare[i] for i in rows)) or rare[rows[0]])))
    queries = _query_plan(s, asks, marks, debris, df) if s.queries else []
    claims = _claim_plan(s, f, content, df, opening)
    if f.X2 is not None:
        from trainguard.detectors._rag_dense import dense_claim_groups

        taken = {i for c in claims for i in c[3]}
        for G, rows, claim in dense_claim_groups(f.X2, content, f.content, f.df, s.claim_dense_step, s.claim_min_group,
                                                 s.claim_max_group, s.body_dup_jaccard):
            if not set(rows) <= taken:
                claims.append((G, "dense", [vocab[w] for w in sorted(claim, key=lambda w: (f.df[w], vocab[w]))],
                               rows, True))
    wanted = sorted({i for g in by_lead.values() if len(g) >= 2 for i in g}
                    | {i for _, rows in near_groups for i in rows} | {i for rows, _ in optimised for i in rows}
                    | {i for _, rows in queries for i in rows} | {i for c in claims for i in c[0][:5]})
    return _TextsPass(det, n, {i: f.digest[i].tobytes() for i in wanted}, np.flatnonzero(inj).tolist(),
                      np.flatnonzero(hid).tolist(), f.snips, [g for g in by_lead.values() if len(g) >= 2],
                      int(has_lead.sum()), len(qlike), early, near_groups, optimised, queries, claims)


def _query_plan(s: Settings, asks, marks, debris, df) -> list[tuple[int, list[int]]]:
    """Per known query, the openings asking it in other words (`exact` rows are dropped once known)."""
    from trainguard.embeddings import embed_texts

    queries = load_queries(s.queries)
    holders: dict[str, list[int]] = defaultdict(list)
    for i in sorted(asks):
        for w in set(_content(asks[i])):
            holders[w].append(i)
    pairs, texts = [], []
    for qi, q in enumerate(queries):
        words = strip_request(_WORD.findall(q.lower()))
        content = _content(words)
        if not content:
            continue
        subject = min(content, key=lambda w: (df[w], w))
        qmarks = frozenset(w for w in words if _MARK.match(w) and w not in _STOP)
        for i in holders.get(subject, []):
            if marks[i] != qmarks:
                continue
            shared = set(content) & set(_content(asks[i]))
            pairs.append((qi, i, len(shared) / len(set(content))))
            texts += [_mask_subject(words, shared), _mask_subject([w for w in asks[i] if not _DEBRIS.search(w)], shared)]
    if not pairs:
        return []
    v = embed_texts(texts, s.embedder, cache="off")  # row by row the same whatever else is in the batch
    sims = np.einsum("ij,ij->i", v[0::2], v[1::2])
    near: dict[int, list[int]] = defaultdict(list)
    for (qi, i, cover), sim in zip(pairs, sims):
        # optimised openings keep the query's content words but scramble the rest
        if sim >= s.query_similarity or (i in debris and cover >= 0.75):
            near[qi].append(i)
    return [(qi, rows) for qi, rows in sorted(near.items()) if len(rows) >= 2]


def _claim_plan(s: Settings, f: _Facts, content: list[np.ndarray], df_words: Counter, opening) -> list[tuple]:
    """Short passages with no question that state one claim about one subject, found by meaning.

    PoisonedRAG without S: to be retrieved for one question and to make the model give one answer,
    several passages name the same subject and restate the same claim. Two ways in:
    1. closed groups: passages that are each other's nearest neighbours in the whole store and stand
       apart from it (copies collapsed first);
    2. subject groups: among the short passages sharing a rare word (the subject), single-linkage groups
       of mutually similar passages (cosine 0.70 and up, raised until at most claim_max_group remain),
       tight (mean cosine >= claim_tightness), no farther from each other than from the rest of the store
       (claim_gap_subject), short (median <= claim_short_words) and naming no subject of their own
       (most members hold no word found in at most 20 passages that the others lack).
    Honest stores restate one claim too, but for different subjects (one frequency sentence copied over
    the pages of related disorders, one population named for several diseases): a group counts at
    severity medium only if most members name the group's subject in their opening sentence; otherwise
    it is reported at low. Padded, topic-diluted passages (benchmarks/data/rag_claims adaptive style),
    long passages and passages that each name a different made-up detail are not caught here (padded ones: the opt-in
    dense groups of `claim_embedder`, `_rag_dense`).

    Words are ids here (`content`: each row's content-word ids, `df` by id); ties break by the word, as on text.
    Sets of them are built only for the rows a group needs (copies are found from sparse row products).
    Returns (sorted members, how found, shared rare words, rows with their copies, names its subject) per group.
    """
    n, vocab, df = f.n, f.vocab, f.df
    if n <= s.claim_min_group:
        return []
    X = f.X
    nbr, sim = _knn(X, 16)
    n_words = f.n_words
    cap = max(20, int(0.005 * n))
    sets: dict[int, set[int]] = {}

    def words(i: int) -> set[int]:
        if i not in sets:
            sets[i] = set(content[i].tolist())
        return sets[i]

    # copies (near-identical vectors or wording) are one passage
    jac = _neighbour_jaccard(f.content, nbr)
    rep = np.arange(n)
    for i in range(n):
        for j, c, wj in zip(nbr[i], sim[i], jac[i]):
            if j < i and (c >= 0.97 or wj >= s.body_dup_jaccard):
                rep[i] = min(rep[i], rep[j])
    nodes = np.flatnonzero(rep == np.arange(n))
    lists: dict[int, list[tuple[int, float]]] = {}
    for i in nodes:
        out, taken = [], {int(i)}
        for j, c in zip(nbr[i], sim[i]):
            r = int(rep[j])
            if r not in taken:
                taken.add(r)
                out.append((r, float(c)))
        lists[int(i)] = out

    def shared(G) -> list[str]:
        return [vocab[w] for w in sorted((w for w in set.intersection(*(words(j) for j in G)) if 2 <= df[w] <= cap),
                                         key=lambda w: (df[w], vocab[w]))]

    groups: dict[frozenset, tuple[str, list[str]]] = {}  # group -> (how found, shared rare words)
    for i in lists:  # 1. closed groups
        if n_words[i] > 3 * s.claim_max_words:
            continue
        near = lists[i]
        for g in range(s.claim_max_group, s.claim_min_group - 1, -1):  # the largest closed group around i
            if len(near) < g:
                continue
            G = frozenset([i] + [r for r, _ in near[: g - 1]])
            if any({j, *(r for r, _ in lists[j][: g - 1])} != G for j in G):
                continue
            inside = min(np.mean([c for r, c in lists[j] if r in G]) for j in G)
            outside = max((next((c for r, c in lists[j] if r not in G), 0.0) for j in G))
            if inside - outside < s.claim_gap or np.median(n_words[list(G)]) > s.claim_max_words:
                continue
            if subject := shared(G):
                groups[G] = ("closed", subject)
                break
    # 2. subject groups: short passages sharing a rare word, mutually similar
    short = n_words <= 1.5 * s.claim_max_words
    holders: dict[int, list[int]] = defaultdict(list)
    common = max(_PRIVATE_DF, int(0.02 * n))
    for i in nodes:
        if short[i]:
            ids = content[i]
            for w in ids[(df[ids] >= 2) & (df[ids] <= common)].tolist():
                holders[w].append(int(i))
    found: set[frozenset] = set()

    def split(P: np.ndarray, S: np.ndarray, tau: float) -> None:
        lab = _components(S >= tau)
        for c in np.unique(lab):
            m = np.flatnonzero(lab == c)
            if len(m) < s.claim_min_group:
                continue
            if len(m) <= s.claim_max_group:
                found.add(frozenset(int(x) for x in P[m]))
            elif tau < _LINK_LAST:
                split(P[m], S[np.ix_(m, m)], tau + _LINK_STEP)

    for w in sorted(holders, key=vocab.__getitem__):
        P = np.array(holders[w])
        if len(P) >= s.claim_min_group:
            split(P, X[P] @ X[P].T, _LINK_FIRST)
    def strict(j: int) -> set[int]:
        return {w for w in words(j) if 2 <= df[w] <= _PRIVATE_DF}

    for G in sorted(found - set(groups), key=min):
        g = sorted(G)
        if np.median(n_words[g]) > s.claim_short_words:
            continue
        S = X[g] @ X[g].T
        inside = float(S[np.triu_indices(len(g), 1)].mean())
        outside = max(next((c for r, c in lists[j] if r not in G), 0.0) for j in g)
        private = [len(strict(j) - set().union(*(strict(k) for k in g if k != j))) for j in g]
        if inside < s.claim_tightness or inside - outside < s.claim_gap_subject or np.median(private) > 0:
            continue
        groups[G] = ("subject", shared(G))

    def names_subject(G) -> bool:
        """Most members' opening sentence names, as its rarest word, a word most other members carry."""
        agree = 0
        for j in G:
            cand = [w for w in _content(opening(j)) if df_words[w] >= 2]
            if cand:
                w = f.index[min(cand, key=lambda x: (df_words[x], x))]
                agree += 2 * sum(w in words(k) for k in G if k != j) >= len(G) - 1
        return 2 * agree > len(G)

    return [(sorted(G), how, subject, sorted(int(x) for x in np.flatnonzero(np.isin(rep, list(G)))), names_subject(G))
            for G, (how, subject) in sorted(groups.items(), key=lambda kv: min(kv[0]))]


class _Passage(NamedTuple):
    """What deciding on a gathered passage reads."""

    lead_key: str | None  # the normalised lead question
    lead_body: set | None  # the first 80 tokens after it
    body: set  # the first 80 tokens after the opening sentence
    opening: str  # evidence snippets: the opening sentence's first 120 characters ...
    head: str  # ... and the passage's


def _passage(text: str) -> _Passage:
    m = _LEAD.match(text)
    end = _opening(text)[0]
    return _Passage(_norm(m.group(1)) if m else None, set(tokens(text[m.end():])[:80]) if m else None,
                    set(tokens(text[end:])[:80]), text[:end][:120], text[:120])


@dataclass
class _Texts:
    """Gathered passages by `_digest` (the same text gives the same entry, whichever shard holds it)."""

    by_digest: dict

    def merge(self, other: "_Texts") -> "_Texts":
        return _Texts({**self.by_digest, **other.by_digest})


@dataclass
class _TextsPass(Pass):
    """The candidate groups are known: gather their passages and decide on them exactly as in memory."""

    det: RagPoisoning
    n: int
    digests: dict  # position -> `_digest` of each wanted row
    inj: list
    hid: list
    snips: dict
    lead_groups: list  # rows sharing a lead digest, two or more
    question_led: int
    question_like: int
    early: dict  # position -> row score known before any text is read
    near_groups: list  # (subject, rows)
    optimised: list  # (rows, shared rare words)
    queries: list  # (query index, rows)
    claims: list  # `_claim_plan`'s groups

    def summarize(self, shard: Dataset) -> _Texts:
        wanted = set(self.digests.values())
        out: dict[bytes, _Passage] = {}
        for r in shard:
            d = _digest(r.text)
            if d in wanted and d not in out:
                out[d] = _passage(r.text)
        return _Texts(out)

    def finalize(self, summary: _Texts, kind: Kind) -> DetectorResult:
        det, s = self.det, self.det.settings
        T = {i: summary.by_digest[d] for i, d in self.digests.items()}
        scores = np.zeros(self.n)
        for i, v in self.early.items():
            scores[i] = max(scores[i], v)
        findings: list[Alert] = []
        for rule, rows, title, sev in (("prompt-injection", self.inj, "passages carry instructions to the model",
                                        Severity.HIGH),
                                       ("hidden-text", self.hid, "passages carry hidden text or markup", Severity.MEDIUM)):
            if rows:
                scores[rows] = np.maximum(scores[rows], 0.9 if sev is Severity.HIGH else 0.6)
                findings.append(det._finding(rule, f"{len(rows)} {title}", rows, 0.9, sev,
                                             {"examples": self.snips[rule]}))
        # question-led groups
        lead: dict[str, list[int]] = defaultdict(list)
        for i in sorted(i for g in self.lead_groups for i in g):
            lead[T[i].lead_key].append(i)
        queries = [set(tokens(q)) for q in load_queries(s.queries)] if s.queries else []
        for q, rows in sorted(lead.items(), key=lambda kv: kv[1][0]):
            distinct: list[int] = []
            for i in rows:
                if all(_jac(T[i].lead_body, T[j].lead_body) < s.body_dup_jaccard for j in distinct):
                    distinct.append(i)
            near_query = any(_jac(set(q.split()), qs) >= s.query_jaccard for qs in queries)
            if len(distinct) >= s.min_group or (near_query and len(rows) >= 1 and len(distinct) >= 2):
                sc = min(1.0, 0.5 + 0.1 * len(distinct))
                scores[rows] = np.maximum(scores[rows], sc)
                findings.append(det._finding(
                    "question-led-group",
                    f"{len(rows)} passages open with the same question and give {len(distinct)} different answers",
                    rows, sc, Severity.HIGH if len(distinct) >= s.min_group else Severity.MEDIUM,
                    {"question": q[:200], "distinct_answers": len(distinct), "matches_query": near_query}))
        exact = {p for f in findings if f.rule == "question-led-group" for p in f.positions}

        def distinct_answers(rows) -> list[int]:
            out: list[int] = []
            for i in rows:
                if all(_jac(T[i].body, T[j].body) < s.body_dup_jaccard for j in out):
                    out.append(i)
            return out

        for w, rows in self.near_groups:
            d = distinct_answers(rows)
            if len(d) < s.min_group or set(rows) <= exact:
                continue
            sc = min(0.9, 0.45 + 0.1 * len(d))
            scores[rows] = np.maximum(scores[rows], sc)
            findings.append(det._finding(
                "near-question-group",
                f"{len(rows)} passages ask the same question about '{w}' in different words and give "
                f"{len(d)} different answers", rows, sc,
                Severity.MEDIUM if len(d) >= s.near_medium_group else Severity.LOW,
                {"subject": w, "distinct_answers": len(d), "openings": [T[i].opening for i in rows[:5]]}))
        for rows, subject in self.optimised:
            d = distinct_answers(rows)
            if len(d) < s.min_group:
                continue
            sc = min(0.9, 0.45 + 0.1 * len(d))
            scores[rows] = np.maximum(scores[rows], sc)
            findings.append(det._finding(
                "optimised-lead-group",
                f"{len(rows)} passages open with token debris around the same subject and give {len(d)} different answers",
                rows, sc, Severity.MEDIUM,
                {"subject": subject[:5], "distinct_answers": len(d), "openings": [T[i].head for i in rows[:5]]}))
        texts = load_queries(s.queries) if self.queries else []
        for qi, candidates in self.queries:
            rows = [i for i in candidates if i not in exact]
            d = distinct_answers(rows)
            if len(d) < 2:
                continue
            sc = min(1.0, 0.5 + 0.1 * len(d))
            scores[rows] = np.maximum(scores[rows], sc)
            findings.append(det._finding(
                "query-led-group", f"{len(rows)} passages open by asking a known query in other words "
                f"and give {len(d)} different answers", rows, sc, Severity.HIGH if len(d) >= s.min_group else Severity.MEDIUM,
                {"query": texts[qi][:200], "distinct_answers": len(d)}))
        seen = {p for f in findings for p in f.positions}
        for G, how, subject, rows, named in self.claims:
            if set(rows) <= seen:
                continue
            seen |= set(rows)
            sc = min(0.9, 0.45 + 0.05 * len(G)) if named else 0.3
            scores[rows] = np.maximum(scores[rows], sc)
            about = f" about '{subject[0]}'" if subject else ""
            findings.append(det._finding(
                "claim-group", f"{len(rows)} {'' if how == 'dense' else 'short '}passages{about} restate one claim "
                f"and stand apart from the store (one answer written several ways?)", rows, sc,
                Severity.MEDIUM if named else Severity.LOW,
                {"subject": subject[:5], "passages": len(G), "found_as": how, "names_subject": named,
                 "openings": [T[i].head for i in G[:5]]}))
        summary = {"passages": self.n, "question_led": self.question_led, "question_like": self.question_like,
                   "findings": len(findings)}
        return DetectorResult(tuple(findings), scores, summary)
