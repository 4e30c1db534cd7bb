"""Streaming readers: one raw object per record position, errors kept per row.

Each reader yields `RawItem`s in file order. A malformed record does not stop
the stream: it is yielded with its `error` set, so the loader can fail or skip
(and count) it. Only whole-file problems (unreadable, empty, wrong container,
corrupt compression) raise. Input files are opened read-only and never written.
Line-based formats never hold more than `max_record_bytes` (+1) of one line.

Given a `hasher`, `read` feeds it every byte of the file as it reads them
(compressed bytes for `.gz`), so the digest names exactly the bytes that were
parsed and the file need not be read again to hash it (Parquet, read by
random access, is hashed in one extra sequential pass).
"""

from __future__ import annotations

import csv
import gzip
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import orjson

from trainguard.errors import ConfigError, DataError

DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
FORMATS = ("jsonl", "json", "csv", "tsv", "parquet")
_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
_PIECE = 1 << 20  # read long lines this much at a time
# What a truncated or corrupt file raises while we read it.
_READ_ERRORS = (OSError, EOFError, zlib.error)
_SUFFIXES = (
    (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".csv", "csv"),
    (".tsv", "tsv"), (".parquet", "parquet"), (".pq", "parquet"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RawItem:
    row: int
    line: int | None
    value: dict[str, Any] | None
    error: DataError | None = None


def detect_format(path: Path) -> str:
    """Format from the extension; `.json` and unknown names are sniffed."""
    path = Path(path)
    name = path.name.lower().removesuffix(".gz")
    fmt = next((f for s, f in _SUFFIXES if name.endswith(s)), None)
    if fmt not in (None, "json"):
        return fmt
    _check_file(path)
    with open(path, "rb") as f:
        if f.read(4) == b"PAR1":
            return "parquet"
    head = _head(path)
    if head.startswith(b"{"):
        return "jsonl"  # also a `.json` file that is really JSON Lines, as many hubs publish
    if head.startswith(b"[") or fmt == "json":
        return "json"
    raise DataError(str(path), f"cannot tell the format from the name or content; use one of: {', '.join(FORMATS)}")


def _head(path: Path) -> bytes:
    """The first non-blank bytes (after decompression and BOM)."""
    with _open_binary(path) as f:
        try:
            head = f.read(4096)
        except _READ_ERRORS as e:
            raise DataError(str(path), f"cannot read: {e}") from None
    head = head.removeprefix(_BOM).lstrip()
    if not head:
        raise DataError(str(path), "file has no records (only blank lines)")
    return head


class _Hashing:
    """A read-only binary file that feeds every byte it returns to `hasher`."""

    def __init__(self, f: BinaryIO, hasher: Any):
        self._f, self._h = f, hasher

    def read(self, n: int = -1) -> bytes:
        b = self._f.read(n)
        self._h.update(b)
        return b

    def readline(self, n: int = -1) -> bytes:
        b = self._f.readline(n)
        self._h.update(b)
        return b

    def drain(self) -> None:
        while b := self._f.read(_PIECE):
            self._h.update(b)


@contextmanager
def _open_binary(path: Path, hasher: Any = None) -> Iterator[BinaryIO]:
    """The file's records as bytes (decompressed when gzip); with `hasher`, its raw bytes are hashed too."""
    _check_file(path)
    with open(path, "rb") as raw:
        magic = raw.read(2)
        raw.seek(0)
        src: Any = _Hashing(raw, hasher) if hasher is not None else raw
        if magic == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=src, mode="rb") as gz:
                yield gz  # type: ignore[misc]
        else:
            yield src
        if hasher is not None:
            src.drain()  # bytes after the last record (or a gzip trailer) are part of the file too


def _check_file(path: Path) -> None:
    try:
        if path.is_dir():
            raise DataError(str(path), "is a directory, not a data file")
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(str(path), "file not found") from None
    except OSError as e:
        raise DataError(str(path), f"cannot read: {e.strerror}") from None
    if size == 0:
        raise DataError(str(path), "file is empty")


def read(path: Path, fmt: str | None = None, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
         hasher: Any = None) -> Iterator[RawItem]:
    """RawItems in file order; `hasher` (a hashlib object) has seen the whole file once this is exhausted."""
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise DataError(str(path), f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if not isinstance(max_record_bytes, int) or max_record_bytes < 1:
        raise ConfigError(f"--max-record-bytes must be a positive integer, got {max_record_bytes!r}")
    _check_file(path)
    fmt = fmt or detect_format(path)
    if fmt == "jsonl":
        yield from _read_jsonl(path, max_record_bytes, hasher)
    elif fmt == "json":
        yield from _read_json_array(path, max_record_bytes, hasher)
    elif fmt in ("csv", "tsv"):
        yield from _read_delimited(path, "\t" if fmt == "tsv" else ",", max_record_bytes, hasher)
    else:
        if hasher is not None:
            _hash_whole(path, hasher)
        yield from _read_parquet(path)


def _hash_whole(path: Path, hasher: Any) -> None:
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_PIECE):
                hasher.update(chunk)
    except OSError as e:
        raise DataError(str(path), f"cannot read: {e.strerror}") from None


def _lines(f: BinaryIO, spath: str, limit: int, lineno: int = 0) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line or None when over `limit`, size in bytes); numbering goes on from `lineno`
    (a shard range read from the middle of a file)."""
    try:
        while True:
            chunk, size = _read_line(f, limit)
            if not size:
                return
            lineno += 1
            if lineno == 1 and chunk is not None:
                chunk = chunk.removeprefix(_BOM)
            yield lineno, chunk, size
    except _READ_ERRORS as e:
        raise DataError(spath, f"cannot read (truncated or corrupt?): {e}", line=lineno + 1) from None


def _read_line(f: BinaryIO, limit: int) -> tuple[bytes | None, int]:
    """The next line and its size; None for a line over `limit`, of which at most limit+1 bytes are held."""
    piece = f.readline(min(limit + 1, _PIECE))
    if piece.endswith(b"\n") or len(piece) < _PIECE:  # the common case: a whole line in one read
        if len(piece) <= limit or piece.endswith(b"\n"):
            return piece, len(piece)
    buf = bytearray(piece)
    while len(buf) <= limit:
        piece = f.readline(min(limit + 1 - len(buf), _PIECE))
        buf += piece
        if not piece or piece.endswith(b"\n"):
            return buf, len(buf)  # type: ignore[return-value]  # bytearray: no copy
    size = len(buf)
    del buf
    while piece and not piece.endswith(b"\n"):  # drain the rest in bounded pieces
        piece = f.readline(_PIECE)
        size += len(piece)
    return None, size


def _too_big(spath: str, size: int, limit: int, row: int, line: int) -> DataError:
    msg = f"record is over the {limit:,}-byte limit (--max-record-bytes): {size:,} bytes read"
    return DataError(spath, msg, row=row, line=line)


def _read_jsonl(path: Path, limit: int, hasher: Any = None) -> Iterator[RawItem]:
    spath = str(path)
    seen = False
    with _open_binary(path, hasher) as f:
        for item in _jsonl_items(spath, _lines(f, spath, limit), limit, 0, None):
            seen = True
            yield item
    if not seen:
        raise DataError(spath, "file has no records (only blank lines)")


def _jsonl_items(spath: str, lines: Iterator[tuple[int, bytes | None, int]], limit: int, row: int,
                 end: int | None) -> Iterator[RawItem]:
    """Records `row`.. (up to `end`) from JSONL lines: one loop for whole files and shard ranges."""
    for lineno, chunk, size in lines:
        if end is not None and row >= end:
            return
        if chunk is None:
            yield RawItem(row, lineno, None, _too_big(spath, size, limit, row, lineno))
        elif not chunk.strip():
            continue
        else:
            yield _parse_json_line(spath, chunk, row, lineno)
        row += 1


def _parse_json_line(spath: str, chunk: bytes, row: int, lineno: int) -> RawItem:
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as e:
        msg = f"not valid UTF-8 (byte {e.start + 1} of the line)"
        return RawItem(row, lineno, None, DataError(spath, msg, row=row, line=lineno))
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        msg = f"malformed JSON: {e.msg} at column {e.colno}"
        return RawItem(row, lineno, None, DataError(spath, msg, row=row, line=lineno))
    if not isinstance(value, dict):
        msg = f"expected a JSON object, got {_typename(value)}"
        return RawItem(row, lineno, None, DataError(spath, msg, row=row, line=lineno))
    return RawItem(row, lineno, value)


def _read_json_array(path: Path, limit: int, hasher: Any = None) -> Iterator[RawItem]:
    spath = str(path)
    # A JSON array has to be parsed whole; refuse sizes that would not fit.
    max_bytes = max(limit * 64, 1 << 30)
    with _open_binary(path, hasher) as f:
        try:
            data = f.read(max_bytes + 1)
        except _READ_ERRORS as e:
            raise DataError(spath, f"cannot read (truncated or corrupt?): {e}") from None
    if len(data) > max_bytes:
        raise DataError(spath, f"JSON array over {max_bytes:,} bytes; convert to JSONL to stream it")
    data = data.removeprefix(_BOM)
    if not data.strip():
        raise DataError(spath, "file has no records (only blank lines)")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise DataError(spath, f"malformed JSON: {e.msg} at column {e.colno}", line=e.lineno) from None
    if not isinstance(value, list):
        raise DataError(spath, f"expected a JSON array of objects, got {_typename(value)}")
    if not value:
        raise DataError(spath, "file has no records (empty array)")
    for row, item in enumerate(value):
        if isinstance(item, dict):
            yield RawItem(row, None, item)
        else:
            yield RawItem(row, None, None, DataError(spath, f"expected a JSON object, got {_typename(item)}", row=row))


class _Oversized(Exception):
    pass


class _CsvFeed:
    """Feeds csv.reader decoded lines while holding each record to the byte limit."""

    def __init__(self, lines: Iterator[tuple[int, bytes | None, int]], limit: int):
        self.lines, self.limit = lines, limit
        self.lineno = 0
        self.used = 0  # bytes of the record being parsed; reset by the caller

    def __iter__(self) -> "_CsvFeed":
        return self

    def __next__(self) -> str:
        self.lineno, chunk, size = next(self.lines)
        self.used += size
        if chunk is None or self.used > self.limit:
            raise _Oversized(self.used)
        # surrogateescape keeps reading past bad bytes; they are reported per field.
        return chunk.decode("utf-8", "surrogateescape")


def _read_delimited(path: Path, delimiter: str, limit: int, hasher: Any = None) -> Iterator[RawItem]:
    spath = str(path)
    # The feed bounds records; the csv module's own per-field cap must not be lower.
    csv.field_size_limit(max(limit, csv.field_size_limit()))
    with _open_binary(path, hasher) as fb:
        feed = _CsvFeed(_lines(fb, spath, limit), limit)
        reader = csv.reader(feed, delimiter=delimiter, strict=True)
        header = _header(spath, reader, feed, limit)
        seen = False
        for item in _delimited_rows(spath, reader, feed, header, limit, 0, None):
            seen = True
            yield item
    if not seen:
        raise DataError(spath, "file has a header but no records")


def _delimited_rows(spath: str, reader: Iterator[list[str]], feed: "_CsvFeed", header: list[str], limit: int,
                    row: int, end: int | None) -> Iterator[RawItem]:
    """Records `row`.. (up to `end`) of a csv reader: one loop for whole files and shard ranges."""
    while end is None or row < end:
        start_line, feed.used = feed.lineno + 1, 0
        try:
            cells = next(reader)
        except StopIteration:
            break
        except _Oversized as e:
            yield RawItem(row, start_line, None, _too_big(spath, e.args[0], limit, row, start_line))
        except csv.Error as e:
            yield RawItem(row, start_line, None, DataError(spath, f"malformed row: {e}", row=row, line=start_line))
        else:
            if not cells or (len(header) > 1 and len(cells) == 1 and not cells[0].strip()):
                continue  # blank line
            yield _delimited_item(spath, header, cells, row, start_line)
        row += 1


def _header(spath: str, reader: Iterator[list[str]], feed: _CsvFeed, limit: int) -> list[str]:
    """The first non-blank row, checked: UTF-8 and unique names."""
    header: list[str] = []
    while not any(h.strip() for h in header):
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(spath, "file has no records (only blank lines)") from None
        except _Oversized:
            raise DataError(spath, f"header is over the {limit:,}-byte limit", line=feed.lineno) from None
        except csv.Error as e:
            raise DataError(spath, f"malformed header: {e}", line=feed.lineno) from None
    for name in header:
        if not _utf8(name):
            msg = f"header is not valid UTF-8 (column {name.encode('utf-8', 'replace')!r})"
            raise DataError(spath, msg, line=feed.lineno)
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(spath, f"duplicate column name(s) in header: {', '.join(map(repr, dupes))}", line=feed.lineno)
    return header


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _delimited_item(spath: str, header: list[str], cells: list[str], row: int, line: int) -> RawItem:
    if len(cells) != len(header):
        msg = f"row has {len(cells)} fields, the header has {len(header)}"
        return RawItem(row, line, None, DataError(spath, msg, row=row, line=line))
    for name, cell in zip(header, cells):
        if not _utf8(cell):
            return RawItem(row, line, None, DataError(spath, "not valid UTF-8", row=row, line=line, field=name))
    return RawItem(row, line, dict(zip(header, cells)))


def _open_parquet(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(str(path), f"not a readable Parquet file: {e}") from None


def _read_parquet(path: Path) -> Iterator[RawItem]:
    spath = str(path)
    with _open_parquet(path) as pf:
        if pf.metadata.num_rows == 0:
            raise DataError(spath, "file has no records")
        for row, batch in _parquet_batches(pf, spath, 0):
            for i, value in enumerate(batch.to_pylist()):
                yield RawItem(row + i, None, value)


def _parquet_batches(pf: Any, spath: str, row: int, row_groups: list[int] | None = None) -> Iterator[tuple[int, Any]]:
    """(first row, batch) for each record batch of `pf`, numbering from `row`; a read error is a
    `DataError` naming the row it stopped at."""
    import pyarrow as pa

    batches = pf.iter_batches(batch_size=8192, row_groups=row_groups)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as e:
            raise DataError(spath, f"corrupt Parquet data: {e}", row=row) from None
        if batch is None:
            return
        yield row, batch
        row += batch.num_rows


def _typename(v: Any) -> str:
    names = {dict: "object", list: "array", type(None): "null", bool: "boolean", str: "string"}
    return names.get(type(v), type(v).__name__)


# --- Shards read by byte range (sharded and distributed scans) -------------------------------------
# A driver finds where every shard starts in one streaming pass (`shard_starts`, keeping only those
# offsets); each worker then opens the file itself and parses its range (`read_range`) with the same
# parsing code as `read`, so rows, lines and errors are the ones a whole-file read gives.


@dataclass(frozen=True, slots=True)
class ShardStart:
    """Where a shard begins: a byte offset into the records (decompressed for .gz), or the
    first row for Parquet and JSON arrays; plus its file row and source line."""

    offset: int
    row: int
    line: int | None


def shard_starts(path: Path, shard_rows: int, fmt: str | None = None,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 hasher: Any = None) -> tuple[str, list[str] | None, list[ShardStart], int]:
    """(format, CSV header, the start of every `shard_rows`-th row, rows) from one streaming pass.

    Rows count as `read` counts them (a bad row is a row, a blank line is not). CSV is split at
    record boundaries found by the csv parser itself, so quoted newlines never split a record.
    """
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise DataError(str(path), f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
    _check_file(path)
    fmt = fmt or detect_format(path)
    if fmt == "jsonl":
        return fmt, None, *_jsonl_starts(path, max_record_bytes, shard_rows, hasher)
    if fmt in ("csv", "tsv"):
        return fmt, *_delimited_starts(path, "\t" if fmt == "tsv" else ",", max_record_bytes, shard_rows, hasher)
    if fmt == "json":
        n = sum(1 for _ in _read_json_array(path, max_record_bytes, hasher))
    else:
        with _open_parquet(path) as pf:
            n = pf.metadata.num_rows
        if n == 0:
            raise DataError(str(path), "file has no records")
        if hasher is not None:
            _hash_whole(path, hasher)
    return fmt, None, [ShardStart(r, r, None) for r in range(0, n, shard_rows)], n


def read_range(path: Path, fmt: str, start: ShardStart, rows: int, header: list[str] | None = None,
               max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[RawItem]:
    """The RawItems of `rows` rows from `start` (as found by `shard_starts`), reading only that range
    (a .gz file is decompressed up to it; a JSON array is parsed whole, as `read` does)."""
    path = Path(path)
    if fmt == "jsonl":
        yield from _jsonl_range(path, max_record_bytes, start, rows)
    elif fmt in ("csv", "tsv"):
        yield from _delimited_range(path, "\t" if fmt == "tsv" else ",", max_record_bytes, header or [], start, rows)
    elif fmt == "json":
        for item in _read_json_array(path, max_record_bytes):
            if item.row >= start.row + rows:
                return
            if item.row >= start.row:
                yield item
    else:
        yield from _parquet_range(path, start.row, rows)


def _jsonl_starts(path: Path, limit: int, shard_rows: int, hasher: Any) -> tuple[list[ShardStart], int]:
    spath, starts, row, pos = str(path), [], 0, 0
    with _open_binary(path, hasher) as f:
        for lineno, chunk, size in _lines(f, spath, limit):
            if chunk is None or chunk.strip():
                if row % shard_rows == 0:
                    starts.append(ShardStart(pos, row, lineno))
                row += 1
            pos += size
    if row == 0:
        raise DataError(spath, "file has no records (only blank lines)")
    return starts, row


def _jsonl_range(path: Path, limit: int, start: ShardStart, rows: int) -> Iterator[RawItem]:
    spath, row, end = str(path), start.row, start.row + rows
    with _open_binary(path) as f:
        f.seek(start.offset)
        yield from _jsonl_items(spath, _lines(f, spath, limit, (start.line or 1) - 1), limit, row, end)


def _counting(lines: Iterator[tuple[int, bytes | None, int]], total: list[int]) -> Iterator[tuple[int, bytes | None, int]]:
    for item in lines:
        total[0] += item[2]
        yield item


def _delimited_starts(path: Path, delimiter: str, limit: int, shard_rows: int,
                      hasher: Any) -> tuple[list[str], list[ShardStart], int]:
    """Record starts from the csv parser's own record boundaries (it never reads ahead a line)."""
    spath, starts, row, fed = str(path), [], 0, [0]
    csv.field_size_limit(max(limit, csv.field_size_limit()))
    with _open_binary(path, hasher) as fb:
        feed = _CsvFeed(_counting(_lines(fb, spath, limit), fed), limit)
        reader = csv.reader(feed, delimiter=delimiter, strict=True)
        header = _header(spath, reader, feed, limit)
        while True:
            pos, line, feed.used = fed[0], feed.lineno + 1, 0
            try:
                cells = next(reader)
            except StopIteration:
                break
            except (_Oversized, csv.Error):
                cells = None
            if cells is not None and (not cells or (len(header) > 1 and len(cells) == 1 and not cells[0].strip())):
                continue  # blank line
            if row % shard_rows == 0:
                starts.append(ShardStart(pos, row, line))
            row += 1
    if row == 0:
        raise DataError(spath, "file has a header but no records")
    return header, starts, row


