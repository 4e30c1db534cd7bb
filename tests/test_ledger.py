"""Leaf hashing, Merkle trees, ingest and verify against the ledger."""

from __future__ import annotations

import gzip
import hashlib
import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainguard.errors import ConfigError, DataError
from trainguard.ledger import Ledger, hash_file, ingest, leaf_hash, prove, resolve_path, verify
from trainguard.ledger import merkle
from trainguard.ledger.store import SCHEMA_VERSION


def write(p, rows, end=b"\n"):
    p.write_bytes(b"".join(json.dumps(r).encode() + end for r in rows))
    return p


ROWS = [{"text": f"sample {i}", "label": i % 2} for i in range(40)]


def ref_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 MTH by its recursive definition."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_root(leaves[:k]) + ref_root(leaves[k:])).digest()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300))
def test_merkle_root_matches_rfc6962_definition(n):
    leaves = [leaf_hash(str(i).encode()) for i in range(n)]
    assert merkle.root(b"".join(leaves)) == ref_root(leaves)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200), data=st.data())
def test_inclusion_proofs_verify_and_reject_wrong_leaves(n, data):
    leaves = [leaf_hash(str(i).encode()) for i in range(n)]
    packed = b"".join(leaves)
    root = merkle.root(packed)
    i = data.draw(st.integers(0, n - 1))
    path = merkle.inclusion_proof(packed, i)
    assert merkle.verify_inclusion(leaves[i], i, n, path, root)
    assert not merkle.verify_inclusion(leaf_hash(b"other"), i, n, path, root)
    if n > 1:
        assert not merkle.verify_inclusion(leaves[i], (i + 1) % n, n, path, root)


def test_known_rfc6962_values():
    assert merkle.root(b"").hex() == hashlib.sha256(b"").hexdigest()
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert merkle.root(a + b) == hashlib.sha256(b"\x01" + a + b).digest()


def test_canonical_bytes_are_the_line_without_terminator(tmp_path):
    lf = write(tmp_path / "lf.jsonl", ROWS)
    crlf = write(tmp_path / "crlf.jsonl", ROWS, b"\r\n")
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n  \n" + lf.read_bytes().replace(b"\n", b"\n\n", 3) + b"\t\n")
    noeol = tmp_path / "noeol.jsonl"
    noeol.write_bytes(lf.read_bytes().rstrip(b"\n"))
    gz = tmp_path / "data.jsonl.gz"
    gz.write_bytes(gzip.compress(lf.read_bytes()))
    leaves = hash_file(lf)
    assert leaves.count == 40
    assert leaves.leaf(0) == leaf_hash(json.dumps(ROWS[0]).encode())
    for other in (crlf, blank, noeol, gz):
        assert hash_file(other).leaves == leaves.leaves, other.name
    assert hash_file(crlf).file_sha256 != leaves.file_sha256


def test_parallel_shards_equal_serial(tmp_path):
    p = write(tmp_path / "d.jsonl", [{"text": "x" * (i % 97), "label": i} for i in range(3000)])
    serial = hash_file(p, workers=1).leaves
    for workers in (2, 3):
        assert hash_file(p, workers=workers).leaves == serial


