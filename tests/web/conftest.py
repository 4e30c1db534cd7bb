"""Fixtures for the review web page: a ledger from a real gate run, users, a logged-in client."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from trainguard.gate.policy import load as load_policy
from trainguard.gate.run import gate
from trainguard.ledger.ops import ingest
from trainguard.ledger.store import Ledger
from trainguard.web import auth

from .helpers import DEMO, PASSWORDS, ROLES, XSS, XSS_ROWS, ledger_path, login


@pytest.fixture(scope="session")
def gated_template(tmp_path_factory) -> Path:
    """The bundled poisoned demo set (+ two XSS payloads on poisoned rows), ingested and gated once."""
    root = tmp_path_factory.mktemp("gated")
    lines = (DEMO / "sst2_poisoned.jsonl").read_text(encoding="utf-8").splitlines()
    for r in XSS_ROWS:
        rec = json.loads(lines[r])
        assert re.search(r"\bcf\b", rec["text"]), "the demo set changed: XSS rows must carry the BadNets trigger"
        rec["text"] += XSS
        lines[r] = json.dumps(rec)
    (root / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / ".trainguard").mkdir()
    here = os.getcwd()
    os.chdir(root)  # paths are recorded as given: relative, so copies of this folder work too
    try:
        with Ledger.open(root / ".trainguard" / "ledger.db") as led:
            ingest(led, "data.jsonl", source="sst2-vendor", licence="research-only", owner="data-team", by="ingest")
            res = gate(led, "data.jsonl", load_policy(None), by="ci")
    finally:
        os.chdir(here)
    assert res.verdict == "quarantine", res.reasons
    with Ledger.open(root / ".trainguard" / "ledger.db") as led:
        for name, pw in PASSWORDS.items():
            led_pw = auth.hash_password(pw, n=2**12)  # cheaper KDF for tests only
            with led.transaction():
                led.add_user(name, ROLES[name], led_pw, "setup")
    return root


@pytest.fixture()
def gated(gated_template, tmp_path) -> Path:
    """A private copy: tests decide rows and must not see each other's decisions."""
    dst = tmp_path / "project"
    shutil.copytree(gated_template, dst)
    return dst


@pytest.fixture()
def app(gated):
    from trainguard.web import create_app

    return create_app(ledger_path(gated))


@pytest.fixture()
def client_for(app):
    """client_for("alice") -> a TestClient logged in as alice."""
    from fastapi.testclient import TestClient

    made = []

    def make(name: str | None = None):
        c = TestClient(app)
        made.append(c)
        if name:
            r = login(c, name)
            assert r.status_code == 200 and "Review queue" in r.text, r.text[:500]
        return c

    yield make
    for c in made:
        c.close()
