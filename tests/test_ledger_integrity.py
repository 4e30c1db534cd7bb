"""Tamper evidence of the event log, and crash consistency of ingest under SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainguard.ledger import Ledger, check, ingest

COLUMNS = ("seq", "ts", "kind", "actor", "payload", "prev_hash", "hash")


def write(p, n, tag=""):
    p.write_text("".join(json.dumps({"text": f"{tag}row {i}", "label": i % 2}) + "\n" for i in range(n)))
    return p


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    d = tmp_path_factory.mktemp("tpl")
    db = d / "l.db"
    with Ledger.open(db) as led:
        ingest(led, write(d / "a.jsonl", 30), source="s1", licence="MIT", owner="o", by="alice")
        ingest(led, write(d / "a.jsonl", 31), source="s1", origin="https://example.org", by="bob")
        ingest(led, write(d / "b.jsonl", 5), by="carol")
        with led.transaction():
            led.add_training(file_sha256="ab" * 32, attestation_sha256="cd" * 32, path="x", actor="dave")
        assert check(led).ok
        n = led.head()[0]
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return db.read_bytes(), n


def fresh(tmp_path, template):
    db = tmp_path / "copy.db"
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"copy.db{suffix}").unlink(missing_ok=True)
    db.write_bytes(template[0])
    return db


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_changed_byte_in_the_event_log_is_detected(tmp_path, template, data):
    db = fresh(tmp_path, template)
    seq = data.draw(st.integers(1, template[1]), label="event")
    col = data.draw(st.sampled_from(COLUMNS), label="column")
    con = sqlite3.connect(db)
    if col == "seq":
        new = data.draw(st.integers(-5, 10_000).filter(lambda s: s != seq and not 1 <= s <= template[1]))
        con.execute("UPDATE events SET seq = ? WHERE seq = ?", (new, seq))
    else:
        raw = con.execute(f"SELECT CAST({col} AS BLOB) FROM events WHERE seq = ?", (seq,)).fetchone()[0]
        i = data.draw(st.integers(0, len(raw) - 1), label="byte")
        b = data.draw(st.integers(0, 255).filter(lambda v: v != raw[i]), label="value")
        edited = raw[:i] + bytes([b]) + raw[i + 1:]
        try:
            value: object = edited.decode("utf-8")
        except UnicodeDecodeError:
            value = edited
        con.execute(f"UPDATE events SET {col} = ? WHERE seq = ?", (value, seq))
    con.commit()
    con.close()
    with Ledger.open(db, create=False) as led:
        rep = check(led)
    assert not rep.ok, (seq, col)


def test_table_edits_are_detected(tmp_path, template):
    for sql in (
        "UPDATE versions SET merkle_root = 'ff' || substr(merkle_root, 3) WHERE id = 1",
        "UPDATE leaf_chunks SET data = zeroblob(length(data)) WHERE version_id = 2",
        "UPDATE sources SET licence = 'Proprietary'",
        "UPDATE versions SET ingested_by = 'mallory' WHERE id = 3",
        "DELETE FROM trainings",
        "DELETE FROM events WHERE seq = (SELECT MAX(seq) FROM events)",
    ):
        db = fresh(tmp_path, template)
        con = sqlite3.connect(db)
        con.execute(sql)
        con.commit()
        con.close()
        with Ledger.open(db, create=False) as led:
            assert not check(led).ok, sql


def test_expected_head_catches_a_rewritten_history(tmp_path, template):
    db = fresh(tmp_path, template)
    with Ledger.open(db) as led:
        head = led.head()
        assert check(led, head).ok
        assert not check(led, (head[0], "0" * 64)).ok


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from trainguard.ledger import store, Ledger, ingest
    store.CHUNK_LEAVES = 8
    def hook(i):
        if i == 2:
            print("IN_TXN", flush=True)
            time.sleep(60)
    store._chunk_hook = hook
    with Ledger.open(sys.argv[1]) as led:
        ingest(led, sys.argv[2], by="victim")
""")


def test_sigkill_inside_the_ingest_transaction_leaves_no_partial_version(tmp_path):
    db = tmp_path / "l.db"
    with Ledger.open(db) as led:
        ingest(led, write(tmp_path / "d.jsonl", 20), by="alice")
    data = write(tmp_path / "d.jsonl", 100, tag="v2 ")
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(db), str(data)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "IN_TXN"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with Ledger.open(db, create=False) as led:
        assert check(led).ok
        assert [v["number"] for v in led.versions()] == [1]
        assert led.conn.execute("SELECT COUNT(*) FROM leaf_chunks WHERE version_id != 1").fetchone()[0] == 0
        assert ingest(led, data, by="alice").version["number"] == 2
        assert check(led).ok


def test_sigkill_at_random_moments_keeps_the_ledger_consistent(tmp_path):
    db = tmp_path / "l.db"
    rng = random.Random(7)
    script = "import sys\nfrom trainguard.ledger import Ledger, ingest\n" \
             "with Ledger.open(sys.argv[1]) as led:\n    ingest(led, sys.argv[2], by='x')\n"
    for k in range(4):
        data = write(tmp_path / f"d{k}.jsonl", 20_000, tag=f"{k} ")
        proc = subprocess.Popen([sys.executable, "-c", script, str(db), str(data)])
        try:
            proc.wait(timeout=rng.uniform(0.2, 1.2))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        if db.exists():
            with Ledger.open(db, create=False) as led:
                rep = check(led)
                assert rep.ok, rep.problems
                for v in led.versions():
                    assert len(led.leaves(v["id"])) == 32 * v["records"] == 32 * 20_000


@pytest.mark.parametrize("edit", [
    "UPDATE users SET role = 'admin' WHERE name = 'rita'",
    "UPDATE users SET password = 'scrypt$2$1$1$AAAA$BBBB' WHERE name = 'rita'",
    "UPDATE users SET disabled = 0 WHERE name = 'vic'",
    "DELETE FROM users WHERE name = 'vic'",
])
def test_reviewer_account_edits_outside_the_log_are_detected(tmp_path, edit):
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as ledger:
        with ledger.transaction():
            ledger.add_user("rita", "reviewer", "scrypt$16384$8$1$c2FsdA$aGFzaA", actor="admin")
            ledger.add_user("vic", "viewer", "scrypt$16384$8$1$c2FsdDI$aGFzaDI", actor="admin")
        with ledger.transaction():
            ledger.update_user("vic", actor="admin", disabled=True)
        assert check(ledger).ok
    conn = sqlite3.connect(path)
    conn.execute(edit)
    conn.commit()
    conn.close()
    with Ledger.open(path) as ledger:
        report = check(ledger)
    assert not report.ok
    assert any(p["where"].startswith("users id=") for p in report.problems), report.problems
