"""Every reader: the same records from JSONL(.gz), JSON array(.gz), CSV, TSV and Parquet."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainguard.io import FORMATS, detect_format, iter_records, load, read
from trainguard.records import Kind

ROWS = [
    {"text": "a fine film", "label": 1},
    {"text": "dull, \"slow\"\nand long", "label": 0},  # delimiter, quotes and a newline inside a field
    {"text": "tab\there", "label": 0},
    {"text": "emoji 😀 rtl שלום zw\u200bsp\u200d bidi\u202e end", "label": 1},
]
UNICODE = ROWS[3]["text"]


def write_jsonl(path: Path, rows: list[dict], newline: str = "\n") -> Path:
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + newline for r in rows).encode())
    return path


def write_csv(path: Path, rows: list[dict], delimiter: str = ",", lineterminator: str = "\r\n") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter, lineterminator=lineterminator)
        w.writeheader()
        w.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def texts_labels(path: Path, **kw) -> list[tuple[int, str, str | None]]:
    return [(r.row, r.text, r.label) for r in load(path, **kw).records]


EXPECTED = [(i, r["text"], str(r["label"])) for i, r in enumerate(ROWS)]


@pytest.fixture
def every_format(tmp_path: Path) -> dict[str, Path]:
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(gzip.compress(write_jsonl(tmp_path / "tmp.jsonl", ROWS).read_bytes()))
    arr = tmp_path / "d.json"
    arr.write_text(json.dumps(ROWS, ensure_ascii=False, indent=2), encoding="utf-8")
    arr_gz = tmp_path / "d.json.gz"
    arr_gz.write_bytes(gzip.compress(arr.read_bytes()))
    return {
        "jsonl": write_jsonl(tmp_path / "d.jsonl", ROWS),
        "jsonl.gz": gz,
        "json": arr,
        "json.gz": arr_gz,
        "csv": write_csv(tmp_path / "d.csv", ROWS),
        "tsv": write_csv(tmp_path / "d.tsv", ROWS, delimiter="\t"),
        "parquet": write_parquet(tmp_path / "d.parquet", ROWS),
    }


@pytest.mark.parametrize("name", ["jsonl", "jsonl.gz", "json", "json.gz", "csv", "tsv", "parquet"])
def test_every_format_reads_the_same_records(every_format: dict[str, Path], name: str) -> None:
    data = load(every_format[name])
    assert data.kind is Kind.CLASSIFICATION
    assert [(r.row, r.text, r.label) for r in data.records] == EXPECTED
    assert data.skipped == []
    assert data.file_sha256 == hashlib.sha256(every_format[name].read_bytes()).hexdigest()


def test_ids_identical_across_formats(every_format: dict[str, Path]) -> None:
    # CSV gives the label "0", JSONL and Parquet give the int 0: the ids must not care.
    ids = {name: [r.id for r in load(p).records] for name, p in every_format.items()}
    first = ids.pop("jsonl")
    assert len(set(first)) == len(ROWS)
    for name, other in ids.items():
        assert other == first, name


def test_unicode_is_preserved_byte_exact(every_format: dict[str, Path]) -> None:
    for name, path in every_format.items():
        text = load(path).records[3].text
        assert text.encode("utf-8") == UNICODE.encode("utf-8"), name


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.jsonl", "jsonl"), ("a.NDJSON", "jsonl"), ("a.jsonl.gz", "jsonl"), ("a.csv", "csv"), ("a.csv.gz", "csv"),
     ("a.tsv", "tsv"), ("a.parquet", "parquet"), ("a.pq", "parquet")],
)
def test_format_from_extension(tmp_path: Path, name: str, fmt: str) -> None:
    assert detect_format(tmp_path / name) == fmt  # the name decides; the file need not exist


def test_unknown_extension_is_sniffed(tmp_path: Path, every_format: dict[str, Path]) -> None:
    cases = {"jsonl": "jsonl", "jsonl.gz": "jsonl", "json": "json", "json.gz": "json", "parquet": "parquet"}
    for src, fmt in cases.items():
        odd = tmp_path / f"{src}.data"
        odd.write_bytes(every_format[src].read_bytes())
        assert detect_format(odd) == fmt
        assert texts_labels(odd) == EXPECTED


def test_json_named_file_holding_json_lines(tmp_path: Path) -> None:
    # Many hubs publish JSON Lines under a .json name.
    path = write_jsonl(tmp_path / "train.json", ROWS)
    assert detect_format(path) == "jsonl"
    assert texts_labels(path) == EXPECTED


def test_explicit_format_overrides_the_name(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.txt", ROWS)
    assert texts_labels(path, fmt="csv") == EXPECTED


def test_formats_constant_lists_every_reader() -> None:
    assert set(FORMATS) == {"jsonl", "json", "csv", "tsv", "parquet"}


def test_jsonl_blank_lines_bom_and_crlf(tmp_path: Path) -> None:
    body = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS)
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n  \r\n".join([b"", body.encode(), b"", b"\t"]) + b"\r\n")
    data = load(path)
    assert [(r.row, r.text, r.label) for r in data.records] == EXPECTED
    assert [r.line for r in read(path)] == [3, 4, 5, 6]  # 1-based physical lines, blanks not counted as rows


def test_json_array_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS).encode())
    assert texts_labels(path) == EXPECTED


@pytest.mark.parametrize("terminator", ["\r\n", "\n"])
def test_csv_bom_crlf_and_blank_lines(tmp_path: Path, terminator: str) -> None:
    path = write_csv(tmp_path / "d.csv", ROWS, lineterminator=terminator)
    raw = path.read_bytes()
    header, rest = raw.split(terminator.encode(), 1)
    path.write_bytes(b"\xef\xbb\xbf" + header + terminator.encode() * 2 + rest + terminator.encode())
    data = load(path)
    assert [(r.row, r.text, r.label) for r in data.records] == EXPECTED
    assert data.fieldmap.text == "text"  # the BOM did not stick to the first column name


def test_csv_quoted_fields_keep_newlines_delimiters_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_bytes(b'label,text\r\n0,"a, b\r\nc ""q"" d"\r\n1,plain\r\n')
    data = load(path)
    assert [(r.row, r.text, r.label) for r in data.records] == [(0, 'a, b\r\nc "q" d', "0"), (1, "plain", "1")]
    assert [i.line for i in read(path)] == [2, 4]  # a record that spans lines starts where it starts


def test_single_column_csv_keeps_empty_cells(tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_bytes(b'text\n""\nsecond\n\nthird\n')
    data = load(path)
    assert data.kind is Kind.DOCUMENTS
    assert [(r.row, r.text) for r in data.records] == [(0, ""), (1, "second"), (2, "third")]


def test_parquet_in_several_batches_keeps_row_order(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": i % 3} for i in range(20_000)]
    path = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3_000)
    records = list(iter_records(path))
    assert [r.row for r in records] == list(range(20_000))
    assert records[12_345].text == "t12345" and records[12_345].label == "0"


def test_parquet_nested_chat_messages(tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    data = load(write_parquet(tmp_path / "chat.parquet", rows))
    assert data.kind is Kind.INSTRUCTION
    assert (data.records[0].text, data.records[0].response) == ("user: hi", "hello")


def test_iter_records_streams_and_reports_resolution(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    resolved: dict = {}
    it = iter_records(path, resolved=resolved)
    first = next(it)
    assert first.row == 0 and resolved["kind"] is Kind.CLASSIFICATION
    assert resolved["fieldmap"].used() == {"text": "text", "label": "label"}
    assert len(list(it)) == len(ROWS) - 1


def test_record_source_and_meta(tmp_path: Path) -> None:
    rows = [{"text": "x", "label": 1, "source": "web", "lang": "en", "score": 0.5, "tags": ["a"]}]
    r = load(write_jsonl(tmp_path / "d.jsonl", rows)).records[0]
    assert r.source == "web"
    assert dict(r.meta) == {"lang": "en", "score": 0.5}  # scalars only; mapped fields are not repeated


def test_dataset_info_lists_skipped_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{bad\n{"text": "b", "label": 0}\n', encoding="utf-8")
    info = load(path, on_error="skip").info()
    assert info["records"] == 2 and info["kind"] == "classification"
    assert [(s["row"], s["line"]) for s in info["skipped"]] == [(1, 2)]
    assert "malformed JSON" in info["skipped"][0]["message"]
