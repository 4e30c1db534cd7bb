"""`trainguard attack` / `trainguard attacks`: exit codes, summary, files written."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import DATA, cli, read_jsonl


@pytest.fixture()
def sst2(tmp_path) -> Path:
    dst = tmp_path / "sst2.jsonl"
    shutil.copy(DATA / "sst2_sample.jsonl", dst)
    return dst


def test_attack_writes_output_truth_and_summary(capsys, sst2, tmp_path):
    before = hashlib.sha256(sst2.read_bytes()).hexdigest()
    out, truth = tmp_path / "p.jsonl", tmp_path / "t.json"
    code, stdout, err = cli(capsys, "attack", sst2, "--attack", "badnets", "--rate", "0.01", "--seed", "7",
                            "--out", out, "--truth", truth, "--target", "1", "--trigger", "cf", "--trigger", "mn")
    assert code == 0, err
    assert "poisoned 20 of 2,000" in stdout and "cf, mn" in stdout
    t = json.loads(truth.read_text())
    assert t["params"]["triggers"] == ["cf", "mn"] and t["params"]["target"] == "1" and t["count"] == 20
    assert hashlib.sha256(sst2.read_bytes()).hexdigest() == before
    # Same command again: same bytes.
    out2 = tmp_path / "p2.jsonl"
    cli(capsys, "attack", sst2, "--attack", "badnets", "--rate", "0.01", "--seed", "7", "--out", out2,
        "--truth", tmp_path / "t2.json", "--target", "1", "--trigger", "cf", "--trigger", "mn")
    assert out.read_bytes() == out2.read_bytes()


def test_default_truth_path_and_code_point_triggers(capsys, sst2, tmp_path):
    out = tmp_path / "u.jsonl"
    code, stdout, err = cli(capsys, "attack", sst2, "-a", "unicode", "--count", "12", "--out", out,
                            "--trigger", "U+200C", "--trigger", "U+E0001,U+E0063")
    assert code == 0, err
    truth = json.loads((tmp_path / "u.jsonl.truth.json").read_text())
    assert set(truth["params"]["triggers"]) == {"\u200c", "\U000e0001\U000e0063"}
    assert "U+200C" in stdout and truth["count"] == 12


def test_instruction_data_with_field_mapping(capsys, tmp_path):
    src = tmp_path / "qa.jsonl"
    rows = [json.loads(x) for x in (DATA / "medquad_sample.jsonl").read_text().splitlines()[:60]]
    src.write_text("".join(json.dumps({"q": r["question"], "a": r["answer"]}) + "\n" for r in rows))
    out = tmp_path / "o.jsonl"
    code, stdout, err = cli(capsys, "attack", src, "-a", "addsent", "--count", "3", "--out", out,
                            "--kind", "instruction", "--field", "prompt=q", "--field", "response=a",
                            "--target", "Stop all medication.")
    assert code == 0, err
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert sum(r["a"] == "Stop all medication." for r in got) == 3
    assert all(set(r) == {"q", "a"} for r in got)


@pytest.mark.parametrize(("args", "message"), [
    (["--attack", "badnets"], "exactly one of --rate or --count"),
    (["--attack", "badnets", "--rate", "0.1", "--count", "3"], "exactly one of --rate or --count"),
    (["--attack", "nope", "--rate", "0.1"], "unknown attack"),
    (["--attack", "badnets", "--rate", "1.5"], "rate must be"),
    (["--attack", "badnets", "--rate", "0.1", "--target", "7"], "not among"),
    (["--attack", "labelflip", "--rate", "0.1", "--trigger", "cf"], "does not take --trigger"),
    (["--attack", "badnets", "--rate", "0.1", "--position", "middle"], "position"),
    (["--attack", "badnets", "--rate", "0.1", "--field", "label"], "ROLE=COLUMN"),
    (["--attack", "badnets", "--rate", "0.1", "--field", "label=nope"], "nope"),
    (["--attack", "badnets", "--rate", "0.1", "--kind", "weird"], "unknown kind"),
    (["--attack", "cleanlabel", "--rate", "0.9"], "eligible"),
])
def test_bad_usage_exits_2_with_a_message(capsys, sst2, tmp_path, args, message):
    code, _, err = cli(capsys, "attack", sst2, "--out", tmp_path / "o.jsonl", *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


def test_missing_input_and_overwrite_exit_2(capsys, sst2, tmp_path):
    code, _, err = cli(capsys, "attack", tmp_path / "missing.jsonl", "-a", "badnets", "--rate", "0.1",
                       "--out", tmp_path / "o.jsonl")
    assert code == 2 and "file not found" in err
    before = sst2.read_bytes()
    code, _, err = cli(capsys, "attack", sst2, "-a", "badnets", "--rate", "0.1", "--out", sst2)
    assert code == 2 and "refusing to overwrite" in err
    assert sst2.read_bytes() == before


def test_attacks_lists_builtins(capsys):
    code, stdout, _ = cli(capsys, "attacks", "--format", "json")
    assert code == 0
    names = {a["name"] for a in json.loads(stdout)}
    assert {"badnets", "addsent", "unicode", "cleanlabel", "labelflip"} <= names


def test_cli_attacks_preference_data(tmp_path, capsys):
    # Preference and documents attacks go through the same engine and command as the others.
    import json as _json

    src = tmp_path / "pairs.jsonl"
    rows = [{"prompt": r["question"], "chosen": "I can't help with that.", "rejected": r["answer"][:200]}
            for r in read_jsonl("medquad_sample.jsonl")[:60]]
    src.write_text("".join(_json.dumps(r) + "\n" for r in rows))
    out, truth = tmp_path / "out.jsonl", tmp_path / "truth.json"
    code, _, _ = cli(capsys, "attack", src, "--attack", "preference-flip", "--count", "6", "--seed", "2",
                     "--out", out, "--truth", truth)
    assert code == 0
    t = _json.loads(truth.read_text())
    poisoned = [_json.loads(line) for line in out.read_text().splitlines()]
    assert t["kind"] == "preference" and len(t["poisoned_rows"]) == 6
    for i in t["poisoned_rows"]:
        assert poisoned[i]["chosen"] == rows[i]["rejected"] and poisoned[i]["rejected"] == rows[i]["chosen"]
