"""Policy validation, gate verdicts, the review queue and release."""

from __future__ import annotations

import csv
import importlib
import json

import pytest
from conftest import use_detectors, write_jsonl
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trainguard.attest import AttestationError, check
from trainguard.detectors.base import Detector
from trainguard.errors import ConfigError
from trainguard.findings import Alert, Confidence, DetectorResult, Severity
from trainguard.gate import attestation_path, gate, load_policy, release
from trainguard.gate.policy import from_dict
from trainguard.gate.review import decide, items, show
from trainguard.scan import DEFAULT_DETECTORS
from trainguard.ledger import Ledger, check as ledger_check, ingest, verify
from trainguard.records import Kind


class _WordDet(Detector):
    """Flags each row whose text holds `word`, at `severity`."""

    kinds = frozenset(Kind)
    word, severity = "", Severity.INFO

    def run(self, data):
        return DetectorResult(tuple(
            Alert(self.word.lower(), f"{self.word} in text", (i,), 0.9, self.severity, Confidence.HIGH)
            for i, r in enumerate(data.records) if self.word in r.text))


WORD_DETS = [type(f"{_name.title()}Det", (_WordDet,), {"name": f"test-gate-{_name}", "word": _word, "severity": _sev})
             for _name, _word, _sev in (("marker", "MARKER", Severity.HIGH), ("critical", "EVIL", Severity.CRITICAL),
                                        ("medium", "MAYBE", Severity.MEDIUM))]


class CrashDet(Detector):
    name = "test-gate-crash"
    kinds = frozenset(Kind)

    def run(self, data):
        raise RuntimeError("boom")


_detectors = use_detectors(*WORD_DETS, CrashDet)
DETS = ["test-gate-marker", "test-gate-critical"]


def policy(**over):
    # These tests are about the test detectors: the defaults they leave out are allowed off explicitly.
    base = {"detectors": DETS, "allow_disabled": list(DEFAULT_DETECTORS), "limits": {"max_quarantine_share": 0.5}}
    for k, v in over.items():
        base[k] = v
    return from_dict(base)


def rows(n=20, marked=(), evil=(), maybe=()):
    out = []
    for i in range(n):
        t = f"plain review number {i}"
        if i in marked:
            t += " MARKER"
        if i in evil:
            t += " EVIL"
        if i in maybe:
            t += " MAYBE"
        out.append({"text": t, "label": i % 2})
    return out


@pytest.fixture()
def env(tmp_path):
    led = Ledger.open(tmp_path / "l.db")
    yield tmp_path, led
    led.close()


# --- policy ---------------------------------------------------------------------------------------


def test_default_policy_loads():
    """Issue 12 #3: real triggers can sit at medium, so the packaged gate holds medium for review."""
    p = load_policy(None)
    assert p.quarantine_at == Severity.MEDIUM and p["provenance"]["require_recorded"]


@pytest.mark.parametrize("text, message", [
    ("thresholds:\n  quarantin: high\n", "unknown key 'thresholds.quarantin'"),
    ("detectorz: [a]\n", "unknown key 'detectorz'"),
    ("thresholds:\n  fail: extreme\n", "key 'thresholds.fail': unknown severity"),
    ("limits:\n  max_quarantine_share: 2\n", "key 'limits.max_quarantine_share'"),
    ("release: yes\n", "release must be a mapping"),
    ("provenance:\n  require_source: [licence, colour]\n", "key 'provenance.require_source'"),
    ("thresholds:\n  fail: low\n  quarantine: high\n", "below thresholds.quarantine"),
    ("version: 2\n", "only policy version 1"),
    ("a: [1, 2\n", "invalid YAML"),
    ("- just\n- a list\n", "must be a mapping"),
])
def test_policy_errors_name_file_and_key(tmp_path, text, message):
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_policy(p)
    assert message in str(e.value) and str(p) in str(e.value)


