"""Issue 13 items 6 (release half), 8 and 13: what a release says, the head it attests, its file mode."""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import pytest
from conftest import cli, use_detectors
from cryptography.hazmat.primitives import serialization
from ledger_fixture import TEST_DETECTORS, FAINT, build, policy, write_rows

from trainguard.attest import check as check_attestation
from trainguard.gate import gate, release
from trainguard.gate.review import decide
from trainguard.guard import require_release
from trainguard.ledger import Ledger, check, ingest

_detectors = use_detectors(*TEST_DETECTORS)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build(tmp_path_factory.mktemp("rel"))


def predicate(res) -> dict:
    return res.statement["predicate"]


# --- item 6: findings below the quarantine bar and detectors that did not run are named ---------

def test_the_attestation_lists_unquarantined_findings_and_detectors_that_did_not_run(built):
    p = predicate(built["release"])
    below = p["unquarantined_findings"]
    assert [(f["detector"], f["rule"], f["severity"], f["rows"]) for f in below] == \
        [("test-tamper-marker", "faint", "low", list(FAINT))]
    assert all(len(f["fingerprint"]) >= 16 for f in below)
    assert 5 not in p["output"]["excluded_rows"]  # the row the finding names is in the release
    not_ok = {d["detector"]: d for d in p["detectors_not_ok"]}
    assert not_ok and all(d["status"] in ("failed", "skipped", "disabled") and d["message"] for d in not_ok.values())
    assert "trigger-association" in not_ok
    # consumers keep working on the richer predicate
    pub = built["key"].public_key()
    out = built["release"].out
    assert check_attestation(out, built["release"].attestation, [pub]).predicate == p
    assert require_release(out, built["release"].attestation, pub).sha256 == built["release"].out_sha256


def test_the_release_summary_names_them_too(built, tmp_path, capsys):
    key = tmp_path / "k.pem"
    key.write_bytes(built["key"].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    code, out, err = cli(capsys, "release", built["data"], "--out", tmp_path / "o.jsonl", "--key", key,
                         "--ledger", built["db"])
    assert code == 0, err
    text = out + err
    assert "test-tamper-marker/faint" in text and "low" in text and "5" in text
    assert "trigger-association" in text and "disabled" in text
    code, out, _ = cli(capsys, "release", built["data"], "--out", tmp_path / "o2.jsonl", "--key", key,
                       "--ledger", built["db"], "--format", "json")
    d = json.loads(out)
    assert d["unquarantined_findings"][0]["rows"] == [5] and d["detectors_not_ok"]


# --- item 8: the attested head covers the release itself ---------------------------------------

def approve_all(led, data):
    """Ingest `data`, gate it and approve every row the gate held."""
    ingest(led, data, source="s", licence="MIT", by="alice")
    run = gate(led, data, policy(), by="ci")
    for row in run.quarantined:
        decide(led, row, "approved", "ok", "bob", run.run_id)


def small_release(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    db, data = tmp_path / "l.db", write_rows(tmp_path / "d.jsonl")
    with Ledger.open(db) as led:
        approve_all(led, data)
        res = release(led, data, tmp_path / "out.jsonl", [Ed25519PrivateKey.generate()], by="carol")
    return db, res


def test_the_attested_head_is_the_release_event(tmp_path):
    db, res = small_release(tmp_path)
    head = predicate(res)["ledger"]
    with Ledger.open(db, create=False) as led:
        rel = led.releases()[-1]
        assert head["head_seq"] == rel["event_seq"]
        assert head["head_hash"] == led.event(rel["event_seq"])["hash"]
        assert predicate(res)["released_at"] == rel["at"]
        assert check(led, (head["head_seq"], head["head_hash"])).ok


def test_truncating_the_release_from_the_log_fails_verify_against_the_attested_head(tmp_path, capsys):
    db, res = small_release(tmp_path)
    head = predicate(res)["ledger"]
    con = sqlite3.connect(db)
    first = con.execute("SELECT event_seq FROM releases").fetchone()[0]
    con.execute("DELETE FROM events WHERE seq >= ?", (first,))
    con.execute("DELETE FROM releases")
    con.commit()
    con.close()
    with Ledger.open(db, create=False) as led:
        assert check(led).ok  # a clean cut at the tail is only visible against a head kept elsewhere
        assert not check(led, (head["head_seq"], head["head_hash"])).ok
    code, out, _ = cli(capsys, "ledger", "verify", "--ledger", db, "--expect-head",
                       f"{head['head_seq']}:{head['head_hash']}")
    assert code == 1 and "not in the log" in out


# --- item 13: released files are readable by the training job's user ---------------------------

@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_released_files_honour_the_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        _, res = small_release(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(res.out.stat().st_mode) == expected
    assert stat.S_IMODE(res.attestation.stat().st_mode) == expected


def test_an_explicit_mode_wins(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    db, data = tmp_path / "l.db", write_rows(tmp_path / "d.jsonl", 10)
    with Ledger.open(db) as led:
        ingest(led, data, source="s", licence="MIT", by="alice")
        assert gate(led, data, policy(), by="ci").verdict != "fail"
        for row in [r["row"] for r in led.reviews(1, "pending")]:
            decide(led, row, "approved", "ok", "bob", 1)
        res = release(led, data, tmp_path / "o.jsonl", [Ed25519PrivateKey.generate()], mode=0o640)
    assert stat.S_IMODE(res.out.stat().st_mode) == 0o640
    assert stat.S_IMODE(res.attestation.stat().st_mode) == 0o640


def test_check_attestation_shows_what_was_let_through_and_the_head_to_verify(built, tmp_path, capsys):
    pub = tmp_path / "k.pub"
    pub.write_bytes(built["key"].public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    res = built["release"]
    code, out, err = cli(capsys, "check-attestation", res.out, res.attestation, "--trusted-key", pub)
    assert code == 0, err
    assert "1 finding(s) below the quarantine bar" in out and "trigger-association" in out
    head = out.split("ledger head: ")[1].split()[0]
    code, out, _ = cli(capsys, "ledger", "verify", "--ledger", built["db"], "--expect-head", head)
    assert code == 0, out


def test_a_release_refuses_to_sign_a_tampered_ledger(tmp_path):
    """Issue 13 item 7: gate_runs.by = 'mallory' was signed into the next attestation."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from trainguard.errors import ConfigError

    db, data = tmp_path / "l.db", write_rows(tmp_path / "d.jsonl")
    with Ledger.open(db) as led:
        approve_all(led, data)
    con = sqlite3.connect(db)
    con.execute("UPDATE gate_runs SET by = 'mallory', at = '2020-01-01T00:00:00+00:00'")
    con.commit()
    con.close()
    with Ledger.open(db) as led, pytest.raises(ConfigError, match="fails verification.*gate_runs id=1"):
        release(led, data, tmp_path / "out.jsonl", [Ed25519PrivateKey.generate()])
    assert not (tmp_path / "out.jsonl").exists()
