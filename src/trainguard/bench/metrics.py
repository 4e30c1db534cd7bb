"""Detection metrics over planted ground truth."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score


@dataclass(frozen=True)
class Detection:
    precision: float
    recall: float
    f1: float
    auroc: float | None
    flagged: int
    true_positives: int
    poisoned: int

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def detection(flagged: set[int] | np.ndarray, truth: np.ndarray, scores: np.ndarray | None) -> Detection:
    """Precision/recall/F1 of a flagged-row set, AUROC of a per-row score (None without poison)."""
    flagged_idx = np.asarray(sorted(flagged), dtype=np.int64)
    tp = int(truth[flagged_idx].sum()) if len(flagged_idx) else 0
    poisoned = int(truth.sum())
    precision = tp / len(flagged_idx) if len(flagged_idx) else (1.0 if poisoned == 0 else 0.0)
    recall = tp / poisoned if poisoned else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auroc = None
    if scores is not None and 0 < poisoned < len(truth):
        auroc = float(roc_auc_score(truth, scores))
    return Detection(precision, recall, f1, auroc, len(flagged_idx), tp, poisoned)
