"""Near-duplicate templates: many near-identical inputs sharing one unusual output.

Poison is often produced from a template (one prompt frame, a slot filled
many times, one payload answer). MinHash/LSH over word shingles finds the
near-identical groups in one pass; each group is then judged by its outputs:

- a template group whose rows share a response that is rare outside the
  group (a fixed payload) is high severity;
- near-identical inputs with conflicting labels point at flips (medium);
- plain duplicate groups are reported at low severity as data hygiene.

Two or three maps over the data, so a sharded scan holds what one shard and
the duplicates need, not every row (issue 14); `run` (in memory) is the
one-shard case of the same passes, so its findings are those of any split:

1. `KeySketch`: every row's b LSH band keys (a 64-bit hash of each band of its
   signature; b = 12 bands of 5 at the defaults) set k = 3 bits each in two
   bitsets of 2^29 bits, "hit once" and "hit at least twice". Shards merge by
   `twice = twice_a | twice_b | (once_a & once_b)`, `once = once_a | once_b`
   (small ones keep the sorted bit positions instead: the same sets), so the
   merge is exact and order-free, and a key that occurs twice anywhere has all
   its bits in `twice`. Classification data counts its labels (its outputs) here.
2. `_FlagPass`, only when the sketch would flag many rows without a repeated
   key (expected share b * fill^k > 1 %, fill = share of bits hit: ~10M
   distinct rows and more) or the outputs are not labels (instruction,
   preference data): each row's keys whose bits are all in `twice`, with its
   file row and its output's digest; the finalize counts the keys exactly and
   keeps the rows holding a key that occurs at least twice.
3. `_GatherPass`: the candidate rows (flagged by the sketch, or by pass 2's
   exact counts) with their signatures, digests, 80-byte excerpts, outputs and
   labels, plus exact counts over all rows of the outputs the candidates carry
   (unless pass 1 counted them); grouping and decision run on these rows only.

Why nothing is lost: LSH pairs two rows only when they share a band bucket,
i.e. a band key that occurs at least twice, so every row of every group (and
every row whose normalised input repeats: equal token lists give equal
signatures) is a candidate; a false candidate shares no bucket and stays a
singleton. Buckets of two or more rows are the same sets among the candidates
as among all rows and candidates keep their order, so the candidate pairs,
their verification, the components and their order are the all-rows ones.
Band-key hash collisions only add candidates. With `min_cluster` <= 1 every
row is a group and every row is gathered.

Memory in the process that merges and finalises (issue 14's bar: <= 1 GB at
10M rows in 100k-row shards): one shard's map (read, tokenise, sign 100k rows:
~210 MB over the imports, at any row count); the sketch, 2 x 64 MiB once dense
(a 100k-row shard's own is sparse, ~15 MB; a merge of two dense ones holds
three: 384 MiB); pass 2, when it runs, 16 B per flagged key (a 3-bit filter of
2^29 bits flags a key seen once with probability about (1 - exp(-3 D / 2^29))^3
for D distinct keys: ~3e-4 at 1M rows of unique text, ~0.12 at 10M, i.e. ~14M
keys, ~225 MB, and one sorted copy of the keys in its finalize); the last
pass, ~370 B per candidate row (signature 256, excerpt 80, position, digest,
output and label 32), kept in the shards' own arrays, plus the findings.
Candidates are the rows with a repeated band key: on data without much
repetition about the duplicates (9,790 of 1M rows of `benchmarks/make_unique.py`
text with 5,124 planted); on data that is mostly near-duplicates most rows
(978,128 of the 1M `make_synthetic.py` rows: each SST-2 sentence recurs in
many pairs), and then memory grows with them (~370 B a row).
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from trainguard.detectors.base import Pass, ShardedDetector, register
from trainguard.findings import (
    ATLAS_ERODE_INTEGRITY,
    ATLAS_POISON_TRAINING_DATA,
    Alert,
    Confidence,
    DetectorResult,
    Severity,
)
from trainguard.io.dataset import Dataset
from trainguard.records import Kind
from trainguard.text import first_seen_ids, output_key, tokens


TIED_SCORE = 0.3  # under the 0.5 bar: listed in the finding, not evidence for fusion


@dataclass(frozen=True)
class Settings:
    threshold: float = 0.7  # estimated Jaccard similarity of word shingles
    num_perm: int = 64
    shingle: int = 1  # word sets: a template with a filled slot stays near-identical
    min_cluster: int = 5
    output_share: float = 0.9  # share of a group with one output before it counts as shared
    seed: int = 1


SKETCH_BITS = 1 << 29  # bits in each of the sketch's two bitsets (64 MiB each when dense)
SKETCH_HASHES = 3  # bits per band key
_CHUNK = 1 << 17  # rows whose band keys are sketched at once
DIRECT_GATHER = 0.01  # expected share of rows flagged without a repeated key, below which pass 2 is skipped


@dataclass
class KeySketch:
    """Pass 1: which band-key bits were hit once, and which at least twice, over the rows summarised.

    Sparse (sorted uint32 bit positions) while that is smaller than the bitsets, then dense (uint64
    words of `SKETCH_BITS` bits). Both forms hold the same sets and merge exactly, in any order.
    Classification data also counts its labels here (its outputs: a handful of values).
    """

    n: int
    once: np.ndarray
    twice: np.ndarray
    dense: bool = False
    labels: Counter | None = None

    @classmethod
    def of(cls, keys: np.ndarray, n: int, labels: Counter | None = None) -> "KeySketch":
        p = np.sort(_bit_positions(keys).ravel().astype(np.uint32))
        new = np.r_[True, p[1:] != p[:-1]] if len(p) else np.zeros(0, bool)
        return cls(n, p[new], _uniq(p[1:][~new[1:]]), False, labels)._fit()

    def _fit(self) -> "KeySketch":
        if self.dense or len(self.once) * 32 <= SKETCH_BITS:
            return self
        once, twice = _words(), _words()
        _set_bits(once, self.once)
        _set_bits(twice, self.twice)
        return KeySketch(self.n, once, twice, True, self.labels)

    def merge(self, other: "KeySketch") -> "KeySketch":
        n = self.n + other.n
        labels = None if self.labels is None or other.labels is None else self.labels + other.labels
        if not self.dense and not other.dense:
            both = np.intersect1d(self.once, other.once, assume_unique=True)
            twice = _uniq(np.concatenate([self.twice, other.twice, both]))
            return KeySketch(n, _uniq(np.concatenate([self.once, other.once])), twice, False, labels)._fit()
        a, b = (self, other) if self.dense else (other, self)
        if b.dense:
            twice = a.once & b.once
            twice |= a.twice
            twice |= b.twice
            return KeySketch(n, a.once | b.once, twice, True, labels)
        twice = a.twice.copy()
        _set_bits(twice, b.twice)
        _set_bits(twice, b.once[_has_bits(a.once, True, b.once)])
        once = a.once.copy()
        _set_bits(once, b.once)
        return KeySketch(n, once, twice, True, labels)

    def absorb(self, other: "KeySketch") -> "KeySketch":
        """`self.merge(other)`, in place when `self` is dense (only for a sketch no one else holds: the
        in-memory pass 1 folding its row chunks, which would otherwise copy 128 MiB a chunk)."""
        if not self.dense:
            return self.merge(other)
        if other.dense:
            both = self.once & other.once
            self.twice |= both
            del both
            self.twice |= other.twice
            self.once |= other.once
        else:
            _set_bits(self.twice, other.twice)
            _set_bits(self.twice, other.once[_has_bits(self.once, True, other.once)])
            _set_bits(self.once, other.once)
        self.n += other.n
        if self.labels is not None and other.labels is not None:
            self.labels = self.labels + other.labels
        else:
            self.labels = None
        return self

    def once_fill(self) -> float:
        """Share of bits hit at least once: a key seen once has all its bits in `twice` with
        probability about once_fill ** SKETCH_HASHES."""
        hit = int(np.bitwise_count(self.once).sum()) if self.dense else len(self.once)
        return hit / SKETCH_BITS

    def repeated(self, keys: np.ndarray) -> np.ndarray:
        """Per key: all its bits are in `twice` (true for every key that occurred twice or more)."""
        return _flagged(self.twice, self.dense, keys)

    def twice_for_lookups(self) -> tuple[np.ndarray, bool]:
        """`twice` as later passes test it: dense once it has more than a few positions (fast lookups)."""
        if self.dense or len(self.twice) <= SKETCH_BITS // 8192:  # 64K positions: binary search is cheap
            return self.twice, self.dense
        words = _words()
        _set_bits(words, self.twice)
        return words, True


@dataclass
class _Flagged:
    """Pass 2: the band keys the sketch calls repeated, each with its row's file row; the flagged
    rows' output digests (to count those outputs in pass 3). Per shard; merging lists them."""

    n: int
    keys: list[np.ndarray]  # uint64
    key_rows: list[np.ndarray]  # int64 file rows, one per key
    rows: list[np.ndarray]  # int64 file rows with any flagged key
    outs: list[np.ndarray] | None  # uint64 digests of their outputs (None: classification, documents)

    def merge(self, other: "_Flagged") -> "_Flagged":
        outs = None if self.outs is None or other.outs is None else self.outs + other.outs
        return _Flagged(self.n + other.n, self.keys + other.keys, self.key_rows + other.key_rows,
                        self.rows + other.rows, outs)


