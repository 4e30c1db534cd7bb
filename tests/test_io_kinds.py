"""Dataset kinds, auto-detection, --kind/--field overrides and label normalisation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainguard.errors import ConfigError, DataError
from trainguard.io import FieldMap, detect_kind, load, parse_field_overrides
from trainguard.io.mapping import split_dialogue_pair
from trainguard.records import Kind

DATA = Path(__file__).parent / "data"


def jsonl(tmp_path: Path, rows: list[dict], name: str = "d.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("keys", "kind", "used"),
    [
        ({"text", "label"}, Kind.CLASSIFICATION, {"text": "text", "label": "label"}),
        ({"sentence", "label", "idx"}, Kind.CLASSIFICATION, {"text": "sentence", "label": "label"}),
        ({"prompt", "response"}, Kind.INSTRUCTION, {"prompt": "prompt", "response": "response"}),
        ({"question", "answer", "source"}, Kind.INSTRUCTION,
         {"prompt": "question", "response": "answer", "source": "source"}),
        ({"instruction", "input", "output"}, Kind.INSTRUCTION,
         {"instruction": "instruction", "input": "input", "response": "output"}),
        ({"messages"}, Kind.INSTRUCTION, {"messages": "messages"}),
        ({"conversations", "id"}, Kind.INSTRUCTION, {"messages": "conversations", "id": "id"}),
        ({"prompt", "chosen", "rejected"}, Kind.PREFERENCE,
         {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}),
        ({"chosen", "rejected"}, Kind.PREFERENCE, {"chosen": "chosen", "rejected": "rejected"}),
        ({"id", "text"}, Kind.DOCUMENTS, {"id": "id", "text": "text"}),
    ],
)
def test_detect_kind(keys: set[str], kind: Kind, used: dict[str, str]) -> None:
    got_kind, fm = detect_kind(keys)
    assert got_kind is kind
    assert fm.used() == used


def test_detect_kind_nothing_fits() -> None:
    with pytest.raises(ConfigError, match=r"cannot tell the dataset kind from fields \['a', 'b'\]"):
        detect_kind({"a", "b"})


def test_classification_text_label(tmp_path: Path) -> None:
    data = load(jsonl(tmp_path, [{"text": "good", "label": 1}, {"text": "bad", "label": 0}]))
    assert data.kind is Kind.CLASSIFICATION
    assert [(r.text, r.label, r.target) for r in data] == [("good", "1", "1"), ("bad", "0", "0")]


def test_sentence_label_from_real_sst2_slice(tmp_path: Path) -> None:
    lines = (DATA / "sst2_sample.jsonl").read_text(encoding="utf-8").splitlines()[:50]
    rows = [{"sentence": json.loads(x)["text"], "label": json.loads(x)["label"], "idx": i} for i, x in enumerate(lines)]
    data = load(jsonl(tmp_path, rows))
    assert data.kind is Kind.CLASSIFICATION and len(data) == 50
    assert data.records[0].text == "hide new secretions from the parental units"
    assert {r.label for r in data} == {"0", "1"}
    assert data.records[0].meta["idx"] == 0


def test_instruction_question_answer_from_real_medquad_slice() -> None:
    data = load(DATA / "medquad_sample.jsonl")
    assert data.kind is Kind.INSTRUCTION and len(data) == 300
    first = data.records[0]
    assert first.text.startswith("What is (are) Adult Acute Lymphoblastic Leukemia")
    assert first.response.startswith("Key Points") and first.source


def test_instruction_prompt_response(tmp_path: Path) -> None:
    r = load(jsonl(tmp_path, [{"prompt": "2+2?", "response": "4"}])).records[0]
    assert (r.kind, r.text, r.response, r.target) == (Kind.INSTRUCTION, "2+2?", "4", "4")


def test_alpaca_joins_instruction_and_input(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Translate", "input": "bonjour", "output": "hello"},
        {"instruction": "Say hi", "input": "", "output": "hi"},
    ]
    data = load(jsonl(tmp_path, rows))
    assert [(r.text, r.response) for r in data] == [("Translate\n\nbonjour", "hello"), ("Say hi", "hi")]


def test_chat_messages_last_assistant_turn_is_the_response(tmp_path: Path) -> None:
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "capital of France?"},
        {"role": "assistant", "content": "Paris"},
    ]
    r = load(jsonl(tmp_path, [{"messages": msgs}])).records[0]
    assert r.response == "Paris"
    assert r.text == "system: be brief\nuser: hi\nassistant: hello\nuser: capital of France?"


def test_sharegpt_conversations_from_value(tmp_path: Path) -> None:
    conv = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    r = load(jsonl(tmp_path, [{"conversations": conv}])).records[0]
    assert (r.text, r.response) == ("human: hi", "hello")


def test_preference_with_prompt(tmp_path: Path) -> None:
    r = load(jsonl(tmp_path, [{"prompt": "p", "chosen": "good", "rejected": "bad"}])).records[0]
    assert (r.kind, r.text, r.chosen, r.rejected, r.target) == (Kind.PREFERENCE, "p", "good", "bad", "good")


def test_preference_hh_rlhf_full_dialogues(tmp_path: Path) -> None:
    shared = "\n\nHuman: How do I bake bread?\n\nAssistant: Flour, water, yeast.\n\nHuman: And then?"
    row = {"chosen": shared + "\n\nAssistant: Knead and bake.", "rejected": shared + "\n\nAssistant: No idea."}
    r = load(jsonl(tmp_path, [row])).records[0]
    assert r.text == shared + "\n\nAssistant:"
    assert (r.chosen, r.rejected) == ("Knead and bake.", "No idea.")


@pytest.mark.parametrize(
    ("chosen", "rejected", "expected"),
    [
        ("\n\nHuman: q\n\nAssistant: yes", "\n\nHuman: q\n\nAssistant: no",
         ("\n\nHuman: q\n\nAssistant:", "yes", "no")),
        # the replies share a first word: the cut is still at the last shared assistant marker
        ("\n\nHuman: q\n\nAssistant: I do", "\n\nHuman: q\n\nAssistant: I don't",
         ("\n\nHuman: q\n\nAssistant:", "I do", "I don't")),
        ("no markers here", "no markers there", ("", "no markers here", "no markers there")),
        ("same", "same", ("", "same", "same")),
    ],
)
def test_split_dialogue_pair(chosen: str, rejected: str, expected: tuple[str, str, str]) -> None:
    assert split_dialogue_pair(chosen, rejected) == expected


def test_documents_id_text(tmp_path: Path) -> None:
    data = load(jsonl(tmp_path, [{"id": "d1", "text": "alpha"}, {"id": 7, "text": "beta"}]))
    assert data.kind is Kind.DOCUMENTS
    assert [(r.doc_id, r.text, r.target) for r in data] == [("d1", "alpha", None), ("7", "beta", None)]


def test_explicit_kind_with_field_overrides(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [{"body": "x", "y": 1, "q": "ask", "a": "ans"}])
    cls = load(path, kind="classification", fields={"text": "body", "label": "y"})
    assert cls.kind is Kind.CLASSIFICATION and (cls.records[0].text, cls.records[0].label) == ("x", "1")
    ins = load(path, kind=Kind.INSTRUCTION, fields={"prompt": "q", "response": "a"})
    assert (ins.records[0].text, ins.records[0].response) == ("ask", "ans")
    doc = load(path, kind="documents", fields={"text": "q"})
    assert doc.kind is Kind.DOCUMENTS and doc.records[0].text == "ask"


def test_explicit_kind_differs_from_the_guess(tmp_path: Path) -> None:
    # A labelled file loaded as documents (e.g. a RAG store with a topic column).
    data = load(jsonl(tmp_path, [{"text": "x", "label": "topic"}]), kind="documents")
    assert data.kind is Kind.DOCUMENTS and data.records[0].label is None
    assert data.records[0].meta == {"label": "topic"}


def test_auto_kind_with_field_overrides(tmp_path: Path) -> None:
    data = load(jsonl(tmp_path, [{"review": "ok", "stars": 5}]), fields={"text": "review", "label": "stars"})
    assert data.kind is Kind.CLASSIFICATION and data.records[0].label == "5"


def test_explicit_kind_that_the_fields_do_not_fit(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError) as e:
        load(path, kind="classification")
    assert e.value.path == str(path)
    assert "needs field(s) text, label" in str(e.value) and "--field" in str(e.value)


def test_override_naming_a_missing_column(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [{"text": "x", "label": 1}])
    with pytest.raises(DataError) as e:
        load(path, fields={"label": "lbl"})
    assert (e.value.row, e.value.line, e.value.field, e.value.message) == (0, 1, "lbl", "missing label")


def test_parse_field_overrides() -> None:
    assert parse_field_overrides(["text=body", " label = y "]) == {"text": "body", "label": "y"}
    assert parse_field_overrides(None) == {}
    for bad in ["text", "=x", "text=", "colour=x"]:
        with pytest.raises(ConfigError, match="--field"):
            parse_field_overrides([bad])


def test_unknown_kind_value(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [{"text": "x", "label": 1}])
    with pytest.raises(ConfigError, match=r"unknown kind 'tabular'; expected one of: auto, classification"):
        load(path, kind="tabular")


def test_kind_is_detected_from_several_rows_not_just_the_first(tmp_path: Path) -> None:
    # A first row without a label must not silently turn the set into unlabelled documents.
    path = jsonl(tmp_path, [{"text": "a"}, {"text": "b", "label": 1}, {"text": "c", "label": 0}])
    with pytest.raises(DataError) as e:
        load(path)
    assert (e.value.row, e.value.field, e.value.message) == (0, "label", "missing label")
    data = load(path, on_error="skip")
    assert data.kind is Kind.CLASSIFICATION and [r.row for r in data] == [1, 2]


# Labels: one JSON type per file (strings, integers or booleans); every spelling of the same value
# within that type gives the same label, and so the same id.
def _labels_from_jsonl(tmp_path: Path, values: list) -> list[str]:
    return [r.label for r in load(jsonl(tmp_path, [{"text": "t", "label": v} for v in values]))]


def test_label_normalisation_within_one_type(tmp_path: Path) -> None:
    assert _labels_from_jsonl(tmp_path, [0, 1, 1.0, -3, 10**18, 2.0]) == ["0", "1", "1", "-3", str(10**18), "2"]
    with pytest.raises(DataError, match="beyond 2"):  # the JSON parser reads 10**20 as a float: refused, not rounded
        _labels_from_jsonl(tmp_path, [0, 10**20 + 1])
    assert _labels_from_jsonl(tmp_path, ["1", " 1 ", "pos"]) == ["1", "1", "pos"]
    assert _labels_from_jsonl(tmp_path, [True, False]) == ["True", "False"]
    data = load(jsonl(tmp_path, [{"text": "t", "label": v} for v in (0, 1.0, 1)]))
    assert data.notes == ["1 label(s) written as whole floats (e.g. 1.0) were read as the integers they spell (1)"]
    assert data.info()["notes"] == data.notes


def _mixed_rows(n: int = 1000) -> list[dict]:
    """Issue 13 #5: 8 of 1,000 clean integer-labelled rows carry True, "positive", 0.5, -1 or 1e30."""
    rows = [{"text": f"review number {i}", "label": i % 2} for i in range(n)]
    for i, v in zip((7, 100, 220, 310, 400, 520, 640, 990), (True, "positive", 0.5, -1, 1e30, True, "positive", 0.5)):
        rows[i]["label"] = v
    return rows