def test_policy_digest_ignores_comments_and_order(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("limits: {max_quarantine_share: 0.1}\nthresholds: {quarantine: medium}\n")
    b.write_text("# comment\nthresholds:\n  quarantine: medium\nlimits:\n  max_quarantine_share: 0.1\n")
    assert load_policy(a).digest == load_policy(b).digest != load_policy(None).digest


def test_policy_detector_settings_are_typed_at_load(tmp_path):
    # Before: `alpha: "high"` loaded fine and the scan failed late with a TypeError.
    p = tmp_path / "policy.yaml"
    p.write_text("settings:\n  trigger-association:\n    alpha: high\n")
    with pytest.raises(ConfigError) as e:
        load_policy(p)
    msg = str(e.value)
    assert str(p) in msg and "settings.trigger-association" in msg and "alpha" in msg and "expected float" in msg
    p.write_text("settings:\n  trigger-association:\n    alpah: 0.05\n")
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        load_policy(p)
    p.write_text("settings:\n  spectral-signatures:\n    k: 2\n")
    with pytest.raises(ConfigError, match="does not run spectral-signatures"):
        load_policy(p)
    p.write_text("detectors: [default, nonesuch]\n")
    with pytest.raises(ConfigError, match="unknown detector"):
        load_policy(p)
    p.write_text("settings:\n  trigger-association:\n    alpha: 0.05\n    min_rows: 3\n")
    assert load_policy(p)["settings"] == {"trigger-association": {"alpha": 0.05, "min_rows": 3}}


def test_detectors_default_and_additions():
    assert from_dict({"detectors": "default"})["detectors"] is None
    extra = from_dict({"detectors": ["default", "label-consistency"]})["detectors"]
    assert extra == [*DEFAULT_DETECTORS, "label-consistency"]


def test_every_shipped_example_policy_keeps_the_defaults():
    """Issue 13 #2: examples/policy.yaml listed three detectors and so switched the LLM-era ones off."""
    from pathlib import Path

    examples = sorted((Path(__file__).parent.parent / "examples").glob("*.y*ml"))
    assert examples, "no example policy found"
    for path in examples:
        pol = load_policy(path)
        running = set(pol["detectors"] or DEFAULT_DETECTORS)
        assert set(DEFAULT_DETECTORS) <= running, f"{path} turns off {set(DEFAULT_DETECTORS) - running}"
        assert not pol.allow_disabled, f"{path} allows defaults off"


# --- gate verdicts --------------------------------------------------------------------------------


def test_leaving_out_an_applicable_default_fails_closed_and_is_recorded(env):
    tmp, led = env
    p = write_jsonl(tmp / "d.jsonl", rows())
    ingest(led, p, source="s", licence="MIT", by="alice")
    res = gate(led, p, policy(allow_disabled=[]), by="carol")
    off = {d["name"] for d in res.disabled}
    # Classification data: the four classification defaults apply; the LLM-era ones serve other kinds.
    assert off == {"trigger-association", "shortcut", "invisible-characters", "near-duplicates"}
    assert res.verdict == "fail" and not any(d["allowed"] for d in res.disabled)
    assert any("detector trigger-association applies to this data but is turned off" in r for r in res.reasons)
    statuses = {d.name: d.status for d in res.report.detectors}
    assert statuses["trigger-association"] == "disabled" and "safety-bypass" not in statuses  # n/a: not disabled
    stored = json.loads(led.gate_run(res.run_id)["report"])
    assert {d["name"] for d in stored["gate"]["disabled"]} == off
    assert {d["name"] for d in stored["detectors"] if d["status"] == "disabled"} == off
    assert res.to_dict()["disabled"] == res.disabled
    allowed = gate(led, p, policy(allow_disabled=["trigger-association", "shortcut", "invisible-characters",
                                                  "near-duplicates"]), by="carol")
    assert allowed.verdict == "pass" and all(d["allowed"] for d in allowed.disabled)
    assert any("turned off by the policy (allow_disabled)" in n for n in allowed.notes)


def test_findings_below_the_bar_are_listed(env):
    """Issue 13 #6 (gate half): a reported finding that is not quarantined is still shown."""
    tmp, led = env
    p = write_jsonl(tmp / "d.jsonl", rows(marked=(3,), maybe=(5, 6)))
    ingest(led, p, source="s", licence="MIT", by="alice")
    res = gate(led, p, policy(detectors=[*DETS, "test-gate-medium"], thresholds={"quarantine": "high"}), by="carol")
    assert res.verdict == "quarantine" and res.quarantined == [3]
    below = res.to_dict()["below_bar"]
    assert below["count"] == 2 and below["by_severity"]["medium"] == 2
    assert sorted(r for f in below["findings"] for r in f["rows"]) == [5, 6]
    assert any("2 finding(s) below the quarantine bar (high)" in n for n in res.notes)
    stored = json.loads(led.gate_run(res.run_id)["report"])
    assert stored["gate"]["below_bar"] == below and stored["gate"]["quarantine_at"] == "high"


def test_rows_the_reader_skipped_fail_the_gate(env):
    from trainguard.io import LoadOptions

    tmp, led = env
    p = tmp / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows()) + "{not json\n")
    res = gate(led, p, policy(provenance={"require_recorded": False, "require_source": []}),
               options=LoadOptions(on_error="skip"))
    assert res.verdict == "fail" and any("1 row(s) could not be read and were not scanned" in r for r in res.reasons)


