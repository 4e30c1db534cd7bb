"""Spectral signatures (Tran, Li & Madry 2018), per label, on text embeddings.

Within one label, backdoored rows share a feature the clean rows lack, so
once the class is centred their common offset dominates the top singular
vector and they sit far out on its projection. Faithful to the paper:
representations are centred per class (IBM ART's implementation skips this,
which is why it loses the signal at low poison rates), the score is the
squared projection on the top right singular vector, and `summary` carries
the paper's removal count 1.5 * eps * n_c.

Where the paper removes a fixed share, we flag only what the data cannot
explain: the projection is standardised by its own median and MAD and a row
is reported when it is more extreme than the most extreme of all the
dataset's rows would be under that null (familywise score >= threshold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainguard.detectors._repr import embeddings, familywise, label_codes, positions, robust_z
from trainguard.detectors.base import Detector, register
from trainguard.findings import (
    ATLAS_BACKDOOR_TRIGGER,
    ATLAS_POISON_TRAINING_DATA,
    Alert,
    Confidence,
    DetectorResult,
    Severity,
)
from trainguard.io.dataset import Dataset
from trainguard.records import Kind


@dataclass(frozen=True)
class Settings:
    embedder: str = "wordllama"
    threshold: float = 0.5  # familywise score a row must reach to be reported
    min_rows: int = 5  # flagged rows a class needs before it becomes a finding
    min_class_rows: int = 30
    epsilon: float = 0.05  # the paper's assumed poison rate, for the removal count in the summary


def spectral_scores(X: np.ndarray, y: np.ndarray, min_class_rows: int = 30) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-row paper score (squared projection) and signed robust z of the projection, per class."""
    n = len(y)
    paper = np.zeros(n)
    z = np.zeros(n)
    info = {}
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if len(rows) < min_class_rows:
            continue
        R = X[rows].astype(np.float64)
        R -= R.mean(0)
        w, V = np.linalg.eigh(R.T @ R)
        v = V[:, -1]
        p = R @ v
        paper[rows] = p**2
        zc = robust_z(p)
        # Orient so the heavier tail is positive: a planted group sits on one side.
        if np.sum(np.clip(-zc, 0, None) ** 2) > np.sum(np.clip(zc, 0, None) ** 2):
            zc = -zc
        # Tail-aware null: the 98th percentile is still natural data at poison rates up to ~2 %, and
        # on a naturally heavy-tailed direction it widens the scale instead of letting the tail flag.
        tail = np.quantile(zc, 0.98) / 2.054
        z[rows] = zc / max(tail, 1.0)
        info[int(c)] = {"top_eig_ratio": float(w[-1] / max(w[-2], 1e-12))}
    return paper, z, info


@register
class SpectralSignatures(Detector):
    name = "spectral-signatures"
    version = "1"
    kinds = frozenset({Kind.CLASSIFICATION})
    needs = frozenset({"labels", "embeddings"})
    atlas = (ATLAS_BACKDOOR_TRIGGER, ATLAS_POISON_TRAINING_DATA)
    Settings = Settings
    description = "rows far out on their label's top singular direction (Tran et al. 2018, centred)"

    def run(self, data: Dataset) -> DetectorResult:
        s = self.settings
        y, names = label_codes(data)
        X = embeddings(data, s.embedder)
        paper, z, info = spectral_scores(X, y, s.min_class_rows)
        n = len(y)
        scores = familywise(z, n)  # one-sided: only the oriented (heavier) side can carry a planted group
        findings = []
        for c, stats in info.items():
            rows = np.flatnonzero(y == c)
            for side in (1,):
                hit = rows[(scores[rows] >= s.threshold) & (np.sign(z[rows]) == side)]
                if len(hit) < s.min_rows:
                    continue
                share = len(hit) / len(rows)
                top = float(scores[hit].max())
                findings.append(self._finding(data, names[c], hit, scores, z, share, stats, top))
        summary = {
            "embedder": s.embedder,
            "classes": {names[c]: {**v, "paper_removal_count": int(1.5 * s.epsilon * (y == c).sum())}
                        for c, v in info.items()},
            "flagged_rows": int((scores >= s.threshold).sum()),
        }
        return DetectorResult(tuple(findings), scores, summary)

    def _finding(self, data, label, hit, scores, z, share, stats, top) -> Alert:
        rows = positions(hit)
        ratio = stats["top_eig_ratio"]
        strong = len(hit) >= 20 and ratio >= 1.5
        return Alert(
            rule="spectral-outliers",
            title=f"{len(hit)} rows labelled {label!r} share an outlying direction in embedding space",
            positions=rows, score=top,
            severity=Severity.HIGH if strong else Severity.MEDIUM,
            confidence=Confidence.MEDIUM if strong else Confidence.LOW,
            evidence={
                "label": label,
                "rows_flagged": len(hit),
                "share_of_label": round(share, 4),
                "median_abs_z": round(float(np.median(np.abs(z[hit]))), 2),
                "top_eigenvalue_ratio": round(ratio, 3),
                "embedder": self.settings.embedder,
                "why": "centred per-label representations; these rows lie beyond the familywise threshold "
                       "on the top singular vector, all on one side",
            },
        )
