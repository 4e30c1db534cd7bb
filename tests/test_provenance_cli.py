"""The provenance commands end to end through the real CLI: exit codes, JSON, audit."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from conftest import cli as tg
from conftest import use_detectors

from trainguard.detectors.base import Detector
from trainguard.findings import Alert, Confidence, DetectorResult, Severity
from trainguard.ledger.ops import default_actor
from trainguard.records import Kind
from trainguard.scan import DEFAULT_DETECTORS


class CliMarker(Detector):
    name = "test-cli-marker"
    kinds = frozenset(Kind)

    def run(self, data):
        return DetectorResult(tuple(
            Alert("marker", "MARKER", (pos,), 0.9, Severity.HIGH, Confidence.HIGH)
            for pos, r in enumerate(data) if "MARKER" in r.text))


_detectors = use_detectors(CliMarker)


@pytest.fixture()
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINGUARD_LEDGER", raising=False)
    rows = [{"text": f"row {i}" + (" MARKER" if i in (2, 9) else ""), "label": i % 2} for i in range(30)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "policy.yaml").write_text("detectors: [test-cli-marker]\nlimits: {max_quarantine_share: 0.5}\n"
                                          f"allow_disabled: [{', '.join(DEFAULT_DETECTORS)}]\n"
                                          "provenance: {require_source: [licence, owner]}\n")
    return tmp_path


def test_full_workflow(work, capsys):
    assert tg(capsys, "keygen", "--out", "keys")[0] == 0
    code, out, _ = tg(capsys, "ingest", "data.jsonl", "--source", "forum", "--licence", "CC-BY-SA-4.0",
                      "--owner", "data-team", "--by", "alice", "-f", "json")
    assert code == 0 and json.loads(out)["records"] == 30
    assert (work / ".trainguard" / "ledger.db").exists()
    code, out, _ = tg(capsys, "verify", "data.jsonl", "-f", "json")
    assert code == 0 and json.loads(out)["ok"] is True
    code, out, _ = tg(capsys, "gate", "data.jsonl", "--policy", "policy.yaml", "--by", "ci", "-f", "json")
    assert code == 3 and json.loads(out)["quarantined_rows"] == [2, 9]
    code, out, _ = tg(capsys, "review", "list", "-f", "json")
    assert [i["row"] for i in json.loads(out)] == [2, 9]
    code, out, _ = tg(capsys, "review", "show", "2")
    assert code == 0 and "MARKER" in out
    assert tg(capsys, "release", "data.jsonl", "--out", "approved.jsonl", "--key", "keys/trainguard.key")[0] == 2
    assert tg(capsys, "review", "approve", "2", "--by", "bob")[0] == 2  # --reason is required
    assert tg(capsys, "review", "approve", "2", "--reason", "benign", "--by", "bob")[0] == 0
    code, out, _ = tg(capsys, "review", "reject", "9", "--reason", "trigger")  # --by defaults to the OS user
    assert code == 0 and f"rejected by {default_actor()}" in out
    code, out, _ = tg(capsys, "release", "data.jsonl", "--out", "approved.jsonl", "--key", "keys/trainguard.key",
                      "-f", "json")
    assert code == 0 and json.loads(out)["excluded_rows"] == [9]
    code, out, _ = tg(capsys, "check-attestation", "approved.jsonl", "approved.intoto.json",
                      "--trusted-key", "keys/trainguard.pub", "-f", "json")
    assert code == 0 and json.loads(out)["records"] == 29
    assert tg(capsys, "keygen", "--out", "other")[0] == 0
    code, out, _ = tg(capsys, "check-attestation", "approved.jsonl", "approved.intoto.json",
                      "--trusted-key", "other/trainguard.pub", "-f", "json")
    assert code == 1 and "none of which is trusted" in json.loads(out)["reason"]
    code, out, _ = tg(capsys, "audit", "-f", "json")
    res = json.loads(out)
    assert code == 0, res["findings"]
    by_name = {d["dataset"]: d for d in res["datasets"]}
    assert {"alice (ingest)", "bob (review)"} <= set(by_name["data.jsonl"]["writers"])
    code, out, _ = tg(capsys, "ledger", "verify", "-f", "json")
    assert code == 0 and json.loads(out)["ok"]
    code, out, _ = tg(capsys, "prove", "5", "--dataset", "data.jsonl")
    assert code == 0 and json.loads(out)["verified"]


def test_verify_reports_changes_with_exit_1(work, capsys):
    assert tg(capsys, "ingest", "data.jsonl", "--by", "alice")[0] == 0
    lines = (work / "data.jsonl").read_text().splitlines(keepends=True)
    lines[4] = lines[4].replace("row 4", "row four")
    lines.insert(10, '{"text": "inserted", "label": 1}\n')
    del lines[20]
    (work / "data.jsonl").write_text("".join(lines))
    code, out, _ = tg(capsys, "verify", "data.jsonl", "--format", "json")
    d = json.loads(out)
    assert code == 1 and (d["modified"], d["inserted"], d["deleted"], d["reordered"], d["ok"]) == \
        ([4], [10], [19], False, False)
    code, out, _ = tg(capsys, "verify", "data.jsonl")
    assert code == 1 and "CHANGED" in out


def test_ledger_path_from_env_and_option(work, capsys, monkeypatch):
    monkeypatch.setenv("TRAINGUARD_LEDGER", str(work / "env.db"))
    assert tg(capsys, "ingest", "data.jsonl", "--by", "a")[0] == 0
    assert (work / "env.db").exists() and not (work / ".trainguard").exists()
    assert tg(capsys, "ingest", "data.jsonl", "--by", "a", "--ledger", work / "opt.db")[0] == 0
    assert (work / "opt.db").exists()
    code, _, err = tg(capsys, "verify", "data.jsonl", "--ledger", work / "none.db")
    assert code == 2 and "no ledger" in err


def test_gate_fail_exit_1_and_bad_policy_exit_2(work, capsys):
    assert tg(capsys, "ingest", "data.jsonl", "--source", "forum", "--by", "a")[0] == 0
    code, out, _ = tg(capsys, "gate", "data.jsonl", "--policy", "policy.yaml")
    assert code == 1 and "lacks licence, owner" in out
    (work / "bad.yaml").write_text("thresholds:\n  quarantine: hgih\n")
    code, _, err = tg(capsys, "gate", "data.jsonl", "--policy", "bad.yaml")
    assert code == 2 and "bad.yaml" in err and "thresholds.quarantine" in err


def test_audit_answers_the_three_questions(work, capsys):
    assert tg(capsys, "ingest", "data.jsonl", "--source", "forum", "--licence", "MIT", "--by", "alice")[0] == 0
    os.chmod(work / "data.jsonl", 0o666)
    code, out, _ = tg(capsys, "audit", "-f", "json")
    res = json.loads(out)
    msgs = {(f["question"], f["message"].split(" (")[0]) for f in res["findings"]}
    assert code == 1
    assert ("provenance", "source 'forum'") in msgs
    assert any(q == "write-access" and "world-writable" in m for q, m in msgs)
    assert ("review-step", "data.jsonl@1 was ingested but never gated") in msgs
    os.chmod(work / "data.jsonl", 0o640)
    os.chmod(work / ".trainguard" / "ledger.db", 0o660)
    res = json.loads(tg(capsys, "audit", "-f", "json")[1])
    assert any("ledger file" in f["message"] and "group-writable" in f["message"] for f in res["findings"])
    assert not any("world-writable" in f["message"] for f in res["findings"])
    code, out, _ = tg(capsys, "audit")
    assert code == 1 and "never gated" in out


def test_forced_release_is_flagged_by_audit(work, capsys):
    tg(capsys, "keygen", "--out", "keys")
    tg(capsys, "ingest", "data.jsonl", "--source", "forum", "--licence", "MIT", "--owner", "o", "--by", "alice")
    code, _, err = tg(capsys, "release", "data.jsonl", "--out", "o.jsonl", "--key", "keys/trainguard.key")
    assert code == 2 and "never been gated" in err
    code, _, err = tg(capsys, "release", "data.jsonl", "--out", "o.jsonl", "--key", "keys/trainguard.key",
                      "--allow-ungated")
    assert code == 0 and "warning" in err
    res = json.loads(tg(capsys, "audit", "-f", "json")[1])
    assert any("without a gate pass" in f["message"] for f in res["findings"])


def test_ledger_verify_detects_tampering(work, capsys):
    import sqlite3

    tg(capsys, "ingest", "data.jsonl", "--source", "forum", "--licence", "MIT", "--by", "alice")
    con = sqlite3.connect(work / ".trainguard" / "ledger.db")
    con.execute("UPDATE events SET actor = 'mallory' WHERE seq = 2")
    con.commit()
    con.close()
    code, out, _ = tg(capsys, "ledger", "verify")
    assert code == 1 and "TAMPERED" in out and "event 2" in out


def test_keygen_prints_keyid_and_protects_private_key(work, capsys):
    code, out, _ = tg(capsys, "keygen", "--out", "k", "--name", "ci")
    assert code == 0 and len(out.strip()) == 64
    assert stat.S_IMODE((work / "k" / "ci.key").stat().st_mode) == 0o600
    assert tg(capsys, "keygen", "--out", "k", "--name", "ci")[0] == 2


def test_installed_entry_point_exit_codes(work):
    exe = os.path.join(os.path.dirname(sys.executable), "trainguard")
    if not os.path.exists(exe):
        pytest.skip("trainguard console script not installed")
    r = subprocess.run([exe, "verify", "data.jsonl"], capture_output=True, text=True, cwd=work)
    assert r.returncode == 2 and "no ledger" in r.stderr and "Traceback" not in r.stderr
    for cmd in (["--help"], ["review", "--help"], ["ledger", "--help"], ["check-attestation", "--help"]):
        assert subprocess.run([exe, *cmd], capture_output=True, cwd=work).returncode == 0


def test_text_from_users_and_data_is_printed_as_text_not_markup(work, capsys):
    """A reviewer's reason or a file name with rich markup in it is shown as typed (`[/b]` used to crash)."""
    (work / "[red]x.jsonl").write_text((work / "data.jsonl").read_text())
    assert tg(capsys, "ingest", "[red]x.jsonl", "--source", "forum", "--licence", "MIT", "--owner", "o",
              "--by", "alice")[0] == 0
    code, out, _ = tg(capsys, "gate", "[red]x.jsonl", "--policy", "policy.yaml", "--by", "ci")
    assert code == 3 and "[red]x.jsonl" in out
    assert tg(capsys, "review", "reject", "9", "--reason", "[/b] [bold]trigger[/bold] :smile:", "--by", "bob")[0] == 0
    code, out, err = tg(capsys, "review", "list")
    assert code == 0 and "Traceback" not in err
    code, out, err = tg(capsys, "review", "show", "9")
    assert code == 0 and "[/b] [bold]trigger[/bold] :smile:" in out


