"""trigger-association's decision step builds its matrices without COO detours and keeps each candidate name once:
the matrices must be the ones the COO path gave (findings depend on every entry), the names those of `whole`."""

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import sparse

from trainguard.detectors.trigger_association import _by_column, _Gathered, _GatheredParts, _presence


@pytest.mark.parametrize("seed", range(20))
def test_matrices_equal_the_coo_construction(seed):
    rng = np.random.default_rng(seed)
    R, m, U = int(rng.integers(1, 200)), int(rng.integers(1, 40)), int(rng.integers(1, 30))
    code = np.unique(rng.integers(0, R * m, size=int(rng.integers(0, R * m))))  # (row, slot) pairs in row order
    row, slot = (code // m).astype(np.int32), (code % m).astype(np.int32)
    j_of = rng.permutation(m).astype(np.int32)
    want = sparse.csc_matrix((np.ones(len(row), np.float32), (row, j_of[slot])), shape=(R, m))
    want.sort_indices()
    got = _by_column(SimpleNamespace(pair_row=row, pair_slot=slot), j_of, R, m, chunk=int(rng.integers(1, 60)))
    lens = rng.integers(0, 8, R)
    gids = rng.integers(0, U, int(lens.sum())).astype(np.int32)
    before = gids.copy()
    want_x = sparse.csr_matrix((np.ones(len(gids), np.float32), (np.repeat(np.arange(R, dtype=np.int32), lens), gids)),
                               shape=(R, U))
    want_x.sum_duplicates()
    want_x.data[:] = 1.0
    got_x = _presence(gids, lens, R, U, np.float32)
    for a, b in ((want, got), (want_x, got_x)):
        for field in ("data", "indices", "indptr"):
            x, y = getattr(a, field), getattr(b, field)
            assert x.dtype == y.dtype and np.array_equal(x, y)
    assert np.array_equal(gids, before)  # the tokens' order is read later (phrases, context links)


def _part(names: dict) -> _Gathered:
    z = np.zeros(0, np.int64)
    return _Gathered(0, [], [], [], z, z, np.zeros((0, 2)), z, z, z, z, names)


def test_merged_parts_hold_each_name_once_earliest_first():
    a, b, c = (_GatheredParts([_part(d)]) for d in ({1: "x y", 2: "p q"}, {2: "collided", 3: "r s"}, {3: "t", 4: "u"}))
    merged = a.merge(b.merge(c))
    assert [len(p.names) for p in merged.parts] == [4, 0, 0]
    assert merged.whole().names == {1: "x y", 2: "p q", 3: "r s", 4: "u"}


def test_columns_of_non_zeros_from_indptr():
    from trainguard.detectors.trigger_association import _columns

    rng = np.random.default_rng(0)
    for _ in range(100):
        count = rng.integers(0, 4, int(rng.integers(1, 30)))  # empty columns included
        full = np.repeat(np.arange(len(count), dtype=np.int32), count)
        a = int(rng.integers(0, len(full) + 1))
        b = int(rng.integers(a, len(full) + 1))
        assert np.array_equal(_columns(np.r_[0, np.cumsum(count)], a, b), full[a:b])
