"""A 10,000-row queue pages correctly; the ledger migration keeps old ledgers working; the CLI."""

from __future__ import annotations

import io
import json
import sqlite3

import pytest

from trainguard.cli import app as cli_app
from trainguard.cli._common import run_app
from trainguard.ledger.hashing import hash_file
from trainguard.ledger.ops import ingest
from trainguard.ledger.store import MIGRATIONS, SCHEMA_VERSION, Ledger
from trainguard.web import auth

N = 10_000


def big_queue(tmp_path):
    """10,000 rows all waiting for review (stored as a gate would store them, without scanning)."""
    data = tmp_path / "big.jsonl"
    data.write_text("".join(json.dumps({"text": f"review number {i} <b>bold</b>", "label": i % 2}) + "\n"
                            for i in range(N)))
    fl = hash_file(data)
    with Ledger.open(tmp_path / "l.db") as led:
        v = ingest(led, data, source="bulk", licence="MIT", owner="team", by="ingest").version
        queue = [(r, fl.leaf(r).hex(), [{"fingerprint": f"fp{r % 3}", "detector": ("det-a", "det-b", "det-c")[r % 3],
                                         "rule": "r", "title": "t", "severity": ("high", "medium", "high")[r % 3],
                                         "confidence": "high", "score": 0.9}]) for r in range(N)]
        with led.transaction():
            led.add_gate_run(version_id=v["id"], path=str(data), merkle_root=fl.merkle_root, verdict="quarantine",
                             reasons=[], policy={}, report={"findings": []}, records=N, queue=queue, actor="ci")
        with led.transaction():
            led.add_user("vic", "viewer", auth.hash_password("vic-only-looks", n=2**12), "setup")
    return tmp_path / "l.db"


def test_ten_thousand_row_queue_is_paginated(tmp_path):
    from fastapi.testclient import TestClient
    from .helpers import csrf_of

    from trainguard.web import create_app

    with TestClient(create_app(big_queue(tmp_path))) as c:
        c.post("/login", data={"name": "vic", "password": "vic-only-looks", "csrf": csrf_of(c.get("/login").text)})
        first = c.get("/queue").text
        assert "10,000 row(s)" in first and "page 1 of 400" in first
        rows = [int(x) for x in re_rows(first)]
        assert rows == list(range(25))
        assert "&lt;b&gt;bold&lt;/b&gt;" in first and "<b>bold</b>" not in first
        last = c.get("/queue?page=400").text
        assert [int(x) for x in re_rows(last)] == list(range(9975, 10000)) and 'rel="next"' not in last
        assert re_rows(c.get("/queue?page=401").text) == []
        big = c.get("/queue?per_page=200&page=50").text
        assert [int(x) for x in re_rows(big)] == list(range(9800, 10000))
        assert len(re_rows(c.get("/queue?per_page=100000").text)) == 200  # capped
        det_b = c.get("/queue?detector=det-b&page=2").text
        assert "3,333 row(s)" in det_b and [int(x) for x in re_rows(det_b)][:2] == [76, 79]
        assert "6,667 row(s)" in c.get("/queue?severity=high").text


def re_rows(html: str) -> list[str]:
    import re

    return re.findall(r'data-row="(\d+)"', html)


def test_a_version_1_ledger_is_migrated_and_keeps_its_data(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version(version INTEGER NOT NULL)")
    for stmt in MIGRATIONS[0][1].split(";"):
        if stmt.strip():
            conn.execute(stmt)
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute("INSERT INTO datasets(name) VALUES ('kept')")
    conn.close()
    with Ledger.open(path) as led:
        assert led.schema_version == SCHEMA_VERSION >= 2  # every later migration runs too
        assert led.datasets() == ["kept"] and led.users() == []


def run(args, stdin=""):
    import sys

    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return run_app(cli_app, [str(a) for a in args])
    finally:
        sys.stdin = old


def test_user_cli(tmp_path, capsys):
    db = tmp_path / "l.db"
    Ledger.open(db).close()
    assert run(["user", "add", "alice", "--role", "reviewer", "--password-stdin", "--ledger", db],
               "a-long-enough-password\n") == 0
    assert run(["user", "add", "alice", "--password-stdin", "--ledger", db], "another-long-password\n") == 2
    assert run(["user", "add", "bob", "--role", "boss", "--password-stdin", "--ledger", db], "x" * 12) == 2
    assert run(["user", "add", "bob", "--password-stdin", "--ledger", db], "short\n") == 2
    assert run(["user", "add", "bad name!", "--password-stdin", "--ledger", db], "x" * 12) == 2
    capsys.readouterr()
    assert run(["user", "list", "-f", "json", "--ledger", db]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == [{"name": "alice", "role": "reviewer", "created_at": out[0]["created_at"], "disabled": False}]
    assert run(["user", "set", "alice", "--role", "admin", "--ledger", db]) == 0
    with Ledger.open(db) as led:
        u = led.user("alice")
        assert u["role"] == "admin" and u["password"].startswith("scrypt$16384$8$1$")
        assert "a-long-enough-password" not in json.dumps(led.events())
        assert auth.verify_password("a-long-enough-password", u["password"])
        assert not auth.verify_password("a-long-enough-passworD", u["password"])


def test_serve_refuses_unsafe_binding_and_missing_ledger(tmp_path, capsys):
    db = tmp_path / "l.db"
    Ledger.open(db).close()
    assert run(["serve", "--ledger", db, "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert run(["serve", "--ledger", tmp_path / "missing.db"]) == 2
    assert "no ledger" in capsys.readouterr().err


@pytest.mark.parametrize("host,ok", [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
                                     ("10.1.2.3", False), ("example.com", False)])
def test_loopback_detection(host, ok):
    from trainguard.cli.serve import _is_loopback

    assert _is_loopback(host) is ok


def test_serve_passes_the_login_rate_to_the_app(tmp_path, monkeypatch, capsys):
    import uvicorn

    db = tmp_path / "l.db"
    Ledger.open(db).close()
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    assert run(["serve", "--ledger", db, "--logins-per-minute", "7"]) == 0
    assert served["app"].state.tg.limiter.limits.per_client_per_minute == 7 and served["host"] == "127.0.0.1"
    assert run(["serve", "--ledger", db, "--logins-per-minute", "0"]) == 2