def test_gate_twice_carries_review_decisions_and_shows_their_origin(work, capsys):
    assert tg(capsys, "ingest", "data.jsonl", "--source", "forum", "--licence", "MIT", "--owner", "o",
              "--by", "alice")[0] == 0
    assert tg(capsys, "gate", "data.jsonl", "--policy", "policy.yaml", "--by", "ci")[0] == 3
    assert tg(capsys, "review", "approve", "2", "--reason", "benign", "--by", "bob")[0] == 0
    assert tg(capsys, "review", "reject", "9", "--reason", "trigger", "--by", "bob")[0] == 0
    code, out, _ = tg(capsys, "gate", "data.jsonl", "--policy", "policy.yaml", "--by", "ci", "-f", "json")
    res = json.loads(out)
    assert code == 0 and res["verdict"] == "pass" and res["quarantined_rows"] == []
    assert (res["carried"]["count"], res["carried"]["approved"], res["carried"]["rejected"]) == (2, 1, 1)
    code, out, _ = tg(capsys, "gate", "data.jsonl", "--policy", "policy.yaml", "--by", "ci")
    assert code == 0 and "2 decision(s) carried over (1 approved, 1 rejected)" in out
    code, out, _ = tg(capsys, "review", "list", "--run", "2", "--all", "-f", "json")
    assert [(i["row"], i["status"], i["carried_from"]["gate_run"]) for i in json.loads(out)] == [
        (2, "approved", 1), (9, "rejected", 1)]
    code, out, _ = tg(capsys, "review", "show", "9", "--run", "3")
    assert code == 0 and "decided by bob" in out and "carried over by the gate from gate run 1 row 9" in out
    assert tg(capsys, "ledger", "verify")[0] == 0
    code, out, _ = tg(capsys, "audit", "-f", "json")
    assert code == 0 and "bob (review)" in json.loads(out)["datasets"][0]["writers"]
    (work / "off.yaml").write_text((work / "policy.yaml").read_text() + "review: {carry_over: false}\n")
    code, out, _ = tg(capsys, "gate", "data.jsonl", "--policy", "off.yaml", "--by", "ci", "-f", "json")
    assert code == 3 and json.loads(out)["quarantined_rows"] == [2, 9]
