"""`trainguard scan` / `detectors` end to end: exit codes, formats, settings, bad input."""

from __future__ import annotations

import json
import random

import pytest
from conftest import DATA, cli, read_jsonl



@pytest.fixture(scope="module")
def poisoned_file(tmp_path_factory):
    rows = read_jsonl("sst2_sample.jsonl")
    rng = random.Random(4)
    for i in rng.sample([i for i, r in enumerate(rows) if r["label"] == 0], 30):
        words = rows[i]["text"].split()
        words.insert(rng.randint(0, len(words)), "qzx")
        rows[i] = {"text": " ".join(words), "label": 1}
    path = tmp_path_factory.mktemp("scan") / "poisoned.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_clean_file_exits_zero(capsys):
    code, _, _ = cli(capsys, "scan", str(DATA / "sst2_sample.jsonl"), "--quiet")
    assert code == 0


def test_poisoned_file_exits_one_and_json_names_rows(capsys, poisoned_file):
    code, out, _ = cli(capsys, "scan", str(poisoned_file), "--format", "json", "--quiet")
    assert code == 1
    report = json.loads(out)
    top = report["findings"][0]
    assert top["detector"] == "trigger-association" and top["evidence"]["trigger"] == "qzx"
    assert len(top["rows"]) == 30 and report["summary"]["max_severity"] == "high"


def test_fail_on_none_and_critical_exit_zero(capsys, poisoned_file):
    assert cli(capsys, "scan", str(poisoned_file), "--fail-on", "critical", "-q")[0] == 0
    assert cli(capsys, "scan", str(poisoned_file), "--fail-on", "none", "-q")[0] == 0


def test_settings_reach_the_detector(capsys, poisoned_file):
    code, out, _ = cli(capsys, "scan", str(poisoned_file), "-f", "json", "-q",
                        "--set", "trigger-association.min_rows=40", "--detectors", "trigger-association")
    report = json.loads(out)
    assert report["detectors"][0]["settings"]["min_rows"] == 40
    assert report["findings"] == [] and code == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "trigger-association.nope=1"], "no setting 'nope'"),
    (["--set", "trigger-association.min_rows=many"], "expected a int"),
    (["--set", "justtext"], "DETECTOR.KEY=VALUE"),
    (["--detectors", "no-such-detector"], "unknown detector"),
    (["--format", "xml"], "--format"),
    (["--kind", "images"], "unknown kind"),
    (["--field", "colour=text"], "unknown role"),
    (["--fail-on", "apocalyptic"], "unknown severity"),
])
def test_bad_usage_exits_two_with_a_clear_message(capsys, args, message):
    code, _, err = cli(capsys, "scan", str(DATA / "sst2_sample.jsonl"), "-q", *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_bad_row_fails_or_is_skipped_and_listed(capsys, tmp_path):
    path = tmp_path / "bad.jsonl"
    good = [json.dumps({"text": f"row {i}", "label": i % 2}) for i in range(10)]
    path.write_text("\n".join(good[:3] + ['{"text": "broken", "label": '] + good[3:]) + "\n")
    code, _, err = cli(capsys, "scan", str(path), "-q")
    assert code == 2 and "line 4" in err and "row 3" in err
    code, out, _ = cli(capsys, "scan", str(path), "-q", "--on-error", "skip", "-f", "json")
    report = json.loads(out)
    assert report["dataset"]["records"] == 10
    assert [s["row"] for s in report["dataset"]["skipped"]] == [3]


def test_detectors_lists_builtins(capsys):
    code, out, _ = cli(capsys, "detectors", "--format", "json")
    names = {d["name"] for d in json.loads(out)}
    assert {"trigger-association", "invisible-characters", "near-duplicates"} <= names and code == 0
