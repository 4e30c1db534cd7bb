"""Property tests: any text round-trips through every writer; any bytes give records or a DataError."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainguard.errors import DataError
from trainguard.io import iter_records, load

# Any code point but surrogates (which no UTF-8 file can hold): controls, NUL, BOM, bidi, zero-width, emoji.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
INT_LABEL = st.integers(-10**6, 10**6)
STR_LABEL = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8).map(str.strip).filter(bool)
# One label type per file (io.mapping's rule: mixed types are an error, tested in test_io_kinds).
ROWS = st.one_of(st.lists(st.tuples(TEXT, INT_LABEL), min_size=1, max_size=8),
                 st.lists(st.tuples(TEXT, STR_LABEL), min_size=1, max_size=8))
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write_all(d: Path, rows: list[tuple[str, int | str]]) -> dict[str, Path]:
    dicts = [{"text": t, "label": lab} for t, lab in rows]
    paths = {name: d / f"r.{name}" for name in ("jsonl", "jsonl.gz", "json", "csv", "tsv", "parquet")}
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in dicts).encode()
    paths["jsonl"].write_bytes(body)
    paths["jsonl.gz"].write_bytes(gzip.compress(body))
    paths["json"].write_bytes(json.dumps(dicts).encode())
    for name, delim in (("csv", ","), ("tsv", "\t")):
        buf = io.StringIO(newline="")
        w = csv.writer(buf, delimiter=delim)
        w.writerow(["text", "label"])
        w.writerows([[t, lab] for t, lab in rows])
        paths[name].write_bytes(buf.getvalue().encode())
    pq.write_table(pa.table({"text": [t for t, _ in rows], "label": [str(lab) for _, lab in rows]}), paths["parquet"])
    return paths


@SETTINGS
@given(ROWS)
def test_any_text_round_trips_with_the_same_ids(rows: list[tuple[str, int | str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = _write_all(Path(tmp), rows)
        expected = [(i, t, str(lab)) for i, (t, lab) in enumerate(rows)]
        reference = None
        for name, path in paths.items():
            records = load(path, kind="classification").records
            got = [(r.row, r.text, r.label) for r in records]
            assert got == expected, name
            ids = [r.id for r in records]
            assert reference is None or ids == reference, name
            reference = ids


@SETTINGS
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30), min_size=1, max_size=6))
def test_any_document_text_round_trips_byte_exact(texts: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docs.jsonl"
        path.write_bytes("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)).encode())
        assert [r.text.encode("utf-8") for r in load(path)] == [t.encode("utf-8") for t in texts]


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
        st.sampled_from(["text", "label", "prompt", "response", "chosen", "rejected", "messages", "id", "x"]),
        kids, max_size=4),
    max_leaves=8,
)
LINE = st.one_of(st.binary(max_size=60), JSONISH.map(lambda v: json.dumps(v).encode()),
                 st.just(b'{"text": "ok", "label": 1}'), st.just(b""))


def _consume(path: Path, on_error: str, **kw) -> list:
    skipped: list[DataError] = []
    try:
        records = list(iter_records(path, on_error=on_error, skipped=skipped, **kw))
    except DataError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e)
        return []
    # Every input row is accounted for: kept or skipped, never both, never silently gone.
    rows = [r.row for r in records] + [s.row for s in skipped]
    assert len(rows) == len(set(rows))
    assert rows and sorted(rows) == list(range(len(rows)))
    return records


@SETTINGS
@given(st.lists(LINE, min_size=0, max_size=10), st.sampled_from([16, 64, 1 << 20]))
def test_arbitrary_jsonl_bytes_give_records_or_data_errors(lines: list[bytes], limit: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.jsonl"
        path.write_bytes(b"\n".join(lines))
        for on_error in ("fail", "skip"):
            _consume(path, on_error, max_record_bytes=limit)


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from(["fuzz.csv", "fuzz.tsv", "fuzz.json", "fuzz.dat"]))
def test_arbitrary_bytes_in_any_format_give_records_or_data_errors(data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(b"text,label\n" + data if name == "fuzz.csv" else data)
        for on_error in ("fail", "skip"):
            _consume(path, on_error, max_record_bytes=64)
