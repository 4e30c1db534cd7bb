"""Near-duplicate templates: many near-identical inputs sharing one unusual output.

Poison is often produced from a template (one prompt frame, a slot filled
many times, one payload answer). MinHash/LSH over word shingles finds the
near-identical groups in one pass; each group is then judged by its outputs:

- a template group whose rows share a response that is rare outside the
  group (a fixed payload) is high severity;
- near-identical inputs with conflicting labels point at flips (medium);
- plain duplicate groups are reported at low severity as data hygiene.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from trainguard.detectors.base import ShardedDetector, register
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


@dataclass
class DuplicateSummary:
    """Per-row MinHash signature, a digest of the normalised input, its output and label.

    About 350 bytes a row at 64 permutations: deduplication is inherently
    per-row, so this summary grows with the data, but it holds fixed-width
    arrays and an 80-byte excerpt, never whole texts. Outputs and labels are
    interned: a dataset has few distinct ones. Rows are positions: the engine
    maps them to file rows and record ids.
    """

    sigs: np.ndarray  # [n, num_perm] uint32
    digests: np.ndarray  # [n] uint64, normalised-input identity
    examples: np.ndarray  # [n] S80, UTF-8 excerpts of the normalised input
    outputs: list[str | None] | None
    labels: list[str | None]

    @property
    def n(self) -> int:
        return len(self.digests)

    def merge(self, other: "DuplicateSummary") -> "DuplicateSummary":
        return DuplicateSummary(
            np.concatenate([self.sigs, other.sigs]), np.concatenate([self.digests, other.digests]),
            np.concatenate([self.examples, other.examples]),
            None if self.outputs is None or other.outputs is None else self.outputs + other.outputs,
            self.labels + other.labels,
        )


@register
class NearDuplicates(ShardedDetector):
    name = "near-duplicates"
    version = "1"
    kinds = frozenset(Kind)
    atlas = (ATLAS_POISON_TRAINING_DATA, ATLAS_ERODE_INTEGRITY)
    Settings = Settings
    description = "MinHash/LSH groups of near-identical inputs, judged by their outputs"

    def summarize(self, shard: Dataset) -> DuplicateSummary:
        s = self.settings
        toks = shard.artefact("tokens", lambda: [tokens(r.text) for r in shard])
        joined = [" ".join(t) for t in toks]
        return DuplicateSummary(
            sigs=_signatures([_shingles(t, s.shingle) for t in toks], s.num_perm, s.seed),
            digests=np.array([_digest(j) for j in joined], dtype=np.uint64),
            examples=np.array([j.encode("utf-8", "surrogatepass")[:80] for j in joined], dtype="S80"),
            outputs=None if shard.kind is Kind.DOCUMENTS else [_intern(output_key(r)) for r in shard],
            labels=[_intern(r.label) for r in shard],
        )

    def finalize(self, summary: DuplicateSummary, kind: Kind) -> DetectorResult:
        s = self.settings
        inv, size = _lsh_groups(summary.sigs, s.threshold)
        out_total = Counter(summary.outputs) if summary.outputs is not None else Counter()
        findings = []
        row_scores = np.zeros(summary.n)
        plain: list[Alert] = []
        by_group = np.argsort(inv, kind="stable")
        bounds = np.r_[0, np.cumsum(size)]
        for g in np.flatnonzero(size >= s.min_cluster):
            members = np.sort(by_group[bounds[g] : bounds[g + 1]])
            f = self._judge(summary, kind, members, out_total)
            row_scores[members] = np.maximum(row_scores[members], f.score)
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
        stats = {"groups": int((size >= 2).sum()), "groups_at_min_size": int((size >= s.min_cluster).sum())}
        return DetectorResult(tuple(findings), row_scores, stats)

    def _conflicting_labels(self, summary: DuplicateSummary) -> tuple[Alert | None, list[int], list[int]]:
        """Identical inputs with different labels: the minority label rows are flip suspects.

        Only exact (normalised) identity counts: near-identical sentiment phrases
        legitimately differ in label ("good" / "not good").
        """
        by_text: dict[int, list[int]] = {}
        for i, d in enumerate(summary.digests.tolist()):
            by_text.setdefault(d, []).append(i)
        suspects, tied, groups = [], [], []
        for idx in by_text.values():
            labels = Counter(summary.labels[i] for i in idx)
            if len(labels) < 2:
                continue
            (top, n_top), (_, n_next) = labels.most_common(2)
            if n_top > n_next:
                suspects.extend(i for i in idx if summary.labels[i] != top)
            else:
                tied.extend(idx)
            groups.append({"input": _example(summary, idx[0]), "labels": {str(k): v for k, v in labels.most_common()},
                           "positions": [int(i) for i in idx][:20]})
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

    def _hygiene(self, summary: DuplicateSummary, groups: list[Alert]) -> Alert:
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

    def _judge(self, summary: DuplicateSummary, kind: Kind, members: np.ndarray, out_total: Counter) -> Alert:
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
        return Alert(rule=rule, title=title, positions=tuple(int(i) for i in members), score=score,
                     severity=severity, confidence=Confidence.MEDIUM, evidence=evidence)


def _intern(value: str | None) -> str | None:
    return None if value is None else sys.intern(value)


def _example(summary: DuplicateSummary, i: int) -> str:
    return summary.examples[i].decode("utf-8", "ignore")


def _digest(text: str) -> int:
    """Stable across processes (Python's hash() is salted per process, which breaks sharding)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _shingles(toks: list[str], k: int) -> list[str]:
    if len(toks) <= k:
        return [" ".join(toks)]
    if k == 1:
        return toks
    return [" ".join(toks[i : i + k]) for i in range(len(toks) - k + 1)]


def _signatures(shingles: list[list[str]], num_perm: int, seed: int, block: int = 1 << 18) -> np.ndarray:
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
    step = max(1, block // max(1, int(lens.max())))  # rows per block: at most ~`block` shingles gathered
    for lo in range(0, len(lens), step):
        hi = min(lo + step, len(lens))
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


def _lsh_groups(sig: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Connected groups of rows whose signatures agree on >= threshold of positions.

    Banding in numpy: rows that share any band bucket become candidate pairs
    (each bucket chained to its first member), verified on the full signature.
    """
    n, num_perm = sig.shape
    b, r = _band_params(num_perm, threshold)
    src, dst = [], []
    for band in range(b):
        block = np.ascontiguousarray(sig[:, band * r : (band + 1) * r])
        _, bucket = np.unique(block.view(np.dtype((np.void, block.dtype.itemsize * r))).ravel(),
                              return_inverse=True)
        order = np.argsort(bucket, kind="stable")
        sb = bucket[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sb)) + 1]
        first = order[np.repeat(starts, np.diff(np.r_[starts, n]))]
        keep = first != order
        src.append(first[keep])
        dst.append(order[keep])
    src_a, dst_a = np.concatenate(src), np.concatenate(dst)
    if len(src_a):
        pairs = np.unique(np.stack([src_a, dst_a], 1), axis=0)
        agree = np.concatenate([  # in blocks: a duplicate-heavy set has millions of candidate pairs
            (sig[p[:, 0]] == sig[p[:, 1]]).mean(1) >= threshold for p in np.array_split(pairs, -(-len(pairs) // 65536))
        ])
        pairs = pairs[agree]
    else:
        pairs = np.zeros((0, 2), dtype=np.int64)
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, inv, size = np.unique(labels, return_inverse=True, return_counts=True)
    return inv, size
