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

from collections import Counter
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from trainguard.detectors.base import Detector, register
from trainguard.findings import (
    ATLAS_ERODE_INTEGRITY,
    ATLAS_POISON_TRAINING_DATA,
    Confidence,
    DetectorResult,
    Finding,
    Severity,
)
from trainguard.io.dataset import Dataset
from trainguard.records import Kind
from trainguard.text import output_key, tokens


@dataclass(frozen=True)
class Settings:
    threshold: float = 0.7  # estimated Jaccard similarity of word shingles
    num_perm: int = 64
    shingle: int = 1  # word sets: a template with a filled slot stays near-identical
    min_cluster: int = 5
    output_share: float = 0.9  # share of a group with one output before it counts as shared
    seed: int = 1


@register
class NearDuplicates(Detector):
    name = "near-duplicates"
    version = "1"
    kinds = frozenset(Kind)
    atlas = (ATLAS_POISON_TRAINING_DATA, ATLAS_ERODE_INTEGRITY)
    Settings = Settings
    description = "MinHash/LSH groups of near-identical inputs, judged by their outputs"

    def run(self, data: Dataset) -> DetectorResult:
        s = self.settings
        toks = data.artefact("tokens", lambda: [tokens(r.text) for r in data])
        shingles = [_shingles(t, s.shingle) for t in toks]
        sigs = MinHash.bulk(shingles, num_perm=s.num_perm, seed=s.seed)
        inv, size = _lsh_groups(np.stack([m.hashvalues for m in sigs]), s.threshold)
        outputs = _output_keys(data)
        out_total = Counter(outputs) if outputs is not None else Counter()
        findings = []
        row_scores = np.zeros(len(data))
        plain: list[Finding] = []
        by_group = np.argsort(inv, kind="stable")
        bounds = np.r_[0, np.cumsum(size)]
        for g in np.flatnonzero(size >= s.min_cluster):
            members = np.sort(by_group[bounds[g] : bounds[g + 1]])
            f = self._judge(data, members, toks, outputs, out_total)
            row_scores[members] = np.maximum(row_scores[members], f.score)
            (plain if f.rule == "duplicate-group" else findings).append(f)
        if plain:
            findings.append(self._hygiene(data, plain))
        if data.kind is Kind.CLASSIFICATION:
            conflict = self._conflicting_labels(data, toks)
            if conflict is not None:
                findings.append(conflict)
                idx = np.array([i for i, r in enumerate(data.records) if r.row in set(conflict.rows)])
                row_scores[idx] = np.maximum(row_scores[idx], conflict.score)
        summary = {"groups": int((size >= 2).sum()), "groups_at_min_size": int((size >= s.min_cluster).sum())}
        return DetectorResult(tuple(findings), row_scores, summary)

    def _conflicting_labels(self, data: Dataset, toks) -> Finding | None:
        """Identical inputs with different labels: the minority label rows are flip suspects.

        Only exact (normalised) identity counts: near-identical sentiment phrases
        legitimately differ in label ("good" / "not good").
        """
        by_text: dict[str, list[int]] = {}
        for i, t in enumerate(toks):
            by_text.setdefault(" ".join(t), []).append(i)
        suspects, groups = [], []
        for text, idx in by_text.items():
            labels = Counter(data.records[i].label for i in idx)
            if len(labels) < 2:
                continue
            (top, n_top), (_, n_next) = labels.most_common(2)
            minority = [i for i in idx if data.records[i].label != top] if n_top > n_next else list(idx)
            suspects.extend(minority)
            groups.append({"input": text[:120], "labels": {str(k): v for k, v in labels.most_common()},
                           "rows": [data.records[i].row for i in idx][:20]})
        if not suspects:
            return None
        suspects.sort()
        groups.sort(key=lambda g: -sum(g["labels"].values()))
        return Finding(
            detector=self.name, rule="conflicting-labels", detector_version=self.version,
            title=f"{len(groups)} identical inputs carry conflicting labels ({len(suspects)} suspect rows)",
            rows=tuple(data.records[i].row for i in suspects), record_ids=tuple(data.records[i].id for i in suspects),
            score=0.5, severity=Severity.MEDIUM, confidence=Confidence.MEDIUM, atlas=self.atlas,
            evidence={"groups": len(groups), "examples": groups[:20]},
        )

    def _hygiene(self, data: Dataset, groups: list[Finding]) -> Finding:
        """Plain duplicate groups are data hygiene: one low finding, not hundreds."""
        groups.sort(key=lambda f: -len(f.rows))
        rows = sorted({r for f in groups for r in f.rows})
        pos = {r.row: i for i, r in enumerate(data.records)}
        return Finding(
            detector=self.name, rule="duplicate-group", detector_version=self.version,
            title=f"{len(groups)} groups of near-identical records ({len(rows)} rows) with consistent outputs",
            rows=tuple(rows), record_ids=tuple(data.records[pos[r]].id for r in rows), score=0.2,
            severity=Severity.LOW, confidence=Confidence.MEDIUM, atlas=self.atlas,
            evidence={"groups": len(groups), "largest": [dict(f.evidence, rows=list(f.rows[:20])) for f in groups[:10]]},
        )

    def _judge(self, data, members, toks, outputs, out_total) -> Finding:
        s = self.settings
        distinct_inputs = len({" ".join(toks[i]) for i in members})
        example = " ".join(toks[members[0]])[:120]
        evidence = {"group_size": int(len(members)), "distinct_inputs": distinct_inputs, "example_input": example}
        if outputs is None:
            severity, rule, score = Severity.LOW, "duplicate-group", 0.2
            title = f"{len(members)} near-identical records"
        else:
            top, n_top = Counter(outputs[i] for i in members).most_common(1)[0]
            share = n_top / len(members)
            outside = out_total[top] - n_top
            evidence.update(top_output=str(top)[:120], top_output_share=round(share, 4),
                            top_output_rows_elsewhere=int(outside))
            payload = (data.kind is not Kind.CLASSIFICATION and share >= s.output_share
                       and distinct_inputs >= s.min_cluster and outside <= 0.1 * n_top)
            if payload:
                severity, rule, score = Severity.HIGH, "template-payload", 0.9
                title = (f"{distinct_inputs} near-identical prompts share one response "
                         f"seen {outside} times elsewhere")
            else:
                severity, rule, score = Severity.LOW, "duplicate-group", 0.2
                title = f"{len(members)} near-identical records share output {str(top)[:40]!r}"
        rows = [data.records[i].row for i in members]
        return Finding(
            detector=self.name, rule=rule, detector_version=self.version, title=title,
            rows=tuple(rows), record_ids=tuple(data.records[i].id for i in members), score=score,
            severity=severity, confidence=Confidence.MEDIUM, atlas=self.atlas, evidence=evidence,
        )


def _shingles(toks: list[str], k: int) -> list[bytes]:
    if len(toks) <= k:
        return [" ".join(toks).encode("utf-8", "surrogatepass")]
    return [" ".join(toks[i : i + k]).encode("utf-8", "surrogatepass") for i in range(len(toks) - k + 1)]


def _output_keys(data: Dataset) -> list[str | None] | None:
    return None if data.kind is Kind.DOCUMENTS else [output_key(r) for r in data]


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
        agree = (sig[pairs[:, 0]] == sig[pairs[:, 1]]).mean(1) >= threshold
        pairs = pairs[agree]
    else:
        pairs = np.zeros((0, 2), dtype=np.int64)
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, inv, size = np.unique(labels, return_inverse=True, return_counts=True)
    return inv, size