def test_csv_rows_hash_every_column(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label,extra\nhello,1,a\nworld,0,b\n")
    q = tmp_path / "e.csv"
    q.write_text("text,label,extra\nhello,1,a\nworld,0,CHANGED\n")
    a, b = hash_file(p), hash_file(q)
    assert a.count == 2 and a.leaf(0) == b.leaf(0) and a.leaf(1) != b.leaf(1)


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        hash_file(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        hash_file(tmp_path / "empty.jsonl")
    (tmp_path / "blank.jsonl").write_bytes(b"\n\n  \n")
    with pytest.raises(DataError, match="no records"):
        hash_file(tmp_path / "blank.jsonl")
    (tmp_path / "big.jsonl").write_bytes(b'{"a": 1}\n{"text": "' + b"x" * 200 + b'"}\n')
    with pytest.raises(DataError, match="line 2"):
        hash_file(tmp_path / "big.jsonl", max_record_bytes=100)


def test_ingest_is_idempotent_and_versions_count_up(tmp_path):
    p = write(tmp_path / "d.jsonl", ROWS)
    with Ledger.open(tmp_path / "l.db") as led:
        r1 = ingest(led, p, source="src", licence="MIT", owner="team", by="alice")
        assert r1.created and r1.version["number"] == 1 and r1.version["records"] == 40
        assert not ingest(led, p, by="alice").created
        write(p, ROWS[:-1])
        r3 = ingest(led, p, by="bob")
        assert r3.created and r3.version["number"] == 2 and r3.version["ingested_by"] == "bob"
        assert led.schema_version == SCHEMA_VERSION
        assert [e["kind"] for e in led.events()] == ["source", "ingest", "ingest"]
        with pytest.raises(ConfigError, match="--source"):
            ingest(led, p, licence="MIT")


def test_verify_against_older_version_and_by_content(tmp_path):
    p = write(tmp_path / "d.jsonl", ROWS)
    with Ledger.open(tmp_path / "l.db") as led:
        ingest(led, p, by="a")
        write(p, ROWS[:10] + [{"text": "new", "label": 1}] + ROWS[10:])
        ingest(led, p, by="a")
        res = verify(led, p, number=1)
        assert not res.ok and res.diff.inserted == [10]
        assert verify(led, p).ok
        moved = write(tmp_path / "renamed.jsonl", ROWS)
        assert verify(led, moved).version["number"] == 1  # found by content
        with pytest.raises(ConfigError, match="not in the ledger"):
            verify(led, write(tmp_path / "other.jsonl", ROWS[:3]))
        with pytest.raises(ConfigError, match="no version 9"):
            verify(led, p, number=9)


def test_prove_round_trip(tmp_path):
    p = write(tmp_path / "d.jsonl", ROWS)
    with Ledger.open(tmp_path / "l.db") as led:
        ingest(led, p, by="a")
        res = prove(led, "d.jsonl", 7)
        assert res["verified"] and res["leaf"] == leaf_hash(json.dumps(ROWS[7]).encode()).hex()
        path = [bytes.fromhex(x) for x in res["audit_path"]]
        assert merkle.verify_inclusion(bytes.fromhex(res["leaf"]), 7, 40, path, bytes.fromhex(res["merkle_root"]))
        with pytest.raises(ConfigError, match="outside"):
            prove(led, "d.jsonl", 40)


def test_ledger_path_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAINGUARD_LEDGER", raising=False)
    assert str(resolve_path()) == ".trainguard/ledger.db"
    monkeypatch.setenv("TRAINGUARD_LEDGER", str(tmp_path / "env.db"))
    assert resolve_path() == tmp_path / "env.db"
    assert resolve_path(tmp_path / "x.db") == tmp_path / "x.db"
    with pytest.raises(ConfigError, match="no ledger"):
        Ledger.open(tmp_path / "missing.db", create=False)


def test_wal_mode_and_newer_schema_refused(tmp_path):
    db = tmp_path / "l.db"
    with Ledger.open(db) as led:
        assert led.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="newer"):
        Ledger.open(db)


def test_not_a_ledger(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a readable trainguard ledger"):
        Ledger.open(bad)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 70), block=st.sampled_from([1, 2, 4, 8, 16]))
def test_root_from_aligned_blocks_equals_full_root(n, block):
    leaves = b"".join(leaf_hash(str(i).encode()) for i in range(n))
    step = block * 32
    blocks = [merkle.root(leaves[i:i + step]) for i in range(0, len(leaves), step)]
    assert merkle.block_roots_root(blocks) == merkle.root(leaves)


def test_parallel_hash_file_returns_the_same_root(tmp_path):
    p = write(tmp_path / "d.jsonl", [{"text": "y" * (i % 50), "label": i} for i in range(5000)])
    par, ser = hash_file(p, workers=2), hash_file(p, workers=1)
    assert par.root is not None and ser.root is None
    assert par.merkle_root == ser.merkle_root == merkle.root(ser.leaves).hex()
