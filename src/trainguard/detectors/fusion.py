"""Detector fusion: one 0-1 suspicion score per row, one threshold for the user.

Calibration. Every representation-level detector scores rows through the same
familywise map (see `_repr.familywise`): 0.5 means "at the detector's own
family-wise bar". The lexical detectors are on the same meaning of 0.5:
trigger-association uses LLR / (LLR + threshold), 0.5 at its Bonferroni
threshold; invisible-characters gives 0.95/0.6 to high/medium findings and
0.3 to low ones; near-duplicates gives 0.2 to plain duplicate groups (hygiene,
not poison), its label-conflict score to conflicting near-duplicates and 0.9
to template payloads. Those scales already encode "is this poison-grade", so
near-duplicates keeps weight 1 (a weight of 0.5 would push template payloads
under the bar).

Rule (gated noisy-OR):

    c_d   = w_d * s_d                                   (weights in [0, 1])
    fused = 1 - prod_{c_d >= floor} (1 - c_d)           if any c_d >= floor
    fused = max_d c_d                                    otherwise

with floor = the threshold (0.5). Sub-bar scores never add up: a row that no
detector puts at its own bar scores its largest contribution, so it stays
below 0.5 and is not flagged. Measured on 20,000 clean SST-2 rows, the plain
noisy-OR over all scores flagged ~10 % of rows because keyword-influence
(0.45 on ~6 % of rows) and trigger-association (0.2-0.45 on many rows) are
individually sub-bar but combine past 0.5 (benchmarks/bench_fusion.py).
Two detectors that both reach their bar still reinforce each other, so the
fused score orders confirmed rows by how much independent evidence they have.
`explain` gives, per row, which detectors fired and how much, so a fused flag
is never a black box.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from trainguard.errors import ConfigError

DEFAULT_THRESHOLD = 0.5
DEFAULT_WEIGHTS: dict[str, float] = {
    "trigger-association": 1.0,
    "invisible-characters": 1.0,
    "near-duplicates": 1.0,  # its own scale already puts plain duplicates (0.2) under the bar
    "spectral-signatures": 1.0,
    "embedding-clusters": 1.0,
    "label-consistency": 1.0,
    "feature-collision": 0.8,
    "availability-junk": 1.0,
    "keyword-influence": 1.0,
}


def fuse(row_scores: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None,
         floor: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Gated noisy-OR: noisy-OR over contributions at or above `floor`, else the largest contribution.

    Unknown detectors get weight 1. `floor` must not be below the threshold
    used to flag, or sub-bar scores could again combine into a flag.
    """
    if not row_scores:
        raise ConfigError("fusion needs at least one detector's row scores")
    if not 0 < floor <= 1:
        raise ConfigError(f"fusion floor must be in (0, 1], got {floor}")
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    n = {len(v) for v in row_scores.values()}
    if len(n) != 1:
        raise ConfigError(f"row score arrays differ in length: {sorted(n)}")
    size = n.pop()
    keep = np.ones(size)
    top = np.zeros(size)
    for name, s in row_scores.items():
        c = np.clip(w.get(name, 1.0), 0, 1) * np.nan_to_num(np.clip(np.asarray(s, np.float64), 0, 1))
        keep *= np.where(c >= floor, 1.0 - c, 1.0)
        np.maximum(top, c, out=top)
    return np.where(top >= floor, 1.0 - keep, top)


def fuse_report(report, weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Fused row scores of a `Report` (its `row_scores` dict, one array per detector that ran)."""
    return fuse(report.row_scores, weights)


def explain(row_scores: Mapping[str, np.ndarray], row: int, min_score: float = 0.05) -> dict[str, float]:
    """Which detectors contributed to one row's fused score, strongest first."""
    parts = {k: float(v[row]) for k, v in row_scores.items() if float(v[row]) >= min_score}
    return dict(sorted(parts.items(), key=lambda kv: -kv[1]))


def flagged(fused: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    return np.flatnonzero(fused >= threshold)
