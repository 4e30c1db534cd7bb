"""verify localises every single-record change at exactly the right rows (hypothesis, 1..10,000 rows)."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainguard.ledger.diff import diff
from trainguard.ledger.hashing import hash_file, leaf_hash

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def lines_for(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [json.dumps({"text": f"review {i} " + "x" * rng.randint(0, 20), "label": rng.randint(0, 1)}).encode()
            for i in range(n)]


def leaves_of(tmp_path, lines: list[bytes], name: str) -> bytes:
    p = tmp_path / name
    p.write_bytes(b"\n".join(lines) + b"\n")
    return hash_file(p).leaves


def diff_lines(tmp_path, old: list[bytes], new: list[bytes]):
    return diff(leaves_of(tmp_path, old, "a.jsonl"), leaves_of(tmp_path, new, "b.jsonl"))


def _pos(data, n):
    return data.draw(st.integers(0, n - 1))


@SETTINGS
@given(n=st.integers(1, 10_000), seed=st.integers(0, 2**16), data=st.data())
def test_single_modification_is_reported_as_modified(tmp_path, n, seed, data):
    old = lines_for(n, seed)
    i = _pos(data, n)
    new = list(old)
    new[i] = new[i][:-1] + b' , "edited": true}'
    d = diff_lines(tmp_path, old, new)
    assert (d.modified, d.modified_from, d.inserted, d.deleted, d.moved) == ([i], [i], [], [], [])
    assert not d.ok and not d.reordered


@SETTINGS
@given(n=st.integers(1, 10_000), seed=st.integers(0, 2**16), data=st.data())
def test_single_insertion(tmp_path, n, seed, data):
    old = lines_for(n, seed)
    i = data.draw(st.integers(0, n))
    new = old[:i] + [b'{"text": "planted row", "label": 1}'] + old[i:]
    d = diff_lines(tmp_path, old, new)
    assert (d.inserted, d.modified, d.deleted, d.moved) == ([i], [], [], [])


@SETTINGS
@given(n=st.integers(1, 10_000), seed=st.integers(0, 2**16), data=st.data())
def test_single_deletion(tmp_path, n, seed, data):
    old = lines_for(n, seed)
    i = _pos(data, n)
    new = old[:i] + old[i + 1:]
    if not new:
        new = [b'{"text": "other", "label": 0}']  # a file needs a record; this is then a modification
        d = diff_lines(tmp_path, old, new)
        assert d.modified == [0]
        return
    d = diff_lines(tmp_path, old, new)
    assert (d.deleted, d.inserted, d.modified, d.moved) == ([i], [], [], [])


@SETTINGS
@given(n=st.integers(2, 10_000), seed=st.integers(0, 2**16), data=st.data())
def test_swap_reports_exactly_the_two_rows(tmp_path, n, seed, data):
    old = lines_for(n, seed)
    i = _pos(data, n)
    j = data.draw(st.integers(0, n - 1).filter(lambda x: x != i))
    new = list(old)
    new[i], new[j] = new[j], new[i]
    d = diff_lines(tmp_path, old, new)
    lo, hi = sorted((i, j))
    assert d.reordered
    assert (d.moved, d.moved_from) == ([lo, hi], [hi, lo])
    assert (d.inserted, d.modified, d.deleted) == ([], [], [])


@settings(max_examples=200, deadline=None)
@given(old=st.lists(st.sampled_from([b"a", b"b", b"c", b"d"]), min_size=1, max_size=30),
       new=st.lists(st.sampled_from([b"a", b"b", b"c", b"e"]), min_size=1, max_size=30))
def test_diff_accounts_for_every_row_even_with_duplicates(old, new):
    """Any pair of files: the reported rows partition both sides consistently."""
    lo = b"".join(leaf_hash(x) for x in old)
    ln = b"".join(leaf_hash(x) for x in new)
    d = diff(lo, ln)
    changed_new = set(d.inserted) | set(d.modified)
    changed_old = set(d.deleted) | set(d.modified_from)
    assert len(d.modified) == len(d.modified_from)
    assert len(changed_new) == len(d.inserted) + len(d.modified)
    # unchanged content is the same multiset on both sides
    keep_new = sorted(new[i] for i in range(len(new)) if i not in changed_new)
    keep_old = sorted(old[i] for i in range(len(old)) if i not in changed_old)
    assert keep_new == keep_old
    # no modified pair holds identical content
    assert all(new[b] != old[a] for a, b in zip(d.modified_from, d.modified))
    # moved rows keep their content
    assert all(new[b] == old[a] for a, b in zip(d.moved_from, d.moved))
    assert d.ok == (old == new)


def test_move_of_one_record_reports_the_shifted_span():
    old = [f"r{i}".encode() for i in range(10)]
    new = old[:2] + old[3:8] + [old[2]] + old[8:]
    d = diff(b"".join(map(leaf_hash, old)), b"".join(map(leaf_hash, new)))
    assert d.moved == list(range(2, 8)) and not d.inserted and not d.deleted and not d.modified


def test_identical_is_ok():
    leaves = b"".join(leaf_hash(bytes([i])) for i in range(50))
    d = diff(leaves, leaves)
    assert d.ok and d.to_dict()["ok"] is True


@pytest.mark.parametrize("k", [1, 3])
def test_several_modifications_in_a_row_pair_positionally(k):
    old = [f"r{i}".encode() for i in range(20)]
    new = list(old)
    for i in range(5, 5 + k):
        new[i] = b"x" + new[i]
    d = diff(b"".join(map(leaf_hash, old)), b"".join(map(leaf_hash, new)))
    assert d.modified == list(range(5, 5 + k)) == d.modified_from


def test_partial_64bit_collision_does_not_hide_a_change():
    """Leaves sharing their first 8 bytes still match by all 32."""
    import numpy as np

    from trainguard.ledger.diff import as_words

    base = [leaf_hash(str(i).encode()) for i in range(6)]
    forged = base[2][:8] + bytes(24)  # same first word as row 2, different leaf
    old = b"".join(base)
    new = b"".join(base[:2] + [forged] + base[3:])
    assert as_words(new)[2, 0] == as_words(old)[2, 0] and not np.array_equal(as_words(new)[2], as_words(old)[2])
    d = diff(old, new)
    assert d.modified == [2] and not d.moved
    swapped = b"".join([base[0], forged, base[2], base[1]] + base[3:])
    d = diff(old, swapped)
    assert (d.inserted, d.deleted, d.moved, d.modified) == ([1], [], [2, 3], [])  # F inserted, rows 1-2 swapped


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=60), st.data())
def test_in_place_fast_path_agrees_with_the_general_diff(values, data):
    import importlib

    diff_mod = importlib.import_module("trainguard.ledger.diff")

    old = b"".join(hashlib.sha256(str(v).encode()).digest() for v in values)
    new_values = list(values)
    for i in data.draw(st.lists(st.integers(0, len(values) - 1), max_size=5)):
        new_values[i] = data.draw(st.integers(0, 60))
    new = b"".join(hashlib.sha256(str(v).encode()).digest() for v in new_values)
    fast = diff_mod.diff(old, new)
    original = diff_mod._in_place_edits
    diff_mod._in_place_edits = lambda *args: None
    try:
        assert fast == diff_mod.diff(old, new)
    finally:
        diff_mod._in_place_edits = original
