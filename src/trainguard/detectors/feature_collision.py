"""Clean-label / feature-collision suspects: rows whose meaning sits in another label's region.

A clean-label poison keeps a plausible label but is crafted so that, to the
model, it looks like another class (Poison Frogs-style feature collision), or
carries content a reviewer would not call that label. In embedding space such
a row is surrounded by rows of another label. Per row: the share of its k
nearest neighbours (cosine) carrying another label, smoothed and turned into
log-odds, standardised within its own label (median / MAD), familywise over
the dataset. Ambiguous rows with mixed neighbourhoods stay low; a row deep in
a foreign region is reported with that region's label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainguard.detectors._repr import familywise, group_rows, knn, label_codes, robust_z
from trainguard.detectors.base import Detector, register
from trainguard.findings import ATLAS_POISON_TRAINING_DATA, Confidence, DetectorResult, Finding, Severity
from trainguard.io.dataset import Dataset
from trainguard.records import Kind


@dataclass(frozen=True)
class Settings:
    embedder: str = "wordllama"
    k: int = 15
    threshold: float = 0.5
    min_rows: int = 1


@register
class FeatureCollision(Detector):
    name = "feature-collision"
    version = "1"
    kinds = frozenset({Kind.CLASSIFICATION})
    needs = frozenset({"labels", "embeddings"})
    atlas = (ATLAS_POISON_TRAINING_DATA,)
    Settings = Settings
    description = "rows whose embedding neighbourhood belongs to another label (clean-label suspects)"

    def run(self, data: Dataset) -> DetectorResult:
        s = self.settings
        y, names = label_codes(data)
        idx, sim = knn(data, s.embedder, s.k)
        w = np.clip(sim, 0, None) + 1e-6
        other = ((y[idx] != y[:, None]) * w).sum(1) / w.sum(1)
        k = idx.shape[1]
        logit = np.log((other * k + 0.5) / ((1 - other) * k + 0.5))
        z = np.zeros(len(y))
        for c in np.unique(y):
            rows = np.flatnonzero(y == c)
            if len(rows) >= 20:
                z[rows] = robust_z(logit[rows])
        scores = familywise(z, len(y))
        # The neighbourhood's own majority label, for the evidence.
        C = len(names)
        votes = np.zeros((len(y), C))
        np.add.at(votes, (np.repeat(np.arange(len(y)), k), y[idx].ravel()), w.ravel())
        region = votes.argmax(1)
        findings = []
        for c in range(C):
            for r in range(C):
                if r == c:
                    continue
                hit = np.flatnonzero((y == c) & (region == r) & (scores >= s.threshold))
                if len(hit) >= s.min_rows:
                    rows, ids = group_rows(hit, data)
                    findings.append(Finding(
                        detector=self.name, rule="foreign-region", detector_version=self.version,
                        title=f"{len(hit)} rows labelled {names[c]!r} sit among rows labelled {names[r]!r}",
                        rows=rows, record_ids=ids, score=float(scores[hit].max()),
                        severity=Severity.MEDIUM, confidence=Confidence.LOW, atlas=self.atlas,
                        evidence={"label": names[c], "region_label": names[r], "rows_flagged": len(hit),
                                  "mean_other_label_share": round(float(other[hit].mean()), 3), "k": k,
                                  "embedder": s.embedder,
                                  "why": "nearest neighbours in embedding space carry another label"},
                    ))
        return DetectorResult(tuple(findings), scores, {"flagged_rows": int((scores >= s.threshold).sum())})