def _delimited_range(path: Path, delimiter: str, limit: int, header: list[str], start: ShardStart,
                     rows: int) -> Iterator[RawItem]:
    spath, row, end = str(path), start.row, start.row + rows
    csv.field_size_limit(max(limit, csv.field_size_limit()))
    with _open_binary(path) as fb:
        fb.seek(start.offset)
        feed = _CsvFeed(_lines(fb, spath, limit, (start.line or 1) - 1), limit)
        feed.lineno = (start.line or 1) - 1
        reader = csv.reader(feed, delimiter=delimiter, strict=True)
        yield from _delimited_rows(spath, reader, feed, header, limit, row, end)


def _parquet_range(path: Path, first: int, rows: int) -> Iterator[RawItem]:
    """Rows `first`.. of a Parquet file, starting at the row group that holds `first`."""
    spath = str(path)
    with _open_parquet(path) as pf:
        md, group, row = pf.metadata, 0, 0
        while group < md.num_row_groups - 1 and row + md.row_group(group).num_rows <= first:
            row += md.row_group(group).num_rows
            group += 1
        for row, batch in _parquet_batches(pf, spath, row, list(range(group, md.num_row_groups))):
            lo, hi = max(first - row, 0), min(first + rows - row, batch.num_rows)
            if lo < hi:
                for i, value in enumerate(batch.slice(lo, hi - lo).to_pylist()):
                    yield RawItem(row + lo + i, None, value)
            if row + batch.num_rows >= first + rows:
                break  # no read past the range: a later batch's damage belongs to another shard