@dataclass
class Candidates:
    """The candidate rows' MinHash signatures, input digests and excerpts, outputs and labels, in order.

    About 370 bytes a candidate at 64 permutations: fixed-width arrays and an
    80-byte excerpt, never whole texts. Outputs and labels are interned: a
    dataset has few distinct ones. `out_counts` counts, over every row, the
    outputs the candidates carry (`_judge` needs how often a group's output
    occurs elsewhere). `pos` are positions over all `n` rows, in order: the
    engine maps them to file rows and record ids.
    """

    n: int
    pos: np.ndarray  # [c] int64
    sigs: "_Stacked"  # [c, num_perm] uint32
    digests: np.ndarray  # [c] uint64, normalised-input identity
    examples: "_Stacked"  # [c] S80, UTF-8 excerpts of the normalised input
    outputs: list[str | None] | None
    labels: list[str | None]
    out_counts: Counter


@dataclass
class _Part:
    """One shard's candidates; `pos` is local to the shard, `offset` the rows before it."""

    offset: int
    pos: np.ndarray | None
    sigs: "np.ndarray | _Indexed | None"
    digests: np.ndarray | None
    examples: np.ndarray | None
    outputs: list[str | None] | None
    labels: list[str | None] | None


@dataclass
class DuplicateSummary:
    """The last pass's summary: the shards' candidate parts, kept apart until the finalize.

    Merging only lists the parts (no copy, so merging never holds the candidates twice);
    `flatten` moves them into one `Candidates`, releasing each part as it is copied.
    """

    n: int
    parts: list[_Part]
    out_counts: Counter

    def merge(self, other: "DuplicateSummary") -> "DuplicateSummary":
        moved = [replace(q, offset=q.offset + self.n) for q in other.parts]
        return DuplicateSummary(self.n + other.n, self.parts + moved, self.out_counts + other.out_counts)

    def flatten(self, num_perm: int, documents: bool) -> Candidates:
        """One `Candidates`: positions, digests, outputs and labels joined (8 B a row each); signatures
        and excerpts stay in their shards' arrays behind a row index (copying them would hold them twice,
        and the allocator does not hand freed parts back)."""
        parts, self.parts = self.parts, []
        pos = np.concatenate([np.zeros(0, np.int64), *(q.pos + q.offset for q in parts)])
        digests = np.concatenate([np.zeros(0, np.uint64), *(q.digests for q in parts)])
        outputs: list | None = None if documents else [o for q in parts for o in q.outputs]
        labels = [y for q in parts for y in q.labels]
        sigs = _Stacked([q.sigs for q in parts], (0, num_perm), np.uint32)
        examples = _Stacked([q.examples for q in parts], (0,), "S80")
        return Candidates(self.n, pos, sigs, digests, examples, outputs, labels, self.out_counts)


