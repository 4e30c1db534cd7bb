"""Issue 13 items 12 and 11 (library half): each record waits once, and reasons have a length limit."""

from __future__ import annotations

import pytest
from conftest import cli, use_detectors
from ledger_fixture import TEST_DETECTORS, MARKED, policy, write_rows

from trainguard.errors import ConfigError
from trainguard.gate import gate
from trainguard.gate.review import decide, decide_many, items
from trainguard.ledger import Ledger, check, ingest
from trainguard.ledger.store import MAX_REASON

_detectors = use_detectors(*TEST_DETECTORS)


@pytest.fixture()
def twice(tmp_path):
    """One failed gate run (fail bar at medium) and one good run of the same file."""
    db, data = tmp_path / "l.db", write_rows(tmp_path / "data.jsonl")
    led = Ledger.open(db)
    ingest(led, data, source="s", licence="MIT", by="alice")
    bad = gate(led, data, policy(thresholds={"quarantine": "medium", "fail": "medium"}), by="ci")
    good = gate(led, data, policy(), by="ci")
    assert (bad.verdict, good.verdict) == ("fail", "quarantine")
    yield led, data, db, bad.run_id, good.run_id
    led.close()


def test_only_the_newest_run_of_a_content_has_pending_rows(twice):
    led, _, _, bad, good = twice
    queue = items(led)
    assert [(i["run"], i["row"]) for i in queue] == [(good, r) for r in MARKED]
    closed = items(led, bad, None)
    assert {i["status"] for i in closed} == {"superseded"}
    assert all(i["decided_by"] == "gate" and str(good) in i["reason"] for i in closed)
    assert led.superseded_by(good) == {bad: list(MARKED)} and led.superseded_by(bad) == {}
    assert check(led).ok


def test_a_row_without_run_goes_to_the_newest_run(twice, capsys):
    led, _, db, _, good = twice
    item = decide(led, 7, "rejected", "poison", "bob")
    assert item["run"] == good
    code, out, err = cli(capsys, "review", "reject", "11", "--reason", "poison", "--by", "bob", "--ledger", db)
    assert code == 0, err
    assert f"gate run {good} row 11" in out


def test_a_superseded_row_cannot_be_decided(twice):
    led, _, _, bad, _ = twice
    with pytest.raises(ConfigError, match="superseded"):
        decide(led, 3, "approved", "ok", "bob", bad)


def test_superseded_rows_are_not_carried_as_decisions(twice):
    led, data, _, _, good = twice
    third = gate(led, data, policy(), by="ci")
    assert third.quarantined == list(MARKED) and not third.carried
    assert {i["status"] for i in items(led, good, None)} == {"superseded"}
    assert check(led).ok


def test_when_two_contents_hold_the_row_the_newest_is_taken_and_named(tmp_path, capsys):
    db = tmp_path / "l.db"
    with Ledger.open(db) as led:
        for n in (24, 25):  # two versions of the file: both runs stay open
            data = write_rows(tmp_path / "data.jsonl", n)
            ingest(led, data, source="s", licence="MIT", by="alice")
            gate(led, data, policy(), by="ci")
        item = decide(led, 3, "approved", "ok", "bob")
        assert item["run"] == 2 and "1, 2" in item["picked"]
    code, _, err = cli(capsys, "review", "approve", "7", "--reason", "ok", "--by", "bob", "--ledger", db)
    assert code == 0 and "took the newest, 2" in err


def test_reasons_have_a_length_limit(twice):
    led, _, _, _, good = twice
    with pytest.raises(ConfigError, match="at most 2,000"):
        decide(led, 3, "approved", "x" * (MAX_REASON + 1), "bob", good)
    with pytest.raises(ConfigError, match="at most 2,000"):
        decide_many(led, good, [3, 7], "approved", "x" * 900_000, "bob")
    assert decide(led, 3, "approved", "x" * MAX_REASON, "bob", good)["reason"] == "x" * MAX_REASON
    assert MAX_REASON == 2000


def test_the_gate_closing_rows_is_no_writer_in_the_audit(twice):
    from trainguard.ledger.audit import audit

    led, *_ = twice
    decide(led, 3, "approved", "ok", "bob")
    writers = audit(led)["datasets"][0]["writers"]
    assert "bob (review)" in writers and not any(w.startswith("gate") for w in writers)
