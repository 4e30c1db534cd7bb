"""Streaming readers: one raw object per record position, errors kept per row.

Each reader yields `RawItem`s in file order. A malformed record does not stop
the stream: it is yielded with its `error` set, so the loader can fail or skip
(and count) it. Only whole-file problems (unreadable, empty, wrong container)
raise. Input files are opened read-only and never written.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import orjson

from trainguard.errors import DataError

DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
FORMATS = ("jsonl", "json", "csv", "tsv", "parquet")


@dataclass(frozen=True, slots=True)
class RawItem:
    row: int
    line: int | None
    value: dict[str, Any] | None
    error: DataError | None = None


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, fmt in (
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "json"),
        (".csv", "csv"),
        (".tsv", "tsv"),
        (".parquet", "parquet"),
        (".pq", "parquet"),
    ):
        if name.endswith(suffix):
            return fmt
    # Unknown extension: sniff the first non-blank byte.
    with _open_binary(path) as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"{"):
        return "jsonl"
    if head.startswith(b"["):
        return "json"
    raise DataError(str(path), f"cannot tell the format from the name; use one of: {', '.join(FORMATS)}")


def _open_binary(path: Path) -> BinaryIO:
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the caller's context manager
    except FileNotFoundError:
        raise DataError(str(path), "file not found") from None
    except IsADirectoryError:
        raise DataError(str(path), "is a directory, not a data file") from None
    except PermissionError:
        raise DataError(str(path), "permission denied") from None
    magic = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _check_not_empty(path: Path) -> None:
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise DataError(str(path), f"cannot read: {e.strerror}") from None
    if size == 0:
        raise DataError(str(path), "file is empty")


def read(path: Path, fmt: str | None = None, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[RawItem]:
    path = Path(path)
    _check_not_empty(path)
    fmt = fmt or detect_format(path)
    if fmt == "jsonl":
        yield from _read_jsonl(path, max_record_bytes)
    elif fmt == "json":
        yield from _read_json_array(path, max_record_bytes)
    elif fmt in ("csv", "tsv"):
        yield from _read_delimited(path, "\t" if fmt == "tsv" else ",", max_record_bytes)
    elif fmt == "parquet":
        yield from _read_parquet(path)
    else:
        raise DataError(str(path), f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")


def _read_jsonl(path: Path, limit: int) -> Iterator[RawItem]:
    spath = str(path)
    row = 0
    seen_any = False
    with _open_binary(path) as f:
        lineno = 0
        while True:
            try:
                chunk = f.readline(limit + 1)
            except (OSError, EOFError) as e:  # truncated or corrupt gzip
                raise DataError(spath, f"cannot decompress: {e}", line=lineno + 1) from None
            if not chunk:
                break
            lineno += 1
            if len(chunk) > limit and not chunk.endswith(b"\n"):
                # Drain the rest of the oversized line in bounded pieces.
                total = len(chunk)
                while chunk and not chunk.endswith(b"\n"):
                    chunk = f.readline(1 << 20)
                    total += len(chunk)
                msg = f"record is {total:,} bytes, over the {limit:,}-byte limit (--max-record-bytes)"
                yield RawItem(row, lineno, None, DataError(spath, msg, row=row, line=lineno))
                row += 1
                seen_any = True
                continue
            if not chunk.strip():
                continue
            seen_any = True
            yield _parse_json_line(spath, chunk, row, lineno)
            row += 1
    if not seen_any:
        raise DataError(spath, "file has no records (only blank lines)")


def _parse_json_line(spath: str, chunk: bytes, row: int, lineno: int) -> RawItem:
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as e:
        return RawItem(row, lineno, None, DataError(spath, f"not valid UTF-8 (byte {e.start} of the line)", row=row, line=lineno))
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        return RawItem(row, lineno, None, DataError(spath, f"malformed JSON: {e.msg} at column {e.colno}", row=row, line=lineno))
    if not isinstance(value, dict):
        kind = type(value).__name__
        return RawItem(row, lineno, None, DataError(spath, f"expected a JSON object, got {kind}", row=row, line=lineno))
    return RawItem(row, lineno, value)


def _read_json_array(path: Path, limit: int) -> Iterator[RawItem]:
    spath = str(path)
    # A JSON array has to be parsed whole; refuse sizes that would not fit.
    max_bytes = max(limit * 64, 1 << 30)
    with _open_binary(path) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DataError(spath, f"JSON array over {max_bytes:,} bytes; convert to JSONL to stream it")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise DataError(spath, f"malformed JSON: {e.msg}", line=e.lineno) from None
    if not isinstance(value, list):
        raise DataError(spath, f"expected a JSON array of objects, got {type(value).__name__}")
    if not value:
        raise DataError(spath, "file has no records (empty array)")
    for row, item in enumerate(value):
        if isinstance(item, dict):
            yield RawItem(row, None, item)
        else:
            yield RawItem(row, None, None, DataError(spath, f"expected a JSON object, got {type(item).__name__}", row=row))


def _read_delimited(path: Path, delimiter: str, limit: int) -> Iterator[RawItem]:
    spath = str(path)
    csv.field_size_limit(max(limit, csv.field_size_limit()))
    with _open_binary(path) as fb:
        # surrogateescape keeps reading past bad bytes; they are reported per field below.
        f = io.TextIOWrapper(fb, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(spath, "file has no header row") from None
        except csv.Error as e:
            raise DataError(spath, f"malformed header: {e}", line=1) from None
        header = [h.lstrip("\ufeff") if i == 0 else h for i, h in enumerate(header)]
        if len(set(header)) != len(header):
            raise DataError(spath, f"duplicate column names in header: {header}", line=1)
        row = 0
        while True:
            start_line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                yield RawItem(row, start_line, None, DataError(spath, f"malformed row: {e}", row=row, line=start_line))
                row += 1
                continue
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            yield _delimited_item(spath, header, cells, row, start_line)
            row += 1
        if row == 0:
            raise DataError(spath, "file has a header but no records")


def _delimited_item(spath: str, header: list[str], cells: list[str], row: int, line: int) -> RawItem:
    if len(cells) != len(header):
        msg = f"row has {len(cells)} fields, the header has {len(header)}"
        return RawItem(row, line, None, DataError(spath, msg, row=row, line=line))
    value: dict[str, Any] = {}
    for name, cell in zip(header, cells):
        try:
            cell.encode("utf-8")
        except UnicodeEncodeError:
            return RawItem(row, line, None, DataError(spath, "not valid UTF-8", row=row, line=line, field=name))
        value[name] = cell
    return RawItem(row, line, value)


def _read_parquet(path: Path) -> Iterator[RawItem]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    spath = str(path)
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(spath, f"not a readable Parquet file: {e}") from None
    if pf.metadata.num_rows == 0:
        raise DataError(spath, "file has no records")
    row = 0
    for batch in pf.iter_batches(batch_size=8192):
        for value in batch.to_pylist():
            yield RawItem(row, None, value)
            row += 1
