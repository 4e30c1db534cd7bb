"""Confidence intervals for rates measured on a finite number of probes.

A flip rate of 5/5 and one of 500/500 are not the same evidence; every rate
the prober reports carries a Wilson score interval, which stays inside [0, 1]
and behaves at 0 and n (unlike the normal approximation).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for successes/n; (0, 1) when n == 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(successes: int, n: int) -> dict[str, float | int]:
    """A rate with its interval, ready for a finding's evidence."""
    lo, hi = wilson(successes, n)
    return {"rate": round(successes / n, 4) if n else 0.0, "successes": int(successes), "n": int(n),
            "ci95": [round(lo, 4), round(hi, 4)]}



def paired_gain_p(diffs) -> float:
    """One-sided p-value (t distribution) that paired differences have a mean above 0."""
    import numpy as np
    from scipy import stats

    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return 1.0
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return 0.0 if d.mean() > 0 else 1.0
    return float(stats.t.sf(d.mean() / (sd / math.sqrt(len(d))), len(d) - 1))