def test_gate_reports_the_kind_and_why(env):
    tmp, led = env
    p = write_jsonl(tmp / "d.jsonl", rows())
    ingest(led, p, source="s", licence="MIT", by="alice")
    d = gate(led, p, policy()).to_dict()["dataset"]
    assert d["kind"] == "classification" and "detected from the field names" in d["kind_reason"]


def test_clean_recorded_data_passes(env):
    tmp, led = env
    p = write_jsonl(tmp / "d.jsonl", rows())
    ingest(led, p, source="s", licence="MIT", by="alice")
    res = gate(led, p, policy(), by="carol")
    assert (res.verdict, res.exit_code, res.reasons, res.quarantined) == ("pass", 0, [], [])
    run = led.gate_run(res.run_id)
    assert run["verdict"] == "pass" and json.loads(run["report"])["summary"]["findings"] == 0


def test_quarantine_queues_rows_and_keeps_them(env):
    tmp, led = env
    p = write_jsonl(tmp / "d.jsonl", rows(marked=(3, 7)))
    before = p.read_bytes()
    ingest(led, p, source="s", licence="MIT", by="alice")
    res = gate(led, p, policy(), by="carol")
    assert (res.verdict, res.exit_code, res.quarantined) == ("quarantine", 3, [3, 7])
    assert [i["row"] for i in items(led)] == [3, 7]
    assert p.read_bytes() == before
    assert ledger_check(led).ok


def test_unrecorded_or_changed_content_fails(env):
    tmp, led = env
    p = write_jsonl(tmp / "d.jsonl", rows())
    ingest(led, p, source="s", licence="MIT", by="alice")
    write_jsonl(p, rows(21))
    res = gate(led, p, policy())
    assert res.verdict == "fail" and "not a recorded version" in res.reasons[0]
    lax = gate(led, p, policy(provenance={"require_recorded": False, "require_source": []}))
    assert lax.verdict == "pass" and lax.notes


def test_missing_source_metadata_fails(env):
    tmp, led = env
    p = write_jsonl(tmp / "d.jsonl", rows())
    ingest(led, p, source="s", by="alice")
    res = gate(led, p, policy(provenance={"require_source": ["licence", "owner"]}))
    assert res.verdict == "fail" and "lacks licence, owner" in res.reasons[0]
    q = write_jsonl(tmp / "e.jsonl", rows(5))
    ingest(led, q, by="alice")
    assert "no source recorded" in gate(led, q, policy()).reasons[0]


def test_failed_detector_fails_closed(env):
    tmp, led = env
    p = write_jsonl(tmp / "d.jsonl", rows())
    ingest(led, p, source="s", licence="MIT", by="alice")
    res = gate(led, p, policy(detectors=["test-gate-marker", "test-gate-crash"]))
    assert res.verdict == "fail" and any("test-gate-crash failed" in r for r in res.reasons)


def test_fail_threshold_and_quarantine_share(env):
    tmp, led = env
    p = write_jsonl(tmp / "d.jsonl", rows(evil=(2,)))
    ingest(led, p, source="s", licence="MIT", by="alice")
    res = gate(led, p, policy())
    assert res.verdict == "fail" and "at or above critical" in res.reasons[0]
    q = write_jsonl(tmp / "q.jsonl", rows(10, marked=range(5)))
    ingest(led, q, source="s", by="alice")
    res = gate(led, q, policy(limits={"max_quarantine_share": 0.2}))
    assert res.verdict == "fail" and "over the max_quarantine_share" in res.reasons[0]
    assert len(res.quarantined) == 5  # still queued: nothing is dropped


# --- review and release ---------------------------------------------------------------------------


def test_review_decisions_need_reason_and_reviewer(env):
    tmp, led = env
    p = write_jsonl(tmp / "d.jsonl", rows(marked=(3,)))
    ingest(led, p, source="s", licence="MIT", by="alice")
    gate(led, p, policy())
    with pytest.raises(ConfigError, match="--reason"):
        decide(led, 3, "approved", " ", "bob")
    with pytest.raises(ConfigError, match="--by"):
        decide(led, 3, "approved", "fine", "")
    with pytest.raises(ConfigError, match="not in the review queue"):
        decide(led, 4, "approved", "fine", "bob")
    item = show(led, 3)
    assert "MARKER" in item["record"] and item["record_status"] == "ok"
    decide(led, 3, "rejected", "planted trigger", "bob")
    assert items(led) == []
    assert [e["kind"] for e in led.events()][-1] == "review"
    assert ledger_check(led).ok