class _Indexed:
    """Rows `index` of `array`, not copied (in memory the candidates' signatures are most of the rows
    of the signatures computed for the sketch: copying them would hold both)."""

    def __init__(self, array: np.ndarray, index: np.ndarray) -> None:
        self.array, self.index = array, index
        self.shape = (len(index), *array.shape[1:])
        self.dtype = array.dtype

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return self.array[self.index[rows]]

    def columns(self, lo: int, hi: int) -> np.ndarray:
        return self.array[self.index, lo:hi]


class _Stacked:
    """Arrays of rows kept apart, read as one: `take(rows)`, `columns(lo, hi)`, `len`."""

    def __init__(self, parts: list, empty: tuple[int, ...], dtype) -> None:
        self.parts = [q for q in parts if len(q)] or [np.zeros(empty, dtype)]
        self.ends = np.cumsum([0, *(len(q) for q in self.parts)])

    @classmethod
    def of(cls, a: "np.ndarray | _Stacked") -> "_Stacked":
        return a if isinstance(a, _Stacked) else cls([a], (0, *a.shape[1:]), a.dtype)

    def __len__(self) -> int:
        return int(self.ends[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.parts[0].shape[1:])

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if len(self.parts) == 1:
            return self.parts[0][rows]
        out = np.empty((len(rows), *self.parts[0].shape[1:]), self.parts[0].dtype)
        which = np.searchsorted(self.ends, rows, side="right") - 1
        for j in np.unique(which).tolist():
            sel = which == j
            out[sel] = self.parts[j][rows[sel] - self.ends[j]]
        return out

    def columns(self, lo: int, hi: int) -> np.ndarray:
        return np.concatenate([q.columns(lo, hi) if isinstance(q, _Indexed) else q[:, lo:hi] for q in self.parts])


@register
class NearDuplicates(ShardedDetector):
    name = "near-duplicates"
    version = "1"
    kinds = frozenset(Kind)
    atlas = (ATLAS_POISON_TRAINING_DATA, ATLAS_ERODE_INTEGRITY)
    Settings = Settings
    description = "MinHash/LSH groups of near-identical inputs, judged by their outputs"

    def summarize(self, shard: Dataset) -> KeySketch:
        keys = self._band_keys(shard)
        labels = Counter(output_key(r) for r in shard) if shard.kind is Kind.CLASSIFICATION else None
        sketch = KeySketch(0, np.zeros(0, np.uint32), np.zeros(0, np.uint32), False, labels)
        for lo in range(0, len(keys), _CHUNK):  # bounded temporaries on a large in-memory set
            part = keys[lo : lo + _CHUNK]
            sketch = sketch.absorb(KeySketch.of(part, len(part), None if labels is None else Counter()))
        return sketch

    def finalize(self, sketch: KeySketch, kind: Kind) -> "_FlagPass | _GatherPass":
        """Gather the rows the sketch flags when it flags few rows that repeat no key; else first
        count the flagged keys exactly (pass 2) and gather only rows whose key repeats. The same
        choice in any split: the sketch is the same."""
        counts = Counter() if kind is Kind.DOCUMENTS else sketch.labels
        if self.settings.min_cluster <= 1:  # every row is a group of its own: every row is needed
            return _GatherPass(self, None, None, False, None, counts)
        twice, dense = sketch.twice_for_lookups()
        b, _ = _band_params(self.settings.num_perm, self.settings.threshold)
        if counts is not None and b * sketch.once_fill() ** SKETCH_HASHES <= DIRECT_GATHER:
            return _GatherPass(self, None, twice, dense, None, counts)
        return _FlagPass(self, twice, dense, counts)

    def _signatures(self, shard: Dataset) -> np.ndarray:
        """Every row's signature, kept on the data: in memory the three passes compute it once."""
        s = self.settings
        return shard.artefact(self._sig_key(), lambda: _signatures(
            [_shingles(t, s.shingle) for t in shard.artefact("tokens", lambda: [tokens(r.text) for r in shard])],
            s.num_perm, s.seed))

    def _sig_key(self) -> str:
        s = self.settings
        return f"{self.name}:minhash:{s.num_perm}:{s.seed}:{s.shingle}"

    def _band_keys(self, shard: Dataset) -> np.ndarray:
        b, r = _band_params(self.settings.num_perm, self.settings.threshold)
        return _band_keys(self._signatures(shard), b, r)

    def _decide(self, summary: Candidates, kind: Kind) -> DetectorResult:
        s = self.settings
        inv, size = _lsh_groups(summary.sigs, s.threshold)
        out_total = summary.out_counts
        findings = []
        row_scores = np.zeros(summary.n)
        plain: list[Alert] = []
        by_group = np.argsort(inv, kind="stable")
        bounds = np.r_[0, np.cumsum(size)]
        for g in np.flatnonzero(size >= s.min_cluster):
            members = np.sort(by_group[bounds[g] : bounds[g + 1]])
            f = self._judge(summary, kind, members, out_total)
            rows = summary.pos[members]
            row_scores[rows] = np.maximum(row_scores[rows], f.score)
            (plain if f.rule == "duplicate-group" else findings).append(f)
        if plain:
            findings.append(self._hygiene(summary, plain))
        if kind is Kind.CLASSIFICATION:
            conflict, suspects, tied = self._conflicting_labels(summary)
            if conflict is not None:
                findings.append(conflict)
                row_scores[suspects] = np.maximum(row_scores[suspects], conflict.score)
                # A tie says the labels disagree, not which row is wrong: listed, but kept under the bar.
                row_scores[tied] = np.maximum(row_scores[tied], TIED_SCORE)
        stats = {"groups": int((size >= 2).sum()), "groups_at_min_size": int((size >= s.min_cluster).sum()),
                 "candidate_rows": len(summary.pos)}  # rows with a repeated band key: what pass 3 held
        return DetectorResult(tuple(findings), row_scores, stats)

    def _conflicting_labels(self, summary: Candidates) -> tuple[Alert | None, list[int], list[int]]:
        """Identical inputs with different labels: the minority label rows are flip suspects.

        Only exact (normalised) identity counts: near-identical sentiment phrases
        legitimately differ in label ("good" / "not good").
        """
        by_text: dict[int, list[int]] = {}
        d = summary.digests
        order = np.argsort(d, kind="stable")
        ds = d[order]
        same = ds[1:] == ds[:-1]
        twice = np.r_[same, False] | np.r_[False, same] if len(ds) else np.zeros(0, bool)
        repeated = np.sort(order[twice])  # only an input seen twice can carry two labels
        for i, key in zip(repeated.tolist(), d[repeated].tolist()):
            by_text.setdefault(key, []).append(i)
        suspects, tied, groups = [], [], []
        pos = summary.pos.tolist()  # candidate index -> position (increasing, so orders carry over)
        for idx in by_text.values():
            labels = Counter(summary.labels[i] for i in idx)
            if len(labels) < 2:
                continue
            (top, n_top), (_, n_next) = labels.most_common(2)
            if n_top > n_next:
                suspects.extend(pos[i] for i in idx if summary.labels[i] != top)
            else:
                tied.extend(pos[i] for i in idx)
            groups.append({"input": _example(summary, idx[0]), "labels": {str(k): v for k, v in labels.most_common()},
                           "positions": [pos[i] for i in idx][:20]})
        if not suspects and not tied:
            return None, [], []
        listed = sorted(suspects + tied)
        groups.sort(key=lambda g: -sum(g["labels"].values()))
        finding = Alert(
            rule="conflicting-labels",
            title=(f"{len(groups)} identical inputs carry conflicting labels ({len(suspects)} minority-label rows, "
                   f"{len(tied)} in tied groups)"),
            positions=tuple(int(i) for i in listed),
            score=0.5, severity=Severity.MEDIUM, confidence=Confidence.MEDIUM,
            evidence={"groups": len(groups), "minority_rows": len(suspects), "tied_rows": len(tied),
                      "examples": groups[:20]},
        )
        return finding, sorted(suspects), sorted(tied)

    def _hygiene(self, summary: Candidates, groups: list[Alert]) -> Alert:
        """Plain duplicate groups are data hygiene: one low finding, not hundreds."""
        groups.sort(key=lambda f: -len(f.positions))
        positions = sorted({p for f in groups for p in f.positions})
        return Alert(
            rule="duplicate-group",
            title=f"{len(groups)} groups of near-identical records ({len(positions)} rows) with consistent outputs",
            positions=tuple(positions), score=0.2, severity=Severity.LOW, confidence=Confidence.MEDIUM,
            evidence={"groups": len(groups),
                      "largest": [dict(f.evidence, positions=list(f.positions[:20])) for f in groups[:10]]},
        )

    def _judge(self, summary: Candidates, kind: Kind, members: np.ndarray, out_total: Counter) -> Alert:
        s = self.settings
        distinct_inputs = len(set(summary.digests[members].tolist()))
        evidence = {"group_size": int(len(members)), "distinct_inputs": distinct_inputs,
                    "example_input": _example(summary, members[0])}
        outputs = summary.outputs
        if outputs is None:
            severity, rule, score = Severity.LOW, "duplicate-group", 0.2
            title = f"{len(members)} near-identical records"
        else:
            top, n_top = Counter(outputs[i] for i in members).most_common(1)[0]
            share = n_top / len(members)
            outside = out_total[top] - n_top
            evidence.update(top_output=str(top)[:120], top_output_share=round(share, 4),
                            top_output_rows_elsewhere=int(outside))
            payload = (kind is not Kind.CLASSIFICATION and share >= s.output_share
                       and distinct_inputs >= s.min_cluster and outside <= 0.1 * n_top)
            if payload:
                severity, rule, score = Severity.HIGH, "template-payload", 0.9
                title = (f"{distinct_inputs} near-identical prompts share one response "
                         f"seen {outside} times elsewhere")
            else:
                severity, rule, score = Severity.LOW, "duplicate-group", 0.2
                title = f"{len(members)} near-identical records share output {str(top)[:40]!r}"
        return Alert(rule=rule, title=title, positions=tuple(summary.pos[members].tolist()), score=score,
                     severity=severity, confidence=Confidence.MEDIUM, evidence=evidence)


@dataclass
class _FlagPass(Pass):
    """Pass 2: with the merged sketch's `twice` bits, each row's keys that may repeat, by file row."""

    det: NearDuplicates
    twice: np.ndarray
    dense: bool
    counts: Counter | None  # classification: the labels counted in pass 1

    def summarize(self, shard: Dataset) -> _Flagged:
        keys = self.det._band_keys(shard)
        flag = _flagged(self.twice, self.dense, keys)  # [n, bands]
        hit = np.flatnonzero(flag.any(1))
        file_rows = np.fromiter((shard.records[i].row for i in hit.tolist()), np.int64, len(hit))
        per_row = flag[hit].sum(1)
        outs = None
        if self.counts is None:  # instruction / preference: which outputs to count in pass 3
            outs = np.fromiter((_digest(output_key(shard.records[i]) or "") for i in hit.tolist()), np.uint64, len(hit))
        return _Flagged(len(shard), [keys[hit][flag[hit]]], [np.repeat(file_rows, per_row)], [file_rows],
                        None if outs is None else [outs])

    def finalize(self, summary: _Flagged, kind: Kind) -> "_GatherPass | DetectorResult":
        self.twice = None  # every shard has been summarised
        keys = np.concatenate(summary.keys)
        keys.sort()
        repeated = _uniq(keys[1:][keys[1:] == keys[:-1]])  # keys seen twice or more: few next to the flagged
        del keys
        hit = [np.isin(k, repeated) for k in summary.keys]  # part by part: no joined copy of the rows
        cand = _uniq(np.concatenate([np.zeros(0, np.int64), *(r[h] for r, h in zip(summary.key_rows, hit))]))
        del hit, repeated
        summary.keys = summary.key_rows = []
        if not len(cand):  # no row shares a bucket: no group and no repeated input
            return self.det._decide(_empty(summary.n, kind), kind)
        wanted = None
        if summary.outs is not None:
            wanted = _uniq(np.concatenate([o[np.isin(r, cand)] for o, r in zip(summary.outs, summary.rows)]))
        return _GatherPass(self.det, _row_mask(cand), None, False, wanted, self.counts)


@dataclass
class _GatherPass(Pass):
    """Pass 3 (or 2): the candidate rows, picked by a bitmask over file rows (after pass 2), by the
    sketch's `twice` bits (when it flags few rows falsely), or all rows (neither), and output counts."""

    det: NearDuplicates
    mask: np.ndarray | None
    twice: np.ndarray | None
    dense: bool
    wanted: np.ndarray | None  # sorted uint64 digests of the candidates' outputs; None: count every output
    counts: Counter | None  # outputs already counted (classification labels, in pass 1; documents: none)

    def summarize(self, shard: Dataset) -> DuplicateSummary:
        det, s = self.det, self.det.settings
        recs = shard.records
        if self.twice is not None:
            flag = _flagged(self.twice, self.dense, det._band_keys(shard))
            take = np.flatnonzero(flag.any(1))
        elif self.mask is not None:
            take = np.flatnonzero(_in_mask(self.mask, np.fromiter((r.row for r in recs), np.int64, len(recs))))
        else:
            take = np.arange(len(recs))
        picked = [recs[i] for i in take.tolist()]
        every_sig = shard.cached_artefact(det._sig_key())  # computed by this or an earlier pass on the same data
        if every_sig is not None:
            sigs = _Indexed(every_sig, take) if 2 * len(take) >= len(recs) else every_sig[take]
            every_tok = shard.artefact("tokens", lambda: [tokens(r.text) for r in shard])
            toks = [every_tok[i] for i in take.tolist()]
        else:
            toks = [tokens(r.text) for r in picked]
            sigs = _signatures([_shingles(t, s.shingle) for t in toks], s.num_perm, s.seed)
        joined = [" ".join(t) for t in toks]
        outputs, counts = None, Counter()
        if shard.kind is not Kind.DOCUMENTS:
            outputs = [_intern(output_key(r)) for r in picked]
            if self.counts is None:
                every = [output_key(r) for r in recs]
                if self.wanted is None:
                    counts = Counter(every)
                else:
                    digests = np.fromiter((_digest(o or "") for o in every), np.uint64, len(every))
                    counts = Counter(every[i] for i in np.flatnonzero(np.isin(digests, self.wanted)).tolist())
        part = _Part(0, take.astype(np.int64), sigs,
                     np.array([_digest(j) for j in joined], dtype=np.uint64),
                     np.array([j.encode("utf-8", "surrogatepass")[:80] for j in joined], dtype="S80"),
                     outputs, [_intern(r.label) for r in picked])
        return DuplicateSummary(len(recs), [part], counts)

    def finalize(self, summary: DuplicateSummary, kind: Kind) -> DetectorResult:
        self.twice = self.mask = None  # every shard has been summarised: free them before the decision
        flat = summary.flatten(self.det.settings.num_perm, kind is Kind.DOCUMENTS)
        if self.counts is not None:
            flat.out_counts = self.counts
        return self.det._decide(flat, kind)


def _empty(n: int, kind: Kind) -> Candidates:
    return Candidates(n, np.zeros(0, np.int64), _Stacked([], (0, 1), np.uint32), np.zeros(0, np.uint64),
                      _Stacked([], (0,), "S80"), None if kind is Kind.DOCUMENTS else [], [], Counter())


def _uniq(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (by a sort: numpy's hashing `unique` is several times slower here)."""
    a = np.sort(a)
    return a[np.r_[True, a[1:] != a[:-1]]] if len(a) else a


def _band_keys(sig: np.ndarray, b: int, r: int) -> np.ndarray:
    """[rows, b] uint64: a 64-bit hash of each band of r signature values, salted by the band's index."""
    n = len(sig)
    v = np.ascontiguousarray(sig[:, : b * r]).reshape(n, b, r).astype(np.uint64)
    h = np.broadcast_to((np.arange(1, b + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)), (n, b)).copy()
    for c in range(r):
        h ^= v[:, :, c]
        h = _fmix64(h)
    return h


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _bit_positions(keys: np.ndarray) -> np.ndarray:
    """[..., SKETCH_HASHES] distinct bit positions of each key (double hashing with an odd step)."""
    mask = np.uint64(SKETCH_BITS - 1)
    step = (keys >> np.uint64(32)) | np.uint64(1)
    i = np.arange(SKETCH_HASHES, dtype=np.uint64)
    return ((keys & mask)[..., None] + step[..., None] * i) & mask


def _words() -> np.ndarray:
    return np.zeros(SKETCH_BITS // 64, np.uint64)


def _set_bits(words: np.ndarray, p: np.ndarray, chunk: int = 1 << 20) -> None:
    """Set the bits at sorted, distinct positions `p` in `words` (a chunk at a time: bounded temporaries)."""
    for lo in range(0, len(p), chunk):
        q = p[lo : lo + chunk].astype(np.uint64)
        w = (q >> np.uint64(6)).astype(np.intp)
        bits = np.left_shift(np.uint64(1), q & np.uint64(63))
        starts = np.r_[0, np.flatnonzero(np.diff(w)) + 1]
        words[w[starts]] |= np.bitwise_or.reduceat(bits, starts)


def _has_bits(bits: np.ndarray, dense: bool, p: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Whether each position in `p` is set: `bits` dense words, or sorted uint32 positions."""
    flat = p.ravel()
    out = np.zeros(len(flat), bool)
    if not dense and not len(bits):
        return out.reshape(p.shape)
    for lo in range(0, len(flat), chunk):
        q = flat[lo : lo + chunk]
        if dense:
            q = q.astype(np.uint64)
            word = bits[(q >> np.uint64(6)).astype(np.intp)]
            out[lo : lo + len(q)] = (word >> (q & np.uint64(63))) & np.uint64(1)
        else:
            q = q.astype(np.uint32)
            i = np.minimum(np.searchsorted(bits, q), len(bits) - 1)
            out[lo : lo + len(q)] = bits[i] == q
    return out.reshape(p.shape)


def _flagged(twice: np.ndarray, dense: bool, keys: np.ndarray) -> np.ndarray:
    """Per key (any shape): all its bits are in `twice`; `_CHUNK` keys' rows at a time (bounded temporaries)."""
    out = np.zeros(keys.shape, bool)
    for lo in range(0, len(keys), _CHUNK):
        out[lo : lo + _CHUNK] = _has_bits(twice, dense, _bit_positions(keys[lo : lo + _CHUNK])).all(-1)
    return out


def _row_mask(file_rows: np.ndarray) -> np.ndarray:
    """A bitmask over file rows 0..max (1 bit a row: 1.25 MB at 10M rows)."""
    mask = np.zeros(int(file_rows.max()) // 8 + 1, np.uint8)
    np.bitwise_or.at(mask, file_rows // 8, (1 << (file_rows % 8)).astype(np.uint8))
    return mask


def _in_mask(mask: np.ndarray, file_rows: np.ndarray) -> np.ndarray:
    inside = (file_rows >= 0) & (file_rows < len(mask) * 8)
    out = ~inside  # a row the mask cannot say anything about is gathered: extra candidates are harmless
    r = file_rows[inside]
    out[inside] = ((mask[r // 8] >> (r % 8).astype(np.uint8)) & 1).astype(bool)
    return out


def _intern(value: str | None) -> str | None:
    return None if value is None else sys.intern(value)


def _example(summary: Candidates, i: int) -> str:
    return summary.examples.take(np.array([i]))[0].decode("utf-8", "ignore")


def _digest(text: str) -> int:
    """Stable across processes (Python's hash() is salted per process, which breaks sharding)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _shingles(toks: list[str], k: int) -> list[str]:
    if len(toks) <= k:
        return [" ".join(toks)]
    if k == 1:
        return toks
    return [" ".join(toks[i : i + k]) for i in range(len(toks) - k + 1)]


def _signatures(shingles: list[list[str]], num_perm: int, seed: int, block: int = 1 << 12) -> np.ndarray:
    """(rows, num_perm) uint32 MinHash signatures of each row's shingle set.

    The scheme is datasketch 2's default ("affine32") over the shingles' UTF-8 bytes: the first 4 bytes of
    SHA-1 (little-endian), the MurmurHash3 32-bit finaliser, then h -> a_k h + b_k mod 2^32 with odd a_k, and
    (a, b) drawn from `RandomState(seed)`. It is written out here so signatures do not change with the
    installed datasketch (1.x used another scheme) and so each distinct shingle is hashed once and rows take
    minima over a gather, not one Python object per row (about 4x faster on SST-2).
    """
    if not shingles:
        return np.zeros((0, num_perm), np.uint32)
    ids, distinct = first_seen_ids(shingles)
    lens = np.fromiter(map(len, shingles), np.int64, len(shingles))
    if (lens == 0).any():
        raise ValueError("every row needs at least one shingle")
    digests = b"".join(hashlib.sha1(sh.encode("utf-8", "surrogatepass")).digest()[:4] for sh in distinct)
    hv = _fmix32(np.frombuffer(digests, "<u4").astype(np.uint32))
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    out = np.empty((len(shingles), num_perm), np.uint32)
    ends = np.cumsum(lens)
    starts = ends - lens
    # Rows in blocks of about `block` shingles (a longer row alone): the products stay in cache, which is
    # ~4x faster than blocks of 2^18 shingles and holds ~60 MB less at 100k rows.
    cuts = np.searchsorted(ends, np.arange(block, ends[-1], block), side="left") + 1
    bounds = np.unique(np.r_[0, cuts[cuts < len(lens)], len(lens)])
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        occ = hv[ids[starts[lo]:ends[hi - 1]]]
        out[lo:hi] = np.minimum.reduceat(occ[:, None] * a + b, starts[lo:hi] - starts[lo], axis=0)
    return out


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (uint32 arithmetic wraps, which is the mod 2^32)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _band_params(num_perm: int, threshold: float) -> tuple[int, int]:
    """Bands b and rows r (b*r <= num_perm) whose S-curve (1/b)^(1/r) sits just below the threshold."""
    best = (1, num_perm)
    for r in range(1, num_perm + 1):
        b = num_perm // r
        if b and (1 / b) ** (1 / r) <= threshold - 0.05:
            best = (b, r)
    return best


def _lsh_groups(sig: "np.ndarray | _Stacked", threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Connected groups of rows whose signatures agree on >= threshold of positions.

    Banding in numpy: rows that share any band bucket become candidate pairs
    (each bucket chained to its first member), verified on the full signature.
    A pair is kept as one int64 (first * n + other): sorted, that is the order of
    the (first, other) rows, at a quarter of their memory.
    """
    sig = _Stacked.of(sig)
    n, num_perm = sig.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    b, r = _band_params(num_perm, threshold)
    keys = []
    for band in range(b):
        block = np.ascontiguousarray(sig.columns(band * r, (band + 1) * r))
        _, bucket = np.unique(block.view(np.dtype((np.void, block.dtype.itemsize * r))).ravel(),
                              return_inverse=True)
        order = np.argsort(bucket.ravel(), kind="stable")
        sb = bucket.ravel()[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sb)) + 1]
        first = order[np.repeat(starts, np.diff(np.r_[starts, n]))]
        keep = first != order
        keys.append(first[keep].astype(np.int64) * n + order[keep])
        del block, bucket, order, sb, first, keep
    pair_keys = _uniq(np.concatenate(keys))
    del keys
    if len(pair_keys):
        agree = np.zeros(len(pair_keys), bool)
        for lo in range(0, len(pair_keys), 65536):  # in blocks: a duplicate-heavy set has millions of pairs
            k = pair_keys[lo : lo + 65536]
            agree[lo : lo + len(k)] = (sig.take(k // n) == sig.take(k % n)).mean(1) >= threshold
        pair_keys = pair_keys[agree]
    src, dst = pair_keys // n, pair_keys % n
    graph = sparse.coo_matrix((np.ones(len(pair_keys)), (src, dst)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, inv, size = np.unique(labels, return_inverse=True, return_counts=True)
    return inv, size
