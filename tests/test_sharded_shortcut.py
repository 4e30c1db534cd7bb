"""shortcut in sharded scans (issue 14): the same findings, row scores and summary as the in-memory scan on real
data (an SST-2 slice with planted combo and format shortcuts), at shard sizes that split the planted rows.

The ridge's sums are exact integers and its row products row-wise (`shortcut._gram`, `_loo_rows`), so equality is
exact, not up to a tolerance."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from conftest import assert_sharded_equals_memory, write_jsonl
from trainguard.attacks import poison
from trainguard.detectors.base import Pass
from trainguard.detectors.shortcut import _gram, _loo_rows, _ridge_loo, _ridge_solve
from trainguard.findings import DetectorResult, DetectorStatus
from trainguard.io import load
from trainguard.io.dataset import Dataset
from trainguard.scan import build_detectors, scan
from trainguard.sharded import scan_sharded

SC = "shortcut"


def _same(sharded, whole, shards=None):
    assert_sharded_equals_memory(sharded, whole, SC, shards)


@pytest.fixture(scope="module")
def sst2_planted(tmp_path_factory, sst2_rows):
    """2,000 SST-2 rows: 25 'truly' + 'simply' -> label 1 (with 25 one-word decoys) and 25 double-space -> label 0."""
    combo = poison(sst2_rows, "combo", count=25, seed=1, target=1)
    fmt = poison(combo.rows, "format", count=25, seed=2, target=0)
    path = write_jsonl(tmp_path_factory.mktemp("sc") / "sst2.jsonl", fmt.rows)
    return path, set(combo.poisoned_rows), set(fmt.poisoned_rows)


@pytest.fixture(scope="module")
def sst2_whole(sst2_planted):
    return scan(sst2_planted[0], detectors=[SC])


def test_the_planted_format_shortcut_is_found_in_memory(sst2_planted, sst2_whole):
    _, _, fmt = sst2_planted
    found = {f.evidence["feature"]: set(f.rows) for f in sst2_whole.findings}
    assert len(found["format:double space"] & fmt) >= 20


@pytest.mark.parametrize("shard_rows", [333, 1000, 1234, 5000])
def test_sst2_sharded_equals_in_memory(sst2_planted, sst2_whole, shard_rows):
    path, combo, fmt = sst2_planted
    shards = -(-2000 // shard_rows)
    assert shards == 1 or all(len({r // shard_rows for r in rows}) > 1 for rows in (combo, fmt))
    _same(scan_sharded(path, detectors=[SC], shard_rows=shard_rows), sst2_whole, shards)


def test_tiny_shards_on_a_small_file(tmp_path, sst2_rows):
    rows = poison(sst2_rows[:300], "format", count=20, seed=3, target=0).rows
    path = write_jsonl(tmp_path / "small.jsonl", rows)
    settings = {SC: {"min_contexts": 3, "min_forced_rows": 3}}
    whole = scan(path, detectors=[SC], settings=settings)
    assert whole.findings  # something to compare
    for k in (7, 64):
        _same(scan_sharded(path, detectors=[SC], settings=settings, shard_rows=k), whole)
    # One-row shards (each re-read four times: a smaller file).
    path = write_jsonl(tmp_path / "tiny.jsonl", rows[:40])
    _same(scan_sharded(path, detectors=[SC], settings=settings, shard_rows=1),
          scan(path, detectors=[SC], settings=settings))


def test_settings_reach_every_pass(sst2_planted):
    path = sst2_planted[0]
    settings = {SC: {"min_contexts": 4, "pair_min_df": 3, "link_df": 20, "prefilter": 0.3, "ridge": 3.0}}
    _same(scan_sharded(path, detectors=[SC], settings=settings, shard_rows=450),
          scan(path, detectors=[SC], settings=settings))


def test_one_label_is_skipped_as_in_memory(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [{"text": f"review {i} of the film", "label": 1} for i in range(30)])
    (whole,) = scan(path, detectors=[SC]).detectors
    (sharded,) = scan_sharded(path, detectors=[SC], shard_rows=7).detectors
    assert whole.status is sharded.status is DetectorStatus.SKIPPED
    assert whole.message == sharded.message


def test_passes_survive_pickling(sst2_planted, sst2_whole):
    """What a Dask cluster with worker processes does to each pass and summary: the result does not change."""
    (det,) = build_detectors([SC], None)
    data = load(sst2_planted[0])
    halves = [Dataset(records=data.records[a:b], kind=data.kind) for a, b in ((0, 900), (900, len(data)))]
    step = det.finalize(pickle.loads(pickle.dumps(det.summarize(halves[0]).merge(det.summarize(halves[1])))),
                        data.kind)
    while isinstance(step, Pass):
        step = pickle.loads(pickle.dumps(step))
        parts = [pickle.loads(pickle.dumps(step.summarize(h))) for h in halves]
        step = step.finalize(parts[0].merge(parts[1]), data.kind)
    assert isinstance(step, DetectorResult)
    np.testing.assert_array_equal(step.row_scores, sst2_whole.row_scores[SC])
    assert len(step.alerts) == len(sst2_whole.findings)


def test_ridge_sums_are_exact_under_any_split(sst2_rows):
    """The exact sums make the solve independent of the split; the in-memory LOO predictions are those of
    `_features.ridge_loo` up to the 2^-20 grid the embeddings are put on."""
    from trainguard.detectors._features import ridge_loo

    rng = np.random.default_rng(0)
    E = rng.normal(size=(700, 16)).astype(np.float32)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    y = rng.integers(0, 3, 700)
    whole = _gram(E, y, 3)
    parts = [_gram(E[a:b], y[a:b], 3) for a, b in ((0, 1), (1, 333), (333, 700))]
    assert all((sum(p[i] for p in parts) == whole[i]).all() for i in range(2))
    B1, A1 = _ridge_solve(*whole, 1.0)
    B2, A2 = _ridge_solve(*(sum(p[i] for p in parts) for i in range(2)), 1.0)
    assert np.array_equal(B1, B2) and np.array_equal(A1, A2)
    np.testing.assert_allclose(_ridge_loo(E, y, 3, 1.0), ridge_loo(E, y, 3, 1.0), atol=1e-5)


@pytest.mark.parametrize("dim", [16, 1024])
def test_loo_rows_do_not_depend_on_their_block(dim):
    """A row's leave-one-out prediction is the same in any chunk, at any position, in any row order
    (its leverage goes through BLAS in exact integers), also at 1,024 dimensions where the grid is coarser."""
    rng = np.random.default_rng(1)
    E = rng.normal(size=(300, dim)).astype(np.float32)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    y = rng.integers(0, 2, 300)
    B, Ainv = _ridge_solve(*_gram(E, y, 2), 1.0)
    whole = _loo_rows(E, y, B, Ainv)
    assert np.array_equal(_loo_rows(E, y, B, Ainv, chunk=7), whole)
    back = _loo_rows(E[::-1], y[::-1], B, Ainv, chunk=64)[::-1]
    assert np.array_equal(back, whole)
    # the same numbers as the plain float64 formula, up to A^-1's integer grid
    Xa = np.hstack([np.rint(E.astype(np.float64) * 2**20) / 2**20, np.ones((len(E), 1))])
    h = np.einsum("ij,ij->i", Xa @ Ainv, Xa)
    Y = np.eye(2)[y]
    np.testing.assert_allclose(whole, (Xa @ B - h[:, None] * Y) / (1 - h)[:, None], rtol=0, atol=2e-5)


def test_in_process_dask_matches(sst2_planted, sst2_whole):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        _same(scan_sharded(sst2_planted[0], detectors=[SC], shard_rows=600, client=client), sst2_whole)


def test_pooled_rare_words_sharded_equals_in_memory(tmp_path, sst2_rows):
    """The pooled test and its members (version 6: the rows' mean reading without each word) from merged counts:
    4,000 SST-2 rows, 120 rows over 30 made-up words, shards that split the words' rows."""
    from conftest import read_jsonl

    r = poison(sst2_rows + read_jsonl("sst2_rows_2001_4000.jsonl"), "rare-words", count=120, seed=2, n_words=30,
               salt=2)
    path = write_jsonl(tmp_path / "rare.jsonl", r.rows)
    whole = scan(path, detectors=[SC])
    pooled = [f for f in whole.findings if f.evidence["feature"].endswith("rare features")]
    assert pooled and len(set(pooled[0].rows) & set(r.poisoned_rows)) >= 60
    _same(scan_sharded(path, detectors=[SC], shard_rows=1500), whole, 3)
