"""`trainguard scan` / `detectors` end to end: exit codes, formats, settings, bad input."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Literal, Optional

import pytest
from conftest import DATA, cli, read_jsonl

from trainguard.detectors import base as detector_base
from trainguard.findings import DetectorResult
from trainguard.records import Kind


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
    (["--set", "trigger-association.nope=1"],
     "--set: detector trigger-association: unknown setting 'nope'; its settings: alpha, class_defining_share"),
    (["--set", "trigger-association.min_rowz=1"], "unknown setting 'min_rowz' (did you mean 'min_rows'?)"),
    (["--set", "trigger-association.min_rows=many"],
     "--set: detector trigger-association: setting min_rows (int): expected an integer, got 'many'"),
    (["--set", "trigger-association.min_rows=3", "--set", "trigger-association.min_rows=4"], "given twice"),
    (["--set", "near-duplicates.threshold=nan"], "setting threshold (float): expected a number, got 'nan'"),
    (["--set", "preference-trigger.embedders="], "setting embedders (tuple[str, ...]): empty value"),
    (["--set", "preference-trigger.embedders=@missing-[x].txt"], "file missing-[x].txt not found"),
    (["--set", "no-such.min_rows=1"], "unknown detector 'no-such'"),
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


def _settings_used(capsys, *sets: str, detector: str = "preference-trigger") -> dict:
    args = [a for s in sets for a in ("--set", s)]
    code, out, err = cli(capsys, "scan", str(DATA / "sst2_sample.jsonl"), "-q", "-f", "json",
                         "--detectors", detector, *args)
    runs = {d["name"]: d["status"] for d in json.loads(out)["detectors"]}
    # A detector that skips sst2 leaves nothing run: exit 1 (issue 13 #3); the report still records its settings.
    assert code == (0 if runs[detector] == "ok" else 1), err
    [run] = [d for d in json.loads(out)["detectors"] if d["name"] == detector]
    return run["settings"]


def test_set_a_tuple_setting_one_item_per_set(capsys, tmp_path):
    # Used to arrive as the text "wordllama" (iterated letter by letter by the detector); now a tuple of items.
    # preference-trigger skips sst2 (not preference data), but the report still records its settings.
    assert _settings_used(capsys)["embedders"] == ["wordllama"]
    assert _settings_used(capsys, "preference-trigger.embedders=minilm")["embedders"] == ["minilm"]
    (tmp_path / "emb.txt").write_text("minilm\n\ntfidf-svd\n")
    got = _settings_used(capsys, "preference-trigger.embedders=wordllama",
                         f"preference-trigger.embedders=@{tmp_path / 'emb.txt'}", "preference-trigger.folds= 3 ")
    assert got["embedders"] == ["wordllama", "minilm", "tfidf-svd"] and got["folds"] == 3


@dataclass(frozen=True)
class _DialSettings:
    limit: Optional[int] = 5
    mode: Literal["fast", "slow"] = "fast"
    note: Optional[str] = None
    loud: bool = False
    share: float = 0.5


class _Dial(detector_base.Detector):
    """Test-only detector with Optional and Literal settings (no built-in has one yet); finds nothing."""

    name = "dial"
    kinds = frozenset({Kind.CLASSIFICATION})
    Settings = _DialSettings

    def run(self, data):
        return DetectorResult(alerts=())


@pytest.fixture()
def dial(monkeypatch):
    monkeypatch.setitem(detector_base._REGISTRY._builtin, "dial", _Dial)


def test_set_optional_literal_and_scalars(capsys, dial):
    assert _settings_used(capsys, detector="dial") == {"limit": 5, "mode": "fast", "note": None, "loud": False,
                                                       "share": 0.5}
    got = _settings_used(capsys, "dial.limit=", "dial.mode=slow", "dial.note=hello [x]", "dial.loud=YES",
                         "dial.share=2.5", detector="dial")
    assert got == {"limit": None, "mode": "slow", "note": "hello [x]", "loud": True, "share": 2.5}
    got = _settings_used(capsys, "dial.limit=none", "dial.note=none", "dial.share=2", detector="dial")
    assert got["limit"] is None and got["note"] == "none" and got["share"] == 2.0
    code, _, err = cli(capsys, "scan", str(DATA / "sst2_sample.jsonl"), "-q", "--set", "dial.mode=medium")
    assert code == 2 and "--set: detector dial: setting mode (\"fast\" | \"slow\"): expected one of fast, slow" in err
    code, _, err = cli(capsys, "scan", str(DATA / "sst2_sample.jsonl"), "-q", "--set", "dial.limit=lots")
    assert code == 2 and "setting limit (int | None): expected an integer, got 'lots'" in err


def test_errors_print_square_brackets_as_text(capsys, tmp_path):
    # rich markup would eat "[x]" and raise on "[/x]" (a closing tag with no opening one).
    (tmp_path / "[").mkdir()
    for name in ("[x].jsonl", "[/x].jsonl"):
        code, _, err = cli(capsys, "scan", str(tmp_path / name), "-q")
        assert code == 2 and f"{tmp_path / name}: file not found" in err and "Traceback" not in err
    from trainguard.cli._common import fail

    exit_ = fail(r"bad [bold]value[/bold] in C:\[/x].txt, got ':smile:'", code=3)
    assert exit_.exit_code == 3
    assert capsys.readouterr().err.strip() == r"error: bad [bold]value[/bold] in C:\[/x].txt, got ':smile:'"


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


# --- issue 13 #3, #4 and the option bundle --------------------------------------------------------


def test_scan_where_no_detector_ran_fails_like_the_gate(capsys, tmp_path):
    """Before: `scan docs.jsonl --detectors trigger-association` exited 0 while `gate` failed."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": str(i), "text": f"passage {i}"}) + "\n" for i in range(20)))
    code, out, err = cli(capsys, "scan", docs, "-q", "-f", "json", "--detectors", "trigger-association")
    assert code == 1 and "fail: scan: no detector ran on this dataset" in err
    status = {d["name"]: d["status"] for d in json.loads(out)["detectors"]}
    assert status["trigger-association"] == "skipped"
    # The defaults the user left out that would have applied are recorded, and said on stderr.
    assert {n for n, s in status.items() if s == "disabled"} == {"invisible-characters", "near-duplicates",
                                                                 "rag-poisoning"}
    assert "disabled: invisible-characters, near-duplicates, rag-poisoning" in err
    assert cli(capsys, "scan", docs, "-q")[0] == 0


