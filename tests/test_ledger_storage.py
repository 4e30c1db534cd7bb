"""Issue 13 item 9 (a full disk is one line, exit 2) and the leaf-hash index of issue 14 item 5.

A full disk is simulated with SQLite's `PRAGMA max_page_count`, set on every connection the
ledger opens: growing the database past it fails exactly as a full disk does (SQLITE_FULL).
"""

from __future__ import annotations

import errno
import json
import sqlite3

import pytest
from conftest import cli

from trainguard.errors import TrainguardError
from trainguard.ledger import Ledger, check, ingest
from trainguard.ledger import store
from trainguard.ledger.store import storage_error


def write(p, n):
    p.write_text("".join(json.dumps({"text": f"row {i} " + "x" * 40, "label": i % 2}) + "\n" for i in range(n)))
    return p


@pytest.fixture()
def full_disk(monkeypatch):
    """Every new ledger connection may not grow the database beyond its current size."""
    real = sqlite3.connect

    def limited(*args, **kwargs):
        con = real(*args, **kwargs)
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        con.execute(f"PRAGMA max_page_count = {max(pages, 1)}")
        return con

    monkeypatch.setattr(store.sqlite3, "connect", limited)


def test_ingest_on_a_full_disk_is_one_line_and_exit_2(tmp_path, capsys, request, monkeypatch):
    db = tmp_path / "l.db"
    with Ledger.open(db) as led:
        ingest(led, write(tmp_path / "a.jsonl", 10), by="alice")
    big = write(tmp_path / "b.jsonl", 5000)
    request.getfixturevalue("full_disk")
    code, out, err = cli(capsys, "ingest", big, "--ledger", db, "--by", "alice")
    monkeypatch.undo()
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "disk is full" in errors[0] and "Traceback" not in err
    with Ledger.open(db, create=False) as led:  # nothing half-written
        assert check(led).ok and len(led.versions()) == 1


def test_gate_on_a_full_disk_says_so_not_unreadable(tmp_path, capsys, full_disk):
    data = write(tmp_path / "a.jsonl", 20)
    code, _, err = cli(capsys, "gate", data, "--ledger", tmp_path / "new.db")
    assert code == 2
    assert "disk is full" in err and "not a readable" not in err


def test_enospc_from_the_os_is_recognised():
    err = storage_error(OSError(errno.ENOSPC, "No space left on device"), "out.jsonl")
    assert isinstance(err, TrainguardError) and "disk is full" in str(err)
    assert storage_error(OSError(errno.EACCES, "denied"), "x") is None
    assert storage_error(sqlite3.OperationalError("database is locked"), "x") is None


def test_old_ledgers_get_the_leaf_index(tmp_path):
    db = tmp_path / "l.db"
    with Ledger.open(db) as led:
        ingest(led, write(tmp_path / "a.jsonl", 5), by="alice")
    con = sqlite3.connect(db)
    con.execute("DROP INDEX reviews_leaf")
    con.execute("DELETE FROM schema_version WHERE version = 3")  # as written by the previous release
    con.commit()
    con.close()
    with Ledger.open(db, create=False) as led:
        assert led.schema_version == store.SCHEMA_VERSION == 3
        assert check(led).ok
        plan = " ".join(r[-1] for r in led.conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM reviews WHERE leaf = ? AND status IN ('approved', 'rejected')", ("x",)))
        assert "reviews_leaf" in plan, plan


def test_an_io_error_on_a_full_disk_is_called_a_full_disk(tmp_path, monkeypatch):
    import collections

    usage = collections.namedtuple("usage", "total used free")
    io = sqlite3.OperationalError("disk I/O error")
    assert storage_error(io, tmp_path / "l.db") is None  # plenty of space here: a real I/O error
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: usage(10, 10, 0))
    assert "disk is full" in str(storage_error(io, tmp_path / "l.db"))


def test_new_ledgers_use_large_pages_and_old_ones_keep_theirs(tmp_path):
    with Ledger.open(tmp_path / "new.db") as led:
        assert led.conn.execute("PRAGMA page_size").fetchone()[0] == store.PAGE_SIZE
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("CREATE TABLE placeholder(x)")
    conn.close()
    with Ledger.open(old) as led:  # an existing file keeps its page size (it is never rewritten)
        assert led.conn.execute("PRAGMA page_size").fetchone()[0] == 4096


def test_a_second_hashing_process_only_while_a_core_is_idle(monkeypatch):
    from trainguard.ledger import hashing

    big = hashing.PARALLEL_MIN_BYTES
    monkeypatch.setattr(hashing.os, "cpu_count", lambda: 2)
    assert hashing.auto_workers(big, load=0.8) == 2
    assert hashing.auto_workers(big, load=4.5) == 1
    assert hashing.auto_workers(big - 1, load=0.0) == 1  # small files are not worth a fork
    monkeypatch.setattr(hashing.os, "cpu_count", lambda: 1)
    assert hashing.auto_workers(big, load=0.0) == 1
    monkeypatch.setattr(hashing.os, "cpu_count", lambda: 16)
    assert hashing.auto_workers(big, load=30.0) == 8
