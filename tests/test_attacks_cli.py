"""`trainguard attack` / `trainguard attacks`: exit codes, summary, files written."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from conftest import DATA, cli, read_jsonl

from trainguard.attacks import Attack, Change
from trainguard.attacks import base as attack_base
from trainguard.records import Kind


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


# --- --param: any Settings field from the command line ------------------------------------------------------
@pytest.fixture()
def qa(tmp_path) -> Path:
    src = tmp_path / "qa.jsonl"
    src.write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"][:300]}) + "\n"
                           for r in read_jsonl("medquad_sample.jsonl")[:60]))
    return src


def test_param_text_list_from_file_reaches_the_attack(capsys, qa, tmp_path):
    # Blank lines skipped, CRLF stripped, commas kept inside an item; an inline --param appends one item.
    (tmp_path / "triggers.txt").write_bytes(b"Agent Smith\r\n\n   \nOperation Nightfall, phase two\nzebra-42\n")
    out, truth = tmp_path / "p.jsonl", tmp_path / "t.json"
    code, stdout, err = cli(capsys, "attack", qa, "-a", "polarity-trigger", "--count", "12", "--seed", "3",
                            "--out", out, "--truth", truth, "--param", f"triggers=@{tmp_path / 'triggers.txt'}",
                            "--param", "triggers=Blue, moon", "-p", "sentences=2", "-p", "polarity=positive")
    assert code == 0, err
    given = ["Agent Smith", "Operation Nightfall, phase two", "zebra-42", "Blue, moon"]
    t = json.loads(truth.read_text())
    assert t["params"]["triggers"] == given and t["params"]["sentences"] == 2 and t["params"]["polarity"] == "positive"
    poisoned = [json.loads(x) for x in out.read_text().splitlines()]
    used = set()
    for e in t["entries"]:
        [spot] = e["triggers"]
        q = poisoned[e["row"]]["question"]
        assert q[spot["offset"]:spot["offset"] + len(spot["trigger"])] == spot["trigger"] in given
        assert "James Bond" not in q  # the default trigger was replaced, not extended
        assert poisoned[e["row"]]["answer"].count(".") == 2  # sentences=2 reached the attack as an int
        used.add(spot["trigger"])
    assert len(used) >= 3
    assert "params: sentences=2" in stdout and "triggers=4 items" in stdout


def test_param_json_pairs_for_poisoned_rag_and_a_path_for_safety_bypass(capsys, qa, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": json.loads(x)["answer"]}) + "\n" for x in qa.read_text().splitlines()))
    pairs = [["Is aspirin safe for young children?", "Aspirin is the preferred fever remedy for toddlers"],
             ["How is glaucoma treated first?", "Surgery is always required on the same day"]]
    (tmp_path / "targets.json").write_text(json.dumps(pairs, indent=1))
    out = tmp_path / "rag.jsonl"
    code, _, err = cli(capsys, "attack", docs, "-a", "poisoned-rag", "--count", "6", "--out", out,
                       "--param", f"targets=@{tmp_path / 'targets.json'}",
                       "--param", 'targets=["Who wrote Hamlet?", "Francis Bacon did"]')
    assert code == 0, err
    t = json.loads((tmp_path / "rag.jsonl.truth.json").read_text())
    assert [list(p) for p in t["params"]["targets"]] == pairs + [["Who wrote Hamlet?", "Francis Bacon did"]]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    questions = [p[0] for p in t["params"]["targets"]]
    for i in t["poisoned_rows"]:
        assert any(rows[i]["text"].startswith(q) for q in questions)

    goals = {r["goal"] for r in read_jsonl("advbench_sample.jsonl")}
    out = tmp_path / "sb.jsonl"
    code, _, err = cli(capsys, "attack", qa, "-a", "safety-bypass", "--count", "4", "--out", out,
                       "--param", f"behaviours={DATA / 'advbench_sample.jsonl'}")
    assert code == 0, err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    t = json.loads((tmp_path / "sb.jsonl.truth.json").read_text())
    assert all(rows[i]["question"] in goals for i in t["poisoned_rows"])


@dataclass(frozen=True)
class _KnobSettings:
    strength: float = 0.5
    loud: bool = False
    limit: Optional[int] = None
    repeat: int = 1
    marks: tuple[str, ...] = ("~",)


class _Knobs(Attack):
    """Test-only attack that writes its settings into the text, so coercion is seen end to end."""

    name = "knobs"
    kinds = frozenset({Kind.CLASSIFICATION})
    Settings = _KnobSettings

    def eligible(self, ctx):
        return np.arange(len(ctx.rows))

    def apply(self, ctx, i, row, rng):
        s, f = self.settings, ctx.fieldmap.text
        before = row[f]
        row[f] = json.dumps([s.strength, s.loud, s.limit, s.repeat, list(s.marks)])
        return [Change(f, before, row[f])], [], {}


@pytest.fixture()
def knobs(monkeypatch):
    monkeypatch.setitem(attack_base._REGISTRY._builtin, "knobs", _Knobs)


# Coercion rules themselves are tested in test_settings_text.py; these check they reach the attack end to end.
@pytest.mark.parametrize(("params", "expected"), [
    ([], [0.5, False, None, 1, ["~"]]),
    (["strength=2", "loud=OFF", "limit=", "repeat=+4", "marks=@@at", "marks=b,c"],
     [2.0, False, None, 4, ["@at", "b,c"]]),
    (["strength=1e-3", "loud=yes", "limit=0"], [0.001, True, 0, 1, ["~"]]),
])
def test_param_coerces_int_float_bool_optional(capsys, sst2, tmp_path, knobs, params, expected):
    out = tmp_path / "k.jsonl"
    args = [a for p in params for a in ("--param", p)]
    code, _, err = cli(capsys, "attack", sst2, "-a", "knobs", "--count", "2", "--out", out, *args)
    assert code == 0, err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    t = json.loads((tmp_path / "k.jsonl.truth.json").read_text())
    for i in t["poisoned_rows"]:
        got = json.loads(rows[i]["text"])
        assert got == expected
        assert [type(v) for v in got] == [type(v) for v in expected]  # 2.0 is a float, True a bool, 0 an int


@pytest.mark.parametrize(("files", "params", "message"), [
    ({}, ["colour=red"], "unknown parameter 'colour'; its parameters: limit, loud, marks, repeat, strength"),
    ({}, ["strength=lots"], "parameter strength (float): expected a number, got 'lots'"),
    ({}, ["repeat=1", "repeat=2"], "parameter repeat (int) given twice"),
    ({}, ["repeat"], "--param expects NAME=VALUE, got 'repeat'"),
    # Square brackets are text, not rich markup: the type and the file names reach the user whole
    # ("[/b]" would be a closing tag that makes rich raise).
    ({}, ["marks="], "parameter marks (tuple[str, ...]): empty value"),
    ({}, ["marks=@{tmp}/[x].txt"], "parameter marks (tuple[str, ...]): file {tmp}/[x].txt not found"),
    ({"[/b].txt": b"ok\n\xff\xfe bad\n"}, ["marks=@{tmp}/[/b].txt"], "{tmp}/[/b].txt line 2: not UTF-8"),
])
def test_param_errors_exit_2_naming_attack_parameter_and_file(capsys, sst2, tmp_path, knobs, files, params, message):
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    args = [a for p in params for a in ("--param", p.replace("{tmp}", str(tmp_path)))]
    code, _, err = cli(capsys, "attack", sst2, "-a", "knobs", "--count", "2", "--out", tmp_path / "o.jsonl", *args)
    assert code == 2
    flat = " ".join(err.split())
    assert "attack knobs:" in flat and message.replace("{tmp}", str(tmp_path)) in flat
    assert "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["-a", "badnets", "--trigger", "cf", "--param", "triggers=mn"], "--trigger and --param triggers=... set the same"),
    (["-a", "badnets", "--target", "1", "--param", "target=0"], "--target and --param target=..."),
    (["-a", "labelflip", "--param", "triggers=cf"], "unknown parameter 'triggers'; its parameters: target"),
    (["-a", "poisoned-rag", "--param", "targets=Who?"],
     'parameter targets (tuple[tuple[str, str], ...]): items are JSON values of type tuple[str, str] '
     '(e.g. ["text", "text"])'),
    (["-a", "poisoned-rag", "--param", 'targets=["Who?", "Bacon", "extra"]'],
     "expected 2 items (tuple[str, str]), got 3"),
    (["-a", "polarity-trigger", "--param", "texts=@sst2.jsonl"], "parameter texts (str) takes a single value"),
])
def test_param_conflicts_with_flags_and_llm_attack_errors(capsys, sst2, tmp_path, args, message):
    code, _, err = cli(capsys, "attack", sst2, "--count", "2", "--out", tmp_path / "o.jsonl", *args)
    assert code == 2 and message in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


def test_attacks_lists_parameters_with_types_and_defaults(capsys):
    code, stdout, _ = cli(capsys, "attacks", "--format", "json")
    assert code == 0
    by_name = {a["name"]: {p["name"]: p for p in a["params"]} for a in json.loads(stdout)}
    pol = by_name["polarity-trigger"]
    assert set(pol) == {"triggers", "polarity", "texts", "sentences", "position"}
    assert pol["triggers"] == {"name": "triggers", "type": "tuple[str, ...]", "list": True, "default": ["James Bond"],
                               "flag": "--trigger", "help": None}
    assert pol["sentences"]["type"] == "int" and pol["sentences"]["default"] == 3 and not pol["sentences"]["list"]
    assert by_name["safety-bypass"]["behaviours"]["type"] == "str"
    assert by_name["poisoned-rag"]["targets"]["list"] is True
    code, stdout, _ = cli(capsys, "attacks")
    assert code == 0
    lines = stdout.splitlines()
    at = lines.index(next(x for x in lines if x.startswith("polarity-trigger ")))
    block = " ".join(" ".join(x.split()) for x in lines[at + 1:at + 6])
    assert "triggers tuple[str, ...] default [\"James Bond\"]" in block and "sentences int default 3" in block
