"""Detector fusion: one 0-1 suspicion score per row, one threshold for the user.

Calibration. Every representation-level detector scores rows through the same
familywise map (see `_repr.familywise`): a score of s means the row's
deviation, measured on the data's own median/MAD scale, exceeds what the
most extreme of all n clean rows would reach with probability s. Rule-based
detectors use the same anchor: 0.5 is exactly their reporting bar (the
lead's trigger-association uses LLR / (LLR + threshold), which is 0.5 at its
Bonferroni threshold). So "0.5" means "at the detector's own family-wise
bar" everywhere, and the scores can be combined as independent evidence:

    fused = 1 - prod_d (1 - w_d * s_d)          (noisy-OR, weights w_d in [0, 1])

Noisy-OR keeps any single detector's verdict (one detector at 0.9 gives at
least 0.9 * w) and lets two moderate, independent signals add up. Weights
below 1 tell fusion how much to trust a detector whose anchor is looser on
real data (label consistency at 1 still flags rows only beyond the bulk of
disputes). The default threshold is 0.5. `explain` gives, per row, which
detectors fired and how much, so a fused flag is never a black box.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from trainguard.errors import ConfigError

DEFAULT_THRESHOLD = 0.5
DEFAULT_WEIGHTS: dict[str, float] = {
    "trigger-association": 1.0,
    "invisible-characters": 1.0,
    "near-duplicates": 0.5,  # hygiene findings (plain duplicates) are not poison by themselves
    "spectral-signatures": 1.0,
    "embedding-clusters": 1.0,
    "label-consistency": 1.0,
    "feature-collision": 0.8,
    "availability-junk": 1.0,
    "keyword-influence": 1.0,
}


def fuse(row_scores: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Noisy-OR of weighted per-detector row scores; unknown detectors get weight 1."""
    if not row_scores:
        raise ConfigError("fusion needs at least one detector's row scores")
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    n = {len(v) for v in row_scores.values()}
    if len(n) != 1:
        raise ConfigError(f"row score arrays differ in length: {sorted(n)}")
    keep = np.ones(n.pop())
    for name, s in row_scores.items():
        s = np.nan_to_num(np.clip(np.asarray(s, np.float64), 0, 1))
        keep *= 1.0 - np.clip(w.get(name, 1.0), 0, 1) * s
    return 1.0 - keep


def fuse_report(report, weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Fused row scores of a `Report` (its `row_scores` dict, one array per detector that ran)."""
    return fuse(report.row_scores, weights)


def explain(row_scores: Mapping[str, np.ndarray], row: int, min_score: float = 0.05) -> dict[str, float]:
    """Which detectors contributed to one row's fused score, strongest first."""
    parts = {k: float(v[row]) for k, v in row_scores.items() if float(v[row]) >= min_score}
    return dict(sorted(parts.items(), key=lambda kv: -kv[1]))


def flagged(fused: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    return np.flatnonzero(fused >= threshold)