def test_mixed_label_types_are_one_clear_error(tmp_path: Path) -> None:
    # Before: True became its own class "True", "positive" another, 1e30 lost precision ("1e+30"), silently.
    path = jsonl(tmp_path, _mixed_rows())
    with pytest.raises(DataError) as e:
        load(path)
    err = e.value
    assert (err.line, err.row, err.field) == (8, 7, "label")
    assert "label True is a boolean, but this file's labels are integers" in err.message
    assert "7 row(s) have unusable labels (line 8 row 7; line 101 row 100; line 221 row 220; " in err.message
    assert "and 2 more" in err.message
    assert "label types in the file: integer 993, float 3, boolean 2, string 2" in err.message
    assert "-1" not in err.message.split("(")[0]  # -1 is an integer: a class like any other


def test_mixed_label_types_skip_lists_each_row(tmp_path: Path) -> None:
    data = load(jsonl(tmp_path, _mixed_rows()), on_error="skip")
    assert len(data) == 993 and sorted(e.row for e in data.skipped) == [7, 100, 220, 400, 520, 640, 990]
    assert {r.label for r in data} == {"0", "1", "-1"}
    big = next(e for e in data.skipped if e.row == 400)
    assert "beyond 2**53" in big.message and "exact value is lost" in big.message
    assert "fraction, not a class" in next(e for e in data.skipped if e.row == 220).message


