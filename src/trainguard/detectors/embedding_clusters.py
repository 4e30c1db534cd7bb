"""Cluster analysis per label, in the spirit of Activation Clustering (Chen 2018) and CUBE.

Per label: centre, reduce to a few principal dimensions, split with k-means
(AC uses 2-means; 8 by default here, since a 1 % island rarely wins a 2-way
split of a varied class). AC then flags the smaller cluster, which flags a cluster in
every class of a clean dataset. Here a small cluster is reported only when
it is also
- tight: most of its members' nearest neighbours (whole dataset, full
  embedding) are members too, so it is one thing, not a slice of a spread;
- label-homogeneous beyond its class: its members' neighbourhoods carry its
  label clearly more often than the rest of the class's do. Poison planted
  with one trigger forms such an island; natural sub-topics (short phrases,
  one genre) have counterparts in the other labels and do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from trainguard.detectors._repr import embeddings, knn, label_codes, pca_reduce, positions
from trainguard.detectors.base import Detector, register
from trainguard.findings import ATLAS_BACKDOOR_TRIGGER, ATLAS_POISON_TRAINING_DATA, Alert, Confidence, DetectorResult, Severity
from trainguard.io.dataset import Dataset
from trainguard.records import Kind


@dataclass(frozen=True)
class Settings:
    embedder: str = "wordllama"
    dims: int = 10
    clusters: int = 8  # AC uses 2; a 1 % island needs a finer split to stand out
    max_share: float = 0.35  # a suspicious cluster holds at most this share of its label
    min_rows: int = 5
    min_cohesion: float = 0.5  # share of members' neighbours that are members
    min_purity: float = 0.85  # share of members' neighbours carrying the label
    min_purity_gain: float = 0.15  # over the rest of the label
    k: int = 15
    seed: int = 0


@register
class EmbeddingClusters(Detector):
    name = "embedding-clusters"
    version = "1"
    kinds = frozenset({Kind.CLASSIFICATION})
    needs = frozenset({"labels", "embeddings"})
    atlas = (ATLAS_BACKDOOR_TRIGGER, ATLAS_POISON_TRAINING_DATA)
    Settings = Settings
    description = "small, tight, label-homogeneous clusters within a label (activation-clustering style)"

    def run(self, data: Dataset) -> DetectorResult:
        s = self.settings
        y, names = label_codes(data)
        X = embeddings(data, s.embedder)
        idx, _ = knn(data, s.embedder, s.k)
        same = y[idx] == y[:, None]
        # Imported before `threadpool_limits`, which only limits libraries already loaded; lazy: ~2 s to import.
        from sklearn.cluster import KMeans

        n = len(y)
        scores = np.zeros(n)
        findings, clusters = [], []
        for c in np.unique(y):
            rows = np.flatnonzero(y == c)
            if len(rows) < max(4 * s.min_rows, s.clusters * 2):
                continue
            Z = pca_reduce(X[rows], s.dims)
            # One thread: on a shared 2-core machine OpenMP k-means spins (6 s vs 0.2 s per label, measured).
            with threadpool_limits(1):
                assign = KMeans(s.clusters, n_init=3, random_state=s.seed).fit_predict(Z)
            for g in range(s.clusters):
                members = rows[assign == g]
                share = len(members) / len(rows)
                if share > s.max_share or len(members) < s.min_rows:
                    continue
                inside = np.zeros(n, bool)
                inside[members] = True
                cohesion = float(inside[idx[members]].mean())
                purity = float(same[members].mean())
                rest = rows[~inside[rows]]
                gain = purity - float(same[rest].mean()) if len(rest) else 0.0
                strength = cohesion * max(gain, 0.0) / max(s.min_purity_gain, 1e-9)
                flagged = cohesion >= s.min_cohesion and purity >= s.min_purity and gain >= s.min_purity_gain
                clusters.append({"label": names[c], "rows": len(members), "share": round(share, 4),
                                 "cohesion": round(cohesion, 3), "purity": round(purity, 3),
                                 "purity_gain": round(gain, 3), "flagged": flagged})
                # Row score: 0.5 and above only for reported clusters; below, ranked by the same statistic.
                val = 0.5 + 0.5 * min(1.0, cohesion * purity) if flagged else 0.45 * min(1.0, strength) * (1 - share)
                scores[members] = np.maximum(scores[members], val)
                if flagged:
                    # Report the island's core: members most of whose own neighbours are members.
                    own = inside[idx[members]].mean(1)
                    core = members[own >= s.min_cohesion]
                    scores[members[own < s.min_cohesion]] = 0.45 * own[own < s.min_cohesion]
                    if len(core) < s.min_rows:
                        continue
                    members = core
                    r = positions(members)
                    findings.append(Alert(
                        rule="homogeneous-cluster",
                        title=f"{len(members)} rows labelled {names[c]!r} form a tight island of their own",
                        positions=r, score=float(val),
                        severity=Severity.HIGH if cohesion >= 0.8 else Severity.MEDIUM,
                        confidence=Confidence.MEDIUM,
                        evidence={**clusters[-1], "embedder": s.embedder,
                                  "why": "small 2-means cluster whose neighbourhoods are its own and its label's"},
                    ))
        return DetectorResult(tuple(findings), scores, {"clusters": clusters})
