"""shortcut's context groups are computed a batch of tests at a time (all tests' (test, row) edges at once reached
12 GB on 300k synthetic rows): no edge joins two tests, so any batching gives the same weights and counts."""

import numpy as np
import pytest
from scipy import sparse

from trainguard.detectors.shortcut import _context_groups


@pytest.mark.parametrize("seed", range(10))
def test_batched_context_groups_equal_one_graph(seed):
    rng = np.random.default_rng(seed)
    n, G, V = 60, 25, 12
    M = sparse.random(n, G, density=0.08, format="csr", random_state=seed)
    M.data[:] = 1.0
    gw = rng.integers(-1, V, (G, 3))
    I = rng.integers(0, n, 40)
    J = rng.integers(0, n, 40)
    keep = I != J
    tests = [(np.sort(rng.choice(n, int(rng.integers(0, 30)), replace=False)), tuple(rng.integers(0, V, int(k))))
             for k in rng.integers(0, 3, 15)]
    whole = _context_groups(tests, (M, gw), (I[keep], J[keep]), n, max_nodes=1 << 30)
    for cap in (1, 7, 40, 100):
        got = _context_groups(tests, (M, gw), (I[keep], J[keep]), n, max_nodes=cap)
        assert len(got) == len(whole)
        for (w1, g1), (w2, g2) in zip(whole, got):
            assert g1 == g2 and np.array_equal(w1, w2)
