"""Review decisions carry over to later gate runs of the same records (docs/review.md)."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import use_detectors, write_jsonl
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trainguard.attest import check as check_attestation
from trainguard.detectors.base import Detector
from trainguard.errors import ConfigError
from trainguard.findings import Alert, Confidence, DetectorResult, Severity
from trainguard.gate import gate, load_policy, release
from trainguard.gate.policy import from_dict
from trainguard.gate.review import decide, items, show
from trainguard.ledger import Ledger, check as ledger_check, ingest
from trainguard.records import Kind
from trainguard.scan import DEFAULT_DETECTORS

STATE: dict = {}


class CarryDet(Detector):
    """Flags MARKER rows; STATE sets the severity and whether a second rule also fires."""

    name = "test-carry-marker"
    kinds = frozenset(Kind)

    def run(self, data):
        sev = STATE.get("severity", Severity.MEDIUM)
        out = []
        for pos, r in enumerate(data):
            if "MARKER" in r.text:
                out.append(Alert("marker", "MARKER", (pos,), 0.8, sev, Confidence.HIGH))
                if STATE.get("extra_rule"):
                    out.append(Alert("extra", "extra", (pos,), 0.5, Severity.MEDIUM, Confidence.LOW))
        return DetectorResult(tuple(out))


_detectors = use_detectors(CarryDet)


@pytest.fixture(autouse=True)
def _state(monkeypatch):
    STATE.clear()
    monkeypatch.setattr(CarryDet, "version", "1")
    yield
    STATE.clear()


def policy(**over):
    base = {"detectors": ["test-carry-marker"], "allow_disabled": list(DEFAULT_DETECTORS),
            "limits": {"max_quarantine_share": 0.5},
            "thresholds": {"quarantine": "medium", "fail": "critical"}}
    return from_dict(base | over)


def rows(n=20, marked=(3, 7), changed=(), prefix=()):
    out = [{"text": t, "label": 0} for t in prefix]
    for i in range(n):
        t = f"plain review number {i}" + (" MARKER" if i in marked else "") + (" edited" if i in changed else "")
        out.append({"text": t, "label": i % 2})
    return out


@pytest.fixture()
def decided(tmp_path):
    """A ledger whose first gate run queued rows 3 and 7; bob approved 3 and rejected 7."""
    led = Ledger.open(tmp_path / "l.db")
    p = write_jsonl(tmp_path / "d.jsonl", rows())
    ingest(led, p, source="s", licence="MIT", by="alice")
    first = gate(led, p, policy(), by="ci")
    assert (first.verdict, first.quarantined) == ("quarantine", [3, 7])
    decide(led, 3, "approved", "benign mention", "bob")
    decide(led, 7, "rejected", "planted trigger", "bob")
    yield tmp_path, led, p, first.run_id
    led.close()


def test_second_run_carries_both_decisions_passes_and_release_drops_the_rejected_row(decided):
    tmp, led, p, run1 = decided
    res = gate(led, p, policy(), by="ci")
    assert (res.verdict, res.exit_code, res.quarantined, res.reasons) == ("pass", 0, [], [])
    assert [(c["row"], c["decision"], c["by"], c["from_run"]) for c in res.carried] == [
        (3, "approved", "bob", run1), (7, "rejected", "bob", run1)]
    assert any(f"2 row(s) carried decisions from gate run {run1}" in n for n in res.notes)
    summary = res.to_dict()["carried"]
    assert (summary["count"], summary["approved"], summary["rejected"]) == (2, 1, 1)
    got = {i["row"]: i for i in items(led, res.run_id, None)}
    assert got[7]["status"] == "rejected" and got[7]["reason"] == "planted trigger"
    assert got[7]["carried_from"]["gate_run"] == run1 and got[7]["carried_from"]["decided_by"] == "bob"
    original = items(led, run1, None)[1]
    assert got[7]["decided_at"] == original["decided_at"]  # when the person decided, not when it was copied
    carries = [e for e in led.events("review") if e["payload"].get("carried_from")]
    assert [e["actor"] for e in carries] == ["gate", "gate"]
    assert ledger_check(led).ok
    key = Ed25519PrivateKey.generate()
    r = release(led, p, tmp / "out.jsonl", [key])
    assert r.excluded == [7] and r.kept == 19
    pred = check_attestation(tmp / "out.jsonl", r.attestation, [key.public_key()]).predicate
    assert pred["gate"]["run"] == res.run_id and {d["by"] for d in pred["reviews"]["decisions"]} == {"bob"}
    assert [(d["row"], d["carried_from"]["gate_run"], d["carried_from"]["row"]) for d in pred["reviews"]["decisions"]] \
        == [(3, run1, 3), (7, run1, 7)]  # the attestation says which decisions were made on an earlier run
    # a person may still change a carried decision; it then stops being a carried one
    decide(led, 7, "approved", "context makes it fine", "eve", run_id=res.run_id)
    item = show(led, 7, res.run_id)
    assert item["carried_from"] is None and item["decided_by"] == "eve"
    assert ledger_check(led).ok


def test_the_next_version_with_shifted_rows_carries_by_content(decided):
    tmp, led, p, run1 = decided
    write_jsonl(p, rows(prefix=["a new first row"], changed=()))
    ingest(led, p, source="s", licence="MIT", by="alice")
    res = gate(led, p, policy(), by="ci")
    assert res.verdict == "pass" and [(c["row"], c["from_row"]) for c in res.carried] == [(4, 3), (8, 7)]


def test_a_changed_record_is_queued_again(decided):
    tmp, led, p, _ = decided
    write_jsonl(p, rows(changed=(7,)))
    ingest(led, p, source="s", licence="MIT", by="alice")
    res = gate(led, p, policy(), by="ci")
    assert (res.verdict, res.quarantined, [c["row"] for c in res.carried]) == ("quarantine", [7], [3])


@pytest.mark.parametrize("change", ["higher severity", "new rule", "new detector version"])
def test_changed_reasons_queue_the_row_again(decided, monkeypatch, change):
    tmp, led, p, _ = decided
    if change == "higher severity":
        STATE["severity"] = Severity.HIGH
    elif change == "new rule":
        STATE["extra_rule"] = True
    else:
        monkeypatch.setattr(CarryDet, "version", "2")
    res = gate(led, p, policy(), by="ci")
    assert (res.verdict, res.quarantined, res.carried) == ("quarantine", [3, 7], [])


def test_fewer_or_lower_reasons_carry_and_the_latest_decision_wins(tmp_path):
    led = Ledger.open(tmp_path / "l.db")
    p = write_jsonl(tmp_path / "d.jsonl", rows(marked=(3,)))
    ingest(led, p, source="s", licence="MIT", by="alice")
    STATE.update(severity=Severity.HIGH, extra_rule=True)
    gate(led, p, policy(), by="ci")
    decide(led, 3, "approved", "seen both reasons", "bob")
    STATE.update(severity=Severity.MEDIUM, extra_rule=False)  # lower, and one rule stopped firing
    assert [c["decision"] for c in gate(led, p, policy(), by="ci").carried] == ["approved"]
    STATE["severity"] = Severity.CRITICAL
    run3 = gate(led, p, policy(thresholds={"quarantine": "medium", "fail": None}), by="ci")
    assert run3.quarantined == [3]
    decide(led, 3, "rejected", "worse than it looked", "carol", run_id=run3.run_id)
    STATE["severity"] = Severity.MEDIUM  # both human decisions cover this; the newer one (carol's) wins
    last = gate(led, p, policy(), by="ci")
    assert [(c["decision"], c["by"], c["from_run"]) for c in last.carried] == [("rejected", "carol", run3.run_id)]
    assert ledger_check(led).ok
    led.close()


def test_carry_over_false_queues_every_row_again(decided, tmp_path):
    tmp, led, p, _ = decided
    res = gate(led, p, policy(review={"carry_over": False}), by="ci")
    assert (res.verdict, res.quarantined, res.carried) == ("quarantine", [3, 7], [])
    assert load_policy(None)["review"]["carry_over"] is True
    bad = tmp_path / "bad.yaml"
    for text, message in (("review: {carry_over: yes please}\n", "key 'review.carry_over'"),
                          ("review: {carry: true}\n", "unknown key 'review.carry'")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_policy(bad)


@pytest.mark.parametrize("sql", [
    "UPDATE reviews SET status = 'approved' WHERE gate_run_id = 2 AND row = 7",
    "UPDATE reviews SET decided_by = 'mallory' WHERE gate_run_id = 2 AND row = 7",
    "UPDATE reviews SET reason = 'fine' WHERE gate_run_id = 2 AND row = 7",
    "UPDATE events SET payload = replace(payload, '\"rejected\"', '\"approved\"')"
    " WHERE seq = (SELECT MAX(seq) FROM events)",
])
def test_ledger_verify_detects_tampering_with_a_carried_decision(decided, sql):
    tmp, led, p, _ = decided
    assert gate(led, p, policy(), by="ci").run_id == 2
    assert ledger_check(led).ok
    con = sqlite3.connect(led.path)
    con.execute(sql)
    con.commit()
    con.close()
    assert not ledger_check(led).ok


def test_a_carry_that_copies_no_real_decision_is_reported(decided):
    """Even written through the ledger API with a valid chain, a carry must point at a person's decision."""
    tmp, led, p, run1 = decided
    res = gate(led, p, policy(review={"carry_over": False}), by="ci")
    with led.transaction():
        fake = {"gate_run": run1, "row": 3, "leaf": items(led, res.run_id)[0]["leaf"], "decided_by": "bob",
                "decided_at": "2026-01-01T00:00:00", "status": "approved", "reason": "benign mention",
                "gate_run_id": run1, "event_seq": 1}
        led.carry_decision(res.run_id, 3, fake)
    problems = ledger_check(led).problems
    assert any("no person's decision" in p["problem"] for p in problems), problems
