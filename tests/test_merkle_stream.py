"""Streamed Merkle roots and single-pass leaf hashing against plain reference definitions."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainguard.errors import DataError
from trainguard.ledger import hashing, merkle
from trainguard.ledger.hashing import hash_file, leaf_hash

from tests.test_ledger import ref_root as rfc_root  # RFC 6962 MTH by its recursive definition


EDGE_COUNTS = sorted({0, 1, 2, 3} | {(1 << p) + d for p in range(1, 8) for d in (-1, 0, 1)})
counts = st.one_of(st.sampled_from(EDGE_COUNTS), st.integers(0, 300))


def leaves_of(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


@given(n=counts, block_pow=st.integers(0, 5), cuts=st.lists(st.integers(0, 300), max_size=6))
@settings(max_examples=150, deadline=None)
def test_streamed_root_equals_reference(n, block_pow, cuts):
    leaves = leaves_of(n)
    packed = b"".join(leaves)
    s = merkle.StreamingRoot(1 << block_pow)
    edges = sorted({0, n, *(c for c in cuts if c <= n)})
    for a, b in zip(edges, edges[1:]):
        s.add(packed[a * 32:b * 32])
    assert s.count == n
    assert s.root() == rfc_root(leaves) == merkle.root(packed)


def test_streaming_root_refuses_bad_input():
    with pytest.raises(ValueError, match="power of two"):
        merkle.StreamingRoot(3)
    with pytest.raises(ValueError, match="32-byte"):
        merkle.StreamingRoot().add(b"x" * 31)
    with pytest.raises(ValueError, match="32-byte"):
        merkle.root(b"x" * 33)


def test_a_different_leaf_changes_the_streamed_root():
    a = merkle.StreamingRoot(4)
    b = merkle.StreamingRoot(4)
    leaves = leaves_of(9)
    a.add(b"".join(leaves))
    b.add(b"".join(leaves[:8] + [leaf_hash(b"other")]))
    assert a.root() != b.root()


line = st.one_of(
    # A file starting with the gzip magic bytes is read as gzip (by design), so plain lines never start so.
    st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"\n", b"")).filter(lambda b: not b.startswith(b"\x1f\x8b")),
    st.sampled_from([b"", b"  ", b"\r", b'{"a": 1}\r', b"\t"]),
)


@given(lines=st.lists(line, max_size=60), block=st.integers(1, 64), chunk_pow=st.integers(0, 3),
       final_newline=st.booleans(), workers=st.sampled_from([1, 2]))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_single_pass_hashing_matches_reference(tmp_path_factory, monkeypatch, lines, block, chunk_pow,
                                               final_newline, workers):
    """Tiny blocks and pieces force lines across block edges and many subtrees; the file digest,
    leaves, leaf lookup and root must equal a plain per-line computation."""
    monkeypatch.setattr(hashing, "BLOCK", block)
    monkeypatch.setattr(hashing, "CHUNK_LEAVES", 1 << chunk_pow)
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    records = [x[:-1] if x.endswith(b"\r") else x for x in data.split(b"\n")]
    records = [x for x in records if x and not x.isspace()]
    p = tmp_path_factory.mktemp("h") / "d.jsonl"
    p.write_bytes(data)
    if not data:
        with pytest.raises(DataError, match="empty"):
            hash_file(p, workers=workers)
        return
    if not records:
        with pytest.raises(DataError, match="no records"):
            hash_file(p, workers=workers)
        return
    fl = hash_file(p, workers=workers)
    ref = [leaf_hash(r) for r in records]
    assert fl.file_sha256 == hashlib.sha256(data).hexdigest()
    assert fl.leaves == b"".join(ref)
    assert fl.count == len(ref)
    assert all(fl.leaf(i) == ref[i] for i in range(len(ref)))
    assert fl.merkle_root == rfc_root(ref).hex()


def test_oversized_line_across_blocks_names_its_line(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "BLOCK", 16)
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"a": 1}\n\n{"a": 2}\n' + b'{"t": "' + b"x" * 300 + b'"}\n{"a": 3}\n')
    for workers in (1, 2):
        with pytest.raises(DataError, match="line 4"):
            hash_file(p, workers=workers, max_record_bytes=100)


def test_gzip_is_read_once_and_digested(tmp_path):
    import gzip

    raw = b"".join(b'{"i": %d}\n' % i for i in range(500))
    p = tmp_path / "d.jsonl.gz"
    p.write_bytes(gzip.compress(raw))
    fl = hash_file(p)
    assert fl.file_sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert fl.leaves == b"".join(leaf_hash(x) for x in raw.splitlines())