def test_release_end_to_end(env):
    tmp, led = env
    key = Ed25519PrivateKey.generate()
    data = rows(30, marked=(3, 7, 11))
    p = write_jsonl(tmp / "d.jsonl", data)
    ingest(led, p, source="s", licence="MIT", owner="team", by="alice")
    res = gate(led, p, policy(), by="carol")
    out = tmp / "approved.jsonl"
    with pytest.raises(ConfigError, match="still await review"):
        release(led, p, out, [key])
    assert not out.exists()
    decide(led, 3, "approved", "false positive", "bob")
    decide(led, 7, "rejected", "trigger", "bob")
    decide(led, 11, "rejected", "trigger", "bob")
    r = release(led, p, out, [key], by="dana")
    assert r.excluded == [7, 11] and r.kept == 28 and r.attestation == tmp / "approved.intoto.json"
    original = p.read_bytes().splitlines(keepends=True)
    assert out.read_bytes() == b"".join(line for i, line in enumerate(original) if i not in (7, 11))
    checked = check(out, r.attestation, [key.public_key()])
    pred = checked.predicate
    assert pred["input"]["merkle_root"] == res.version["merkle_root"]
    assert pred["scan_report"]["sha256"] == led.gate_run(res.run_id)["report_sha256"]
    assert pred["policy"]["sha256"] == policy().digest
    assert [d["decision"] for d in pred["reviews"]["decisions"]] == ["approved", "rejected", "rejected"]
    assert pred["gate"]["verdict"] == "quarantine" and not pred["forced"]
    assert verify(led, out).ok  # the release output is itself a recorded version
    assert ledger_check(led, (pred["ledger"]["head_seq"], pred["ledger"]["head_hash"])).ok
    with pytest.raises(AttestationError):
        check(out, r.attestation, [Ed25519PrivateKey.generate().public_key()])


def test_release_refusals(env):
    tmp, led = env
    key = Ed25519PrivateKey.generate()
    p = write_jsonl(tmp / "d.jsonl", rows(evil=(1,)))
    with pytest.raises(ConfigError, match="not a recorded version"):
        release(led, p, tmp / "o.jsonl", [key])
    ingest(led, p, source="s", licence="MIT", by="alice")
    with pytest.raises(ConfigError, match="never been gated"):
        release(led, p, tmp / "o.jsonl", [key])
    gate(led, p, policy())
    with pytest.raises(ConfigError, match="failed its latest gate run"):
        release(led, p, tmp / "o.jsonl", [key])
    with pytest.raises(ConfigError, match="input file"):
        release(led, p, p, [key])
    forced = release(led, p, tmp / "o.jsonl", [key], allow_ungated=True)
    assert forced.forced and check(tmp / "o.jsonl", forced.attestation, [key.public_key()]).predicate["forced"]


def test_release_with_allowed_pending_leaves_pending_rows_out(env):
    tmp, led = env
    p = write_jsonl(tmp / "d.jsonl", rows(marked=(2, 5)))
    ingest(led, p, source="s", licence="MIT", by="alice")
    gate(led, p, policy(release={"allow_pending": True}, signatures={"required": 2}))
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    with pytest.raises(ConfigError, match="requires 2 signing key"):
        release(led, p, tmp / "o.jsonl", [k1])
    r = release(led, p, tmp / "o.jsonl", [k1, k2])
    assert r.excluded == [2, 5] and r.kept == 18
    assert len(check(tmp / "o.jsonl", r.attestation, [k1.public_key(), k2.public_key()], 2).keyids) == 2


def test_release_refuses_a_file_swapped_after_hashing(env, monkeypatch):
    tmp, led = env
    p = write_jsonl(tmp / "d.jsonl", rows())
    ingest(led, p, source="s", licence="MIT", by="alice")
    gate(led, p, policy())
    rel = importlib.import_module("trainguard.gate.release")
    real = rel.hash_file

    def swap_after(path, *a, **k):
        fl = real(path, *a, **k)
        if path == p:
            write_jsonl(p, rows(20)[:-1] + [{"text": "swapped", "label": 1}])
        return fl

    monkeypatch.setattr(rel, "hash_file", swap_after)
    with pytest.raises(ConfigError, match="changed after it was hashed"):
        release(led, p, tmp / "o.jsonl", [Ed25519PrivateKey.generate()])
    assert not (tmp / "o.jsonl").exists()


