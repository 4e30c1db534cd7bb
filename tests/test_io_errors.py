"""Bad input: a clear one-line DataError naming file, line/row and field; never a traceback."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainguard.errors import ConfigError, DataError, TrainguardError
from trainguard.io import iter_records, load

GOOD = {"text": "fine", "label": 1}


def jsonl_bytes(*lines: bytes | dict) -> bytes:
    return b"".join((json.dumps(x).encode() if isinstance(x, dict) else x) + b"\n" for x in lines)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def fails(path: Path, **kw) -> DataError:
    """Load `path`, expect a DataError, and check it is one line that names the file."""
    with pytest.raises(DataError) as info:
        load(path, **kw)
    e = info.value
    assert e.path == str(path)
    text = str(e)
    assert text.startswith(str(path)) and "\n" not in text and "Traceback" not in text
    return e


def where(e: DataError) -> tuple:
    return e.line, e.row, e.field


# --- one bad record ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"text": "x", "label": ', "malformed JSON"),
        (b'{"text": "x" "label": 1}', "malformed JSON"),
        (b"[1, 2]", "expected a JSON object, got array"),
        (b"42", "expected a JSON object, got int"),
        (b'"just a string"', "expected a JSON object, got string"),
        (b"null", "expected a JSON object, got null"),
        (b'{"text": "x", "label": NaN}', "malformed JSON"),
    ],
)
def test_bad_json_line(tmp_path: Path, line: bytes, message: str) -> None:
    path = write(tmp_path, "d.jsonl", jsonl_bytes(GOOD, b"", line, GOOD))
    e = fails(path)
    assert where(e) == (3, 1, None)  # line counts the blank line, row does not
    assert message in e.message


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ({"text": "x", "label": {"a": 1}}, "label", "expected a scalar label, got object"),
        ({"text": "x", "label": [1]}, "label", "expected a scalar label, got array"),
        ({"text": "x", "label": None}, "label", "missing label"),
        ({"text": "x", "label": "  "}, "label", "empty label"),
        ({"text": 5, "label": 1}, "text", "expected a string, got int"),
        ({"text": None, "label": 1}, "text", "expected a string, got null"),
        ({"text": ["x"], "label": 1}, "text", "expected a string, got array"),
        ({"label": 1}, "text", "missing field"),
        ({"text": "x"}, "label", "missing label"),
        ({"text": "x", "label": 1, "id": {"k": 1}}, "id", "expected a string, got object"),
    ],
)
def test_wrong_or_missing_field(tmp_path: Path, record: dict, field: str, message: str) -> None:
    path = write(tmp_path, "d.jsonl", jsonl_bytes({"id": "a", **GOOD}, {"id": "b", **GOOD}, record))
    e = fails(path)
    assert where(e) == (3, 2, field)
    assert e.message == message


@pytest.mark.parametrize(
    ("messages", "field", "message"),
    [
        ("not a list", "messages", "expected a non-empty list of messages"),
        ([], "messages", "expected a non-empty list of messages"),
        (["hi"], "messages[0]", "expected an object, got string"),
        ([{"content": "hi"}], "messages[0].role", "missing or non-string role"),
        ([{"role": "user", "content": 3}], "messages[0].content", "missing or non-string content"),
        ([{"role": "user", "content": "hi"}], "messages", "no assistant message to train on"),
    ],
)
def test_bad_chat_messages(tmp_path: Path, messages, field: str, message: str) -> None:
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    e = fails(write(tmp_path, "c.jsonl", jsonl_bytes(good, {"messages": messages})))
    assert where(e) == (2, 1, field)
    assert e.message == message


def test_non_utf8_jsonl(tmp_path: Path) -> None:
    e = fails(write(tmp_path, "d.jsonl", jsonl_bytes(GOOD, b'{"text": "caf\xe9", "label": 1}')))
    assert where(e) == (2, 1, None)
    assert "not valid UTF-8 (byte 14 of the line)" in e.message


def test_non_utf8_csv_names_the_field(tmp_path: Path) -> None:
    e = fails(write(tmp_path, "d.csv", b"label,text\n1,fine\n0,caf\xe9\n"))
    assert where(e) == (3, 1, "text")
    assert e.message == "not valid UTF-8"


def test_non_utf8_csv_header(tmp_path: Path) -> None:
    e = fails(write(tmp_path, "d.csv", b"te\xffxt,label\nfine,1\n"))
    assert e.line == 1 and "header is not valid UTF-8" in e.message


def test_csv_row_with_wrong_field_count(tmp_path: Path) -> None:
    e = fails(write(tmp_path, "d.csv", b"text,label\nfine,1\nextra,1,2\n"))
    assert where(e) == (3, 1, None)
    assert e.message == "row has 3 fields, the header has 2"


def test_csv_malformed_quoting_is_not_silently_merged(tmp_path: Path) -> None:
    e = fails(write(tmp_path, "d.csv", b'text,label\n"fine"x,1\n'))
    assert where(e)[:2] == (2, 0) and "malformed row" in e.message
    e = fails(write(tmp_path, "e.csv", b'text,label\nfine,1\n"never closed,0\nmore,1\n'))
    assert where(e)[:2] == (3, 1) and "unexpected end of data" in e.message


def test_duplicate_csv_header(tmp_path: Path) -> None:
    e = fails(write(tmp_path, "d.csv", b"text,label,text\na,1,b\n"))
    assert e.line == 1 and e.message == "duplicate column name(s) in header: 'text'"


def test_tsv_wrong_field_count(tmp_path: Path) -> None:
    e = fails(write(tmp_path, "d.tsv", b"text\tlabel\nok\t1\nno tab here\n"))
    assert where(e) == (3, 1, None)


def test_json_array_element_not_an_object(tmp_path: Path) -> None:
    e = fails(write(tmp_path, "d.json", json.dumps([GOOD, GOOD, 3]).encode()))
    assert (e.row, e.message) == (2, "expected a JSON object, got int")


def test_json_array_malformed_and_wrong_container(tmp_path: Path) -> None:
    e = fails(write(tmp_path, "d.json", b'[{"text": "a", "label": 1},\n {"text": }]'))
    assert e.line == 2 and "malformed JSON" in e.message
    e = fails(write(tmp_path, "o.json", b'"a string"'))
    assert e.message == "expected a JSON array of objects, got string"
    e = fails(write(tmp_path, "e.json", b" [ ] "))
    assert e.message == "file has no records (empty array)"


# --- whole-file problems ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz", "d.json", "d.csv", "d.tsv", "d.parquet", "d.unknown"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    assert fails(write(tmp_path, name, b"")).message == "file is empty"


@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "d.csv", "d.tsv", "d.unknown"])
def test_only_blank_lines(tmp_path: Path, name: str) -> None:
    e = fails(write(tmp_path, name, b"\n  \r\n\t\n"))
    assert e.message == "file has no records (only blank lines)"


def test_only_blank_lines_gzipped(tmp_path: Path) -> None:
    e = fails(write(tmp_path, "d.jsonl.gz", gzip.compress(b"\n\n\n")))
    assert e.message == "file has no records (only blank lines)"


def test_csv_header_only_or_blank(tmp_path: Path) -> None:
    assert fails(write(tmp_path, "h.csv", b"text,label\n\n\n")).message == "file has a header but no records"
    assert fails(write(tmp_path, "b.csv", b"\n \n")).message == "file has no records (only blank lines)"
    data = load(write(tmp_path, "lead.csv", b"\n\ntext,label\nok,1\n"))  # blank lines before the header
    assert [(r.row, r.text, r.label) for r in data] == [(0, "ok", "1")]


def test_missing_file(tmp_path: Path) -> None:
    assert fails(tmp_path / "nope.jsonl").message == "file not found"
    assert fails(tmp_path / "nope.bin").message == "file not found"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "dir.jsonl").mkdir()
    assert fails(tmp_path / "dir.jsonl").message.startswith("is a directory, not a data file")


def test_unknown_format(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", jsonl_bytes(GOOD))
    with pytest.raises(ConfigError, match="unknown format 'xml'; use one of: jsonl, json, csv, tsv, parquet"):
        load(path, fmt="xml")  # a usage error, caught before the file is opened (LoadOptions)
    e = fails(write(tmp_path, "d.bin", b"\x00\x01 binary junk"))
    assert "cannot tell the format" in e.message


def test_parquet_that_is_not_parquet(tmp_path: Path) -> None:
    e = fails(write(tmp_path, "d.parquet", b'{"text": "I am JSON", "label": 1}\n'))
    assert e.message.startswith("not a readable Parquet file")


def test_truncated_parquet(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a"] * 100, "label": [1] * 100}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert fails(path).message.startswith("not a readable Parquet file")


def test_empty_parquet_table(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.int64())}), path)
    assert fails(path).message == "file has no records"


@pytest.mark.parametrize("name", ["d.jsonl.gz", "d.csv.gz", "d.json.gz"])
def test_truncated_gzip(tmp_path: Path, name: str) -> None:
    rows = [{"text": f"row number {i} " + "pad " * (i % 17), "label": i % 2} for i in range(3000)]
    if name.startswith("d.csv"):
        raw = b"text,label\n" + b"".join(f"{r['text']},{r['label']}\n".encode() for r in rows)
    elif name == "d.json.gz":
        raw = json.dumps(rows).encode()
    else:
        raw = jsonl_bytes(*rows)
    packed = gzip.compress(raw)
    e = fails(write(tmp_path, name, packed[: len(packed) * 2 // 3]))
    assert "cannot read (truncated or corrupt?)" in e.message


def test_corrupt_gzip_stream(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(jsonl_bytes(*[GOOD] * 2000)))
    packed[20:40] = b"\xff" * 20
    e = fails(write(tmp_path, "d.jsonl.gz", bytes(packed)))
    assert "cannot read (truncated or corrupt?)" in e.message


def test_unknown_kind_names_file_and_fields(tmp_path: Path) -> None:
    e = fails(write(tmp_path, "d.jsonl", jsonl_bytes({"foo": 1, "bar": "x"})))
    assert where(e) == (1, 0, None)
    assert "cannot tell the dataset kind from fields ['bar', 'foo']" in e.message and "--kind" in e.message


def test_bad_usage_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", jsonl_bytes(GOOD))
    with pytest.raises(ConfigError, match="--on-error must be one of"):
        load(path, on_error="ignore")
    with pytest.raises(ConfigError, match="unknown kind 'pairs'"):
        load(path, kind="pairs")
    with pytest.raises(ConfigError, match="--max-record-bytes"):
        load(path, max_record_bytes=0)


# --- oversized records ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz", "d.csv", "d.tsv"])
def test_record_over_the_limit_is_reported_and_skippable(tmp_path: Path, name: str) -> None:
    big = "x" * 5000
    if ".jsonl" in name:
        raw = jsonl_bytes(GOOD, {"text": big, "label": 0}, {"text": "after", "label": 0})
    else:
        sep = "\t" if name.endswith("tsv") else ","
        raw = f"text{sep}label\nfine{sep}1\n{big}{sep}0\nafter{sep}0\n".encode()
    path = write(tmp_path, name, gzip.compress(raw) if name.endswith(".gz") else raw)
    e = fails(path, max_record_bytes=1000)
    assert e.row == 1 and e.line == (2 if ".jsonl" in name else 3)
    assert "over the 1,000-byte limit" in e.message
    data = load(path, max_record_bytes=1000, on_error="skip")
    assert [(r.row, r.text) for r in data] == [(0, "fine"), (2, "after")]
    assert [s.row for s in data.skipped] == [1]
    assert len(load(path, max_record_bytes=6000)) == 3


def test_csv_record_spanning_lines_counts_all_its_bytes(tmp_path: Path) -> None:
    body = "\n".join(["y" * 100] * 20)  # 20 short lines, one 2 KB quoted field
    path = write(tmp_path, "d.csv", f'text,label\n"{body}",1\nok,0\n'.encode())
    e = fails(path, max_record_bytes=1000)
    assert (e.row, e.line) == (0, 2) and "over the 1,000-byte limit" in e.message
    assert load(path, max_record_bytes=4000).records[0].text == body


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_50mb_line_against_the_default_limit(tmp_path: Path, fmt: str) -> None:
    size = 50 * 1024 * 1024
    path = tmp_path / f"huge.{fmt}"
    with open(path, "wb") as f:
        if fmt == "jsonl":
            f.write(b'{"text": "before", "label": 1}\n{"text": "')
        else:
            f.write(b"text,label\nbefore,1\n")
        for _ in range(size // (1 << 20)):
            f.write(b"z" * (1 << 20))
        f.write(b'", "label": 0}\n{"text": "after", "label": 0}\n' if fmt == "jsonl" else b",0\nafter,0\n")

    with pytest.raises(DataError) as e:
        load(path)
    assert (e.value.row, e.value.line) == (1, 2 if fmt == "jsonl" else 3)
    assert "over the 16,777,216-byte limit" in e.value.message

    skipped: list[DataError] = []
    records: list = []
    peak = _peak_bytes(lambda: records.extend(iter_records(path, on_error="skip", skipped=skipped)))
    assert [s.row for s in skipped] == [1]
    assert [(r.row, r.text) for r in records] == [(0, "before"), (2, "after")]
    # Never the whole 50 MB line at once: at most the 16 MiB limit plus a read buffer.
    assert peak < 24 * 1024 * 1024, f"peak {peak:,} bytes"


# --- on_error ---------------------------------------------------------------------------------

MIXED = [
    GOOD,  # row 0
    b"{oops",  # row 1: malformed
    {"text": 3, "label": 1},  # row 2: wrong type
    b"",  # blank: no row
    {"text": "kept", "label": 0},  # row 3
    b"\xff\xfe",  # row 4: not UTF-8
    {"text": "last", "label": 1},  # row 5
]


def test_fail_stops_at_the_first_bad_row(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", jsonl_bytes(*MIXED))
    seen = []
    with pytest.raises(DataError) as e:
        for r in iter_records(path):
            seen.append(r.row)
    assert seen == [0] and where(e.value) == (2, 1, None)


def test_skip_counts_lists_and_keeps_row_positions(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", jsonl_bytes(*MIXED))
    data = load(path, on_error="skip")
    assert [(r.row, r.text) for r in data] == [(0, "fine"), (3, "kept"), (5, "last")]
    assert [(s.row, s.line, s.field) for s in data.skipped] == [(1, 2, None), (2, 3, "text"), (4, 6, None)]
    assert len(data.skipped) == 3 and len(data.info()["skipped"]) == 3


def test_skip_with_every_row_bad_is_an_error(tmp_path: Path) -> None:
    e = fails(write(tmp_path, "d.jsonl", jsonl_bytes(b"{x", {"text": 1, "label": 0})), on_error="skip")
    assert e.message.startswith("no readable records (every row was skipped); the first:")
    assert "line 1, row 0: malformed JSON" in e.message


def test_skip_still_fails_on_whole_file_problems(tmp_path: Path) -> None:
    assert fails(write(tmp_path, "d.jsonl", b"")).message == "file is empty"
    packed = gzip.compress(jsonl_bytes(*[GOOD] * 3000))
    e = fails(write(tmp_path, "t.jsonl.gz", packed[:-30]), on_error="skip")
    assert "truncated" in e.message


# --- input files are never modified -----------------------------------------------------------

def _fingerprint(p: Path) -> tuple:
    st = os.stat(p)
    return hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_mode


def test_inputs_are_never_modified(tmp_path: Path) -> None:
    files = [
        write(tmp_path, "a.jsonl", jsonl_bytes(*MIXED)),
        write(tmp_path, "b.csv", b"text,label\r\nfine,1\r\ncaf\xe9,0\r\nx,1,2\r\n"),
        write(tmp_path, "c.json", json.dumps([GOOD, 1]).encode()),
        write(tmp_path, "d.jsonl.gz", gzip.compress(jsonl_bytes(GOOD, b"{bad"))),
        write(tmp_path, "e.parquet", b"PAR1 not really"),
    ]
    before = {p: _fingerprint(p) for p in files}
    for p in files:
        for mode in ("fail", "skip"):
            try:
                load(p, on_error=mode, max_record_bytes=64)
            except TrainguardError:
                pass
    after = {p: _fingerprint(p) for p in files}
    assert after == before
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(p.name for p in files)  # no side files either


# --- through the CLI --------------------------------------------------------------------------

TRAINGUARD = [sys.executable, "-c", "from trainguard.cli import main; main()"]


@pytest.mark.parametrize(
    ("name", "data", "args", "expect"),
    [
        ("bad.jsonl", jsonl_bytes(GOOD, b"{oops"), [], "bad.jsonl, line 2, row 1: malformed JSON"),
        ("bad.csv", b"text,label\nfine,1\ncaf\xe9,0\n", [], "bad.csv, line 3, row 1, field 'text': not valid UTF-8"),
        ("t.jsonl.gz", gzip.compress(jsonl_bytes(*[GOOD] * 3000))[:200], [], "cannot read (truncated or corrupt?)"),
        ("unk.jsonl", jsonl_bytes({"foo": "x"}), [], "cannot tell the dataset kind"),
        ("ok.jsonl", jsonl_bytes(GOOD), ["--kind", "tabular"], "unknown kind 'tabular'"),
        ("missing.jsonl", None, [], "missing.jsonl: file not found"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, name: str, data: bytes | None, args: list[str],
                                             expect: str) -> None:
    if data is not None:
        write(tmp_path, name, data)
    proc = subprocess.run([*TRAINGUARD, "scan", name, "-q", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "400"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and expect in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_skip_lists_skipped_rows_in_the_report(tmp_path: Path) -> None:
    write(tmp_path, "mixed.jsonl", jsonl_bytes(*MIXED))
    proc = subprocess.run([*TRAINGUARD, "scan", "mixed.jsonl", "-q", "--on-error", "skip", "--format", "json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    dataset = json.loads(proc.stdout)["dataset"]
    assert dataset["records"] == 3
    assert [(s["row"], s["line"], s["field"]) for s in dataset["skipped"]] == [(1, 2, None), (2, 3, "text"), (4, 6, None)]
