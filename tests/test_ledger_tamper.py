"""Issue 13 item 7: every cell of every ledger table is derived from, or checked against, the hash chain.

The schema is read from the database itself, so a table or column added later without a check in
`ledger/integrity.py` fails `test_every_cell_of_every_table_is_checked`.
"""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from conftest import use_detectors
from ledger_fixture import TEST_DETECTORS, build

from trainguard.errors import ConfigError
from trainguard.ledger import Ledger, check
from trainguard.ledger.integrity import CHECKED_TABLES, UNCHECKED_TABLES

_detectors = use_detectors(*TEST_DETECTORS)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    d = tmp_path_factory.mktemp("tamper")
    built = build(d)
    with Ledger.open(built["db"], create=False) as led:
        rep = check(led)
        assert rep.ok, rep.problems
    return built["db"]  # a path: hypothesis prints arguments, and the bytes would fill the screen


def fresh(tmp_path, template):
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"t.db{suffix}").unlink(missing_ok=True)
    db = tmp_path / "t.db"
    db.write_bytes(template.read_bytes())
    return db


def schema(con) -> dict[str, list[tuple[str, str]]]:
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: [(c[1], (c[2] or "").upper()) for c in con.execute(f"PRAGMA table_info({t})")] for t in tables}


def verify(db) -> list[dict]:
    """The problems `ledger verify` reports; a ledger that will not even open counts as caught."""
    try:
        with Ledger.open(db, create=False) as led:
            return check(led).problems
    except ConfigError as e:
        return [{"where": "open", "problem": str(e)}]


def other_value(value, decl: str):
    if isinstance(value, bytes):
        return bytes([value[0] ^ 1]) + value[1:] if value else b"\x00"
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 1.5
    if value is None:
        return 1 if "INT" in decl else "x"
    return value + "x"


def named(problems, table) -> bool:
    """Reported, naming the table (an event's removal from the end of the log shows in the rows it wrote)."""
    if table == "events":
        return bool(problems)
    return any(p["where"].startswith((table, "open")) for p in problems)


def test_the_template_has_rows_in_every_table(tmp_path, template):
    con = sqlite3.connect(fresh(tmp_path, template))
    for table in schema(con):
        assert con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] > 0, table


def test_every_cell_of_every_table_is_checked(tmp_path, template):
    con = sqlite3.connect(fresh(tmp_path, template))
    tables = schema(con)
    con.close()
    assert set(tables) == set(CHECKED_TABLES) | set(UNCHECKED_TABLES), \
        "a table without a check in ledger/integrity.py (or one the check lists that no longer exists)"
    missed = []
    for table in CHECKED_TABLES:
        for col, decl in tables[table]:
            db = fresh(tmp_path, template)
            con = sqlite3.connect(db)
            rowid, value = con.execute(f"SELECT rowid, {col} FROM {table} ORDER BY rowid DESC LIMIT 1").fetchone()
            con.execute(f"UPDATE {table} SET {col} = ? WHERE rowid = ?", (other_value(value, decl), rowid))
            con.commit()
            con.close()
            problems = verify(db)
            if not named(problems, table):
                missed.append(f"{table}.{col}")
    assert not missed, f"edits that `ledger verify` did not report: {missed}"


@pytest.mark.parametrize("sql", [
    "UPDATE gate_runs SET by = 'mallory' WHERE id = 2",
    "UPDATE gate_runs SET at = '2020-01-01T00:00:00.000000+00:00' WHERE id = 2",
    "UPDATE releases SET by = 'mallory'",
    "UPDATE releases SET at = '2020-01-01T00:00:00.000000+00:00'",
    "UPDATE releases SET gate_run_id = 1",
    "UPDATE versions SET ingested_at = '2020-01-01T00:00:00.000000+00:00' WHERE id = 1",
    "UPDATE reviews SET findings = '[]' WHERE gate_run_id = 2 AND row = 11",
])
def test_the_seven_unchecked_columns_of_issue_13_are_checked(tmp_path, template, sql):
    db = fresh(tmp_path, template)
    con = sqlite3.connect(db)
    assert con.execute(sql).rowcount == 1
    con.commit()
    con.close()
    table = sql.split()[1]
    assert named(verify(db), table), sql


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_edit_delete_or_insert_in_any_table_is_reported(tmp_path, template, data):
    db = fresh(tmp_path, template)
    con = sqlite3.connect(db)
    tables = schema(con)
    table = data.draw(st.sampled_from(CHECKED_TABLES), label="table")
    rowids = [r[0] for r in con.execute(f"SELECT rowid FROM {table} ORDER BY rowid")]
    rowid = data.draw(st.sampled_from(rowids), label="rowid")
    op = data.draw(st.sampled_from(("edit", "delete", "insert")), label="op")
    cols = [c for c, _ in tables[table]]
    try:
        if op == "delete":
            con.execute(f"DELETE FROM {table} WHERE rowid = ?", (rowid,))
        elif op == "insert":
            row = list(con.execute(f"SELECT * FROM {table} WHERE rowid = ?", (rowid,)).fetchone())
            key = {"reviews": "row", "leaf_chunks": "chunk", "events": "seq", "schema_version": "version"}.get(table, "id")
            i = cols.index(key)
            row[i] = con.execute(f"SELECT MAX({key}) FROM {table}").fetchone()[0] + data.draw(
                st.integers(1, 1000), label="new key")
            con.execute(f"INSERT INTO {table} VALUES ({','.join('?' * len(row))})", row)
        else:
            col, decl = data.draw(st.sampled_from(tables[table]), label="column")
            old = con.execute(f"SELECT {col} FROM {table} WHERE rowid = ?", (rowid,)).fetchone()[0]
            new = data.draw(st.one_of(st.text(max_size=20), st.integers(-3, 2**40), st.none(), st.binary(max_size=8),
                                      st.just(other_value(old, decl))), label="value")
            con.execute(f"UPDATE {table} SET {col} = ? WHERE rowid = ?", (new, rowid))
            stored = con.execute(f"SELECT {col}, typeof({col}) FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
            # the same value (SQLite's type affinity may turn '5' back into 5) is no edit; a row no longer
            # at its rowid had its INTEGER PRIMARY KEY changed
            assume(stored is None or not (type(stored[0]) is type(old) and stored[0] == old))
        con.commit()
    except sqlite3.IntegrityError:
        assume(False)  # NOT NULL / UNIQUE refused the edit: nothing changed
    finally:
        con.close()
    problems = verify(db)
    assert named(problems, table), (table, op, problems)