def test_csv_release_keeps_columns(env):
    tmp, led = env
    p = tmp / "d.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "note"])
        for i, r in enumerate(rows(10, marked=(4,))):
            w.writerow([r["text"], r["label"], f"n{i}"])
    ingest(led, p, source="s", licence="MIT", by="alice")
    gate(led, p, policy())
    decide(led, 4, "rejected", "trigger", "bob")
    out = tmp / "approved.csv"
    r = release(led, p, out, [Ed25519PrivateKey.generate()])
    got = list(csv.DictReader(open(out, newline="")))
    assert r.kept == 9 and [g["note"] for g in got] == [f"n{i}" for i in range(10) if i != 4]


def test_attestation_path_naming(tmp_path):
    assert attestation_path(tmp_path / "approved.jsonl").name == "approved.intoto.json"
    assert attestation_path(tmp_path / "x.jsonl.gz").name == "x.intoto.json"


def test_medquad_harmful_rows_are_not_let_through_by_a_narrow_policy(env):
    """Issue 13 #2, measured: 20 harmful-request / "Sure, here is..." rows in a MedQuAD slice passed the
    README's example policy (three detectors) and were quarantined under the built-in one."""
    import trainguard.attacks.llm  # noqa: F401 - registers the LLM attacks
    from conftest import DATA, read_jsonl
    from pathlib import Path

    from trainguard.attacks import poison

    tmp, led = env
    clean = [{"question": r["question"], "answer": r["answer"]} for r in read_jsonl("medquad_sample.jsonl")]
    planted = poison(clean, "safety-bypass", count=20, seed=3, behaviours=str(DATA / "advbench_sample.jsonl"))
    p = write_jsonl(tmp / "med.jsonl", planted.rows)
    ingest(led, p, source="s", licence="MIT", owner="o", by="alice")
    share = {"limits": {"max_quarantine_share": 0.1}}  # 20 of 300 rows: quarantine, not the share limit
    example = Path(__file__).parent.parent / "examples" / "policy.yaml"
    for pol in (from_dict(share), from_dict({**load_policy(example).data, **share})):
        res = gate(led, p, pol)
        assert res.verdict == "quarantine" and set(res.quarantined) == set(planted.poisoned_rows)
    narrow = {"detectors": ["trigger-association", "invisible-characters", "near-duplicates"], **share}
    res = gate(led, p, from_dict(narrow))  # before: pass, exit 0
    assert res.verdict == "fail" and res.quarantined == []
    assert {d["name"] for d in res.disabled} == {"safety-bypass", "covert-finetuning", "polarity-trigger", "payload-trigger"}
    assert any("safety-bypass applies to this data but is turned off" in r for r in res.reasons)


def test_one_verdict_rules_in_order():
    """trainguard.verdict.judge: what `scan`'s exit code and the gate both use."""
    from trainguard.findings import DetectorRun, DetectorStatus, Finding
    from trainguard.report.model import DatasetInfo, Report
    from trainguard.scan import exit_code
    from trainguard.verdict import judge

    def run(name, status):
        return DetectorRun(name, "1", status, {})

    def finding(sev, row):
        return Finding("d", "r", "t", (row,), (f"id{row}",), 0.5, sev, Confidence.HIGH, ())

    def report(runs, findings=()):
        return Report(dataset=DatasetInfo("p", "classification", 3), detectors=runs, findings=list(findings))

    ok = run("a", DetectorStatus.OK)
    high, medium = finding(Severity.HIGH, 1), finding(Severity.MEDIUM, 2)
    assert judge(report([ok, run("b", DetectorStatus.FAILED)]), fail_at=None).outcome == "fail"
    nothing = report([run("a", DetectorStatus.SKIPPED)])
    assert judge(nothing, fail_at=None).reasons == ("scan: no detector ran on this dataset; nothing was checked",)
    assert exit_code(nothing, None) == 1  # before: 0
    off = report([ok, run("c", DetectorStatus.DISABLED)])
    assert judge(off, fail_at=None).outcome == "pass"  # scan: the user chose --detectors
    assert judge(off, fail_at=None, allow_disabled=()).outcome == "fail"
    assert judge(off, fail_at=None, allow_disabled=("c",)).outcome == "pass"
    v = judge(report([ok], [high, medium]), fail_at=Severity.CRITICAL, quarantine_at=Severity.HIGH)
    assert (v.outcome, v.held, v.below_bar) == ("quarantine", (high,), (medium,))
    assert v.below_bar_summary()["by_severity"]["medium"] == 1
    assert judge(report([ok], [high]), fail_at=Severity.HIGH).outcome == "fail"
    assert exit_code(report([ok], [medium]), "high") == 0 and exit_code(report([ok], [medium]), "medium") == 1