def test_a_huge_whole_float_label_is_refused_not_rounded(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"line 1, row 0, field 'label': label 1e\+30 is a whole number beyond 2\*\*53"):
        load(jsonl(tmp_path, [{"text": "t", "label": 1e30}, {"text": "u", "label": 2e30}]))
    assert _labels_from_jsonl(tmp_path, [2.0**53, 1]) == [str(2**53), "1"]


def test_label_ids_match_across_jsonl_csv_and_parquet(tmp_path: Path) -> None:
    rows = [{"text": "same text", "label": v} for v in (0, 1, 1.0)]
    as_jsonl = load(jsonl(tmp_path, rows))
    csv_path = tmp_path / "d.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([[r["text"], v] for r, v in zip(rows, ["0", "1", "1"])])
    as_csv = load(csv_path)
    pq_path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["same text"] * 3, "label": [0, 1, 1]}), pq_path)
    as_parquet = load(pq_path)
    pq.write_table(pa.table({"text": ["same text"] * 2, "label": [1.0, 0.0]}), pq_path)
    as_parquet_float = load(pq_path)
    ids = [r.id for r in as_jsonl]
    assert [r.id for r in as_csv] == ids
    assert [r.id for r in as_parquet] == ids
    assert [r.id for r in as_parquet_float] == [ids[1], ids[0]]
    assert ids[0] != ids[1] and ids[1] == ids[2]
    bools = load(jsonl(tmp_path, [{"text": "same text", "label": True}], "b.jsonl"))
    pq.write_table(pa.table({"text": ["same text"], "label": [True]}), pq_path)
    assert load(pq_path).records[0].id == bools.records[0].id


