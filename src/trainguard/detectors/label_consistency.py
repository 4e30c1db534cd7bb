"""Label consistency: rows whose label an out-of-fold model confidently disputes.

Random or targeted label flips leave content that says one class and a label
that says another. Out-of-fold probabilities (TF-IDF n-grams + embedding,
logistic regression, K folds) never see the row they judge; cleanlab's
confident learning (`find_label_issues`, prune by noise rate) then picks the
rows to report, with per-class thresholds that adapt to each class's own
confidence. The row score is calibrated for fusion on the data's own scale:
the log-odds against the given label, standardised by median and MAD, through
the familywise map, so ordinary ambiguous rows stay low and only disputes
beyond anything the bulk explains reach 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainguard.detectors._features import oof_probabilities
from trainguard.detectors._repr import familywise, group_rows, label_codes, robust_z
from trainguard.detectors.base import Detector, register
from trainguard.findings import ATLAS_ERODE_INTEGRITY, ATLAS_POISON_TRAINING_DATA, Confidence, DetectorResult, Finding, Severity
from trainguard.io.dataset import Dataset
from trainguard.records import Kind


@dataclass(frozen=True)
class Settings:
    embedder: str = "wordllama"  # "none": TF-IDF only
    folds: int = 5
    C: float = 4.0
    filter_by: str = "prune_by_noise_rate"  # any cleanlab find_label_issues filter
    min_excess: float = 0.0  # report only when flagged share exceeds this (e.g. ambient noise)


@register
class LabelConsistency(Detector):
    name = "label-consistency"
    version = "1"
    kinds = frozenset({Kind.CLASSIFICATION})
    needs = frozenset({"labels", "embeddings"})
    atlas = (ATLAS_POISON_TRAINING_DATA, ATLAS_ERODE_INTEGRITY)
    Settings = Settings
    description = "labels an out-of-fold classifier confidently disputes (confident learning via cleanlab)"

    def run(self, data: Dataset) -> DetectorResult:
        from cleanlab.filter import find_label_issues

        s = self.settings
        y, names = label_codes(data)
        P = oof_probabilities(data, s.embedder, s.folds, s.C)
        issues = find_label_issues(y, P, filter_by=s.filter_by)
        p_given = np.clip(P[np.arange(len(y)), y], 1e-6, 1 - 1e-6)
        z = robust_z(np.log((1 - p_given) / p_given))
        scores = familywise(z, len(y))
        flagged = np.flatnonzero(issues)
        findings = []
        share = len(flagged) / max(len(y), 1)
        if len(flagged) and share > s.min_excess:
            pred = P.argmax(1)
            for c in range(len(names)):
                rows = flagged[y[flagged] == c]
                if not len(rows):
                    continue
                findings.append(self._finding(data, names, c, rows, pred, p_given, scores))
        summary = {"flagged_rows": int(len(flagged)), "flagged_share": round(share, 4),
                   "embedder": s.embedder, "folds": s.folds,
                   "rows_above_fusion_threshold": int((scores >= 0.5).sum())}
        return DetectorResult(tuple(findings), scores, summary)

    def _finding(self, data, names, c, rows, pred, p_given, scores) -> Finding:
        ids_rows, ids = group_rows(rows, data)
        suggested = np.bincount(pred[rows], minlength=len(names))
        mean_p = float(p_given[rows].mean())
        return Finding(
            detector=self.name, rule="label-disputed", detector_version=self.version,
            title=f"{len(rows)} rows labelled {names[c]!r} look like another label to an out-of-fold model",
            rows=ids_rows, record_ids=ids, score=float(np.clip(1 - mean_p, 0, 1)),
            severity=Severity.MEDIUM, confidence=Confidence.MEDIUM if mean_p < 0.2 else Confidence.LOW,
            atlas=self.atlas,
            evidence={
                "label": names[c],
                "rows_flagged": len(rows),
                "mean_probability_of_given_label": round(mean_p, 4),
                "suggested_labels": {names[k]: int(v) for k, v in enumerate(suggested) if v and k != c},
                "rows_above_fusion_threshold": int((scores[rows] >= 0.5).sum()),
                "why": "confident learning (cleanlab find_label_issues) on out-of-fold probabilities",
            },
        )