def test_text_and_stars_csv_does_not_pass_as_documents(capsys, tmp_path):
    """Before: auto-detected as documents, "No findings", exit 0."""
    path = tmp_path / "reviews.csv"
    path.write_text("text,stars\n" + "".join(f"review {i},{1 + i % 5}\n" for i in range(40)))
    code, _, err = cli(capsys, "scan", path, "-q")
    assert code == 2 and "Traceback" not in err
    assert str(path) in err and "'stars'" in err and "--field label=stars" in err and "--kind documents" in err
    code, _, err = cli(capsys, "scan", path, "-q", "--field", "label=stars")
    assert f"{path}: classification (detected from the field names; --field label=stars" in err
    code, _, err = cli(capsys, "scan", path, "-q", "--kind", "documents")
    assert code == 0 and f"{path}: documents (--kind documents: text='text'), 40 records" in err


def _commands_that_read_data():
    """Every command whose first argument, or --clean, is a dataset file."""
    import typer.main

    from trainguard.cli import app

    group = typer.main.get_command(app)
    out = {}
    for name, cmd in group.commands.items():
        subs = cmd.commands.items() if hasattr(cmd, "commands") else [(None, cmd)]
        for sub, c in subs:
            params = {p.name: p for p in c.params}
            data_arg = next((p for p in c.params if p.param_type_name == "argument"
                             and p.name in ("path", "data")), None)
            if data_arg is not None or "clean" in params:
                out[" ".join(x for x in (name, sub) if x)] = c
    return out


def test_every_command_that_reads_data_has_the_option_bundle():
    from trainguard.cli._common import DATA_OPTIONS

    commands = _commands_that_read_data()
    assert {"scan", "gate", "ingest", "verify", "release", "attack", "train", "probe", "invert"} <= set(commands)
    missing = {name: [o for o in DATA_OPTIONS if o not in {x for p in c.params for x in p.opts}]
               for name, c in commands.items()}
    missing = {k: v for k, v in missing.items() if v and k != "check-attestation"}  # reads bytes, not records
    assert not missing, f"commands without the data options: {missing}"


def test_commands_that_only_hash_say_how_the_data_would_be_read(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINGUARD_LEDGER", raising=False)
    good = tmp_path / "d.jsonl"
    good.write_text("".join(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n" for i in range(10)))
    code, _, err = cli(capsys, "ingest", good, "--by", "a")
    assert code == 0 and f"{good}: classification (detected from the field names" in err
    stars = tmp_path / "r.csv"
    stars.write_text("text,stars\nok,5\nbad,1\n")
    code, _, err = cli(capsys, "ingest", stars, "--by", "a")  # the ledger records any file; it warns
    assert code == 0 and "warning:" in err and "--field label=stars" in err
    code, _, err = cli(capsys, "verify", stars, "--field", "label=stars")
    assert code == 0 and f"{stars}: classification" in err
    assert cli(capsys, "ingest", good, "--on-error", "ignore")[0] == 2
    # Accepted but ignored before: ingest/verify/release record every line, so skip is refused.
    for command in ("ingest", "verify"):
        code, _, err = cli(capsys, command, good, "--on-error", "skip")
        assert code == 2 and "--on-error skip does not apply here" in err