# Issue 13 #4: which kind was resolved, and why; a label-like column is not read as documents.
def test_text_and_stars_csv_is_not_silently_documents(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text("text,stars\ngreat film,5\nawful film,1\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load(path)  # before: documents, and a label-flip poison passed with "No findings"
    assert e.value.field == "stars" and str(path) in str(e.value)
    assert "--field label=stars" in e.value.message and "--kind documents" in e.value.message
    as_cls = load(path, fields={"label": "stars"})
    assert as_cls.kind is Kind.CLASSIFICATION and [r.label for r in as_cls] == ["5", "1"]
    assert as_cls.kind_reason == ("classification (detected from the field names; --field label=stars: "
                                  "text='text', label='stars')")
    as_docs = load(path, kind="documents")
    assert as_docs.kind is Kind.DOCUMENTS and as_docs.kind_reason == "documents (--kind documents: text='text')"
    assert as_docs.info()["kind_reason"] == as_docs.kind_reason


@pytest.mark.parametrize("column", ["rating", "Sentiment", "score", "y", "category"])
def test_other_label_like_columns(tmp_path: Path, column: str) -> None:
    path = jsonl(tmp_path, [{"text": "a", column: 1}, {"text": "b", column: 0}])
    if column == "category":  # already a label name: classification, said so
        assert load(path).kind is Kind.CLASSIFICATION
        return
    with pytest.raises(DataError, match=f"column '{column}' looks like a label"):
        load(path)


def test_plain_documents_still_detected(tmp_path: Path) -> None:
    data = load(jsonl(tmp_path, [{"id": "d1", "text": "alpha", "title": "A"}]))
    assert data.kind is Kind.DOCUMENTS
    assert data.kind_reason == "documents (detected from the field names: text='text', id='id')"


def test_ids_ignore_row_and_source_but_not_content(tmp_path: Path) -> None:
    rows = [{"text": "t", "label": 1, "source": "a"}, {"text": "t", "label": 1, "source": "b"},
            {"text": "t ", "label": 1, "source": "a"}]
    r = load(jsonl(tmp_path, rows)).records
    assert r[0].id == r[1].id != r[2].id


def test_field_map_used_omits_unused_roles() -> None:
    assert FieldMap(text="t", label="l").used() == {"text": "t", "label": "l"}


def test_a_huge_numeric_id_is_refused_not_rounded(tmp_path: Path) -> None:
    # The JSON parser reads 10**20 + 1 as the float 1e20: as an id it would silently become "100000000000000000000".
    path = tmp_path / "ids.jsonl"
    path.write_text('{"id": 100000000000000000001, "text": "a"}\n')
    with pytest.raises(DataError, match=r"line 1, row 0, field 'id': 1e\+20 is a whole number beyond 2\*\*53"):
        load(path)
    path.write_text('{"id": 12345678901234567, "text": "a"}\n')
    assert load(path).records[0].doc_id == "12345678901234567"
