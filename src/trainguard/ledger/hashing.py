"""Per-record leaf hashes: what the ledger records about each row of a file.

A leaf is the RFC 6962 leaf hash `SHA-256(0x00 || canonical record bytes)`.

Canonical record bytes:
- JSONL (also .jsonl.gz, decompressed): the bytes of one line with its line
  terminator removed (a trailing `\\n`, then one trailing `\\r`). The JSON is
  not parsed or re-encoded: hashing the bytes as collected is 8-20x cheaper
  than canonicalising JSON, and any byte edit (even whitespace inside a line)
  changes the leaf. Lines that are empty or whitespace-only are not records
  (the dataset reader skips them too), so row numbers here equal the `row`
  numbers in scan reports.
- CSV/TSV, JSON array, Parquet: the row as the dataset reader yields it (every
  column, not only the mapped ones), encoded with `orjson` sorted keys.

Large plain JSONL files are hashed by worker processes, one byte-range shard
each (threads do not help: the per-record loop holds the GIL).
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson

from trainguard.errors import DataError
from trainguard.io.dataset import file_sha256
from trainguard.io.readers import DEFAULT_MAX_RECORD_BYTES, _open_binary, detect_format, read
from trainguard.ledger import merkle

LEAF_PREFIX = b"\x00"
LEAF_SIZE = 32
BLOCK = 8 << 20
PARALLEL_MIN_BYTES = 64 << 20  # below this, forking costs more than it saves


@dataclass(frozen=True)
class FileLeaves:
    """The leaves of one file, packed 32 bytes each in row order."""

    path: str
    fmt: str
    leaves: bytes
    file_sha256: str
    file_bytes: int
    root: bytes | None = None  # set when computed alongside the leaves

    @property
    def merkle_root(self) -> str:
        return (self.root if self.root is not None else merkle.root(self.leaves)).hex()

    @property
    def count(self) -> int:
        return len(self.leaves) // LEAF_SIZE

    def leaf(self, row: int) -> bytes:
        return self.leaves[row * LEAF_SIZE:(row + 1) * LEAF_SIZE]


def leaf_hash(canonical: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + canonical).digest()


def is_plain_jsonl(path: Path, fmt: str) -> bool:
    if fmt != "jsonl":
        return False
    with open(path, "rb") as f:
        return f.read(2) != b"\x1f\x8b"


def hash_file(path: str | Path, fmt: str | None = None, workers: int | None = None,
              max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, known_sha256: str | None = None) -> FileLeaves:
    """Leaves of every record in `path`, plus the whole file's SHA-256 (unless already `known_sha256`)."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), "file not found")
    if path.is_dir():
        raise DataError(str(path), "is a directory, not a data file")
    size = path.stat().st_size
    if size == 0:
        raise DataError(str(path), "file is empty")
    fmt = fmt or detect_format(path)
    file_digest: dict[str, str] = {"sha": known_sha256} if known_sha256 else {}
    # The whole-file digest runs beside the record hashing: hashlib releases the GIL.
    t = threading.Thread(target=lambda: file_digest.setdefault("sha", _file_sha256(path)), daemon=True)
    if not known_sha256:
        t.start()
    try:
        root = None
        if is_plain_jsonl(path, fmt):
            leaves, root = _jsonl_leaves(path, size, workers, max_record_bytes)
        elif fmt == "jsonl":
            with _open_binary(path) as f:
                leaves = _stream_leaves(str(path), f, max_record_bytes)
        else:
            leaves = b"".join(leaf_hash(canonical_row(v)) for v in _raw_rows(path, fmt, max_record_bytes))
    finally:
        if t.is_alive():
            t.join()
    if not leaves:
        raise DataError(str(path), "file has no records (only blank lines)")
    return FileLeaves(str(path), fmt, leaves, file_digest["sha"], size, root)


def canonical_row(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    return str(obj)


def _raw_rows(path: Path, fmt: str, limit: int) -> Iterator[dict[str, Any]]:
    for item in read(path, fmt=fmt, max_record_bytes=limit):
        if item.error is not None:
            raise item.error
        yield item.value  # type: ignore[misc]


_file_sha256 = file_sha256


# --- JSONL --------------------------------------------------------------------------------------


class _Oversized(Exception):
    def __init__(self, offset: int, size: int) -> None:
        super().__init__(offset, size)
        self.offset, self.size = offset, size


def _hash_lines(lines: list[bytes], out: list[bytes], has_cr: bool) -> None:
    h0 = hashlib.sha256(LEAF_PREFIX)
    append = out.append
    for line in lines:
        if has_cr and line.endswith(b"\r"):
            line = line[:-1]
        if not line or line.isspace():  # isspace() tests without copying the line
            continue
        c = h0.copy()
        c.update(line)
        append(c.digest())


def _hash_range(args: tuple[str, int, int, int]) -> bytes:
    """Leaves of the complete lines in [start, end); `start` is a line start."""
    path, start, end, limit = args
    out: list[bytes] = []
    carry = b""
    pos = start
    with open(path, "rb") as f:
        f.seek(start)
        while pos < end:
            block = f.read(min(BLOCK, end - pos))
            if not block:
                break
            pos += len(block)
            has_cr = b"\r" in block or b"\r" in carry
            lines = (carry + block).split(b"\n") if carry else block.split(b"\n")
            carry = lines.pop()
            if len(carry) > limit:
                raise _Oversized(pos - len(carry), len(carry))
            if lines and max(map(len, lines)) > limit:
                line = next(x for x in lines if len(x) > limit)
                raise _Oversized(_offset_of(path, start, line), len(line))
            _hash_lines(lines, out, has_cr)
    if carry:
        _hash_lines([carry], out, True)
    return b"".join(out)


def _offset_of(path: str, start: int, line: bytes) -> int:
    with open(path, "rb") as f:
        f.seek(start)
        off = start
        for raw in f:
            if raw.rstrip(b"\n") == line:
                return off
            off += len(raw)
    return start


def _stream_leaves(spath: str, f: Any, limit: int) -> bytes:
    out: list[bytes] = []
    carry = b""
    lineno = 0
    while True:
        try:
            block = f.read(BLOCK)
        except (OSError, EOFError) as e:
            raise DataError(spath, f"cannot decompress: {e}") from None
        if not block:
            break
        lines = (carry + block).split(b"\n")
        carry = lines.pop()
        for i, line in enumerate(lines):
            if len(line) > limit:
                raise DataError(spath, f"record is {len(line):,} bytes, over the {limit:,}-byte limit", line=lineno + i + 1)
        if len(carry) > limit:
            raise DataError(spath, f"record over the {limit:,}-byte limit", line=lineno + len(lines) + 1)
        lineno += len(lines)
        _hash_lines(lines, out, True)
    if carry:
        _hash_lines([carry], out, True)
    return b"".join(out)


def _shards(path: Path, size: int, n: int) -> list[tuple[int, int]]:
    cuts = [0]
    with open(path, "rb") as f:
        for i in range(1, n):
            f.seek(max(size * i // n - 1, cuts[-1]))
            f.readline()  # move to the next line start
            cut = f.tell()
            if cut > cuts[-1] and cut < size:
                cuts.append(cut)
    cuts.append(size)
    return list(zip(cuts[:-1], cuts[1:]))


def _block_root(chunk: bytes) -> bytes:
    return merkle.root(chunk)


def _jsonl_leaves(path: Path, size: int, workers: int | None, limit: int) -> tuple[bytes, bytes | None]:
    """Leaves, and (when worker processes are used) the Merkle root built by them too."""
    if workers is None:
        workers = (os.cpu_count() or 1) if size >= PARALLEL_MIN_BYTES else 1
    shards = _shards(path, size, max(1, workers))
    tasks = [(str(path), a, b, limit) for a, b in shards]
    try:
        if len(tasks) == 1:
            return _hash_range(tasks[0]), None
        import multiprocessing as mp

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(len(tasks)) as pool:
            leaves = b"".join(pool.map(_hash_range, tasks))
            step = merkle.BLOCK_LEAVES * LEAF_SIZE
            blocks = pool.map(_block_root, [leaves[i:i + step] for i in range(0, len(leaves), step)])
        return leaves, merkle.block_roots_root(blocks)
    except _Oversized as e:
        line = _line_number(path, e.offset)
        raise DataError(str(path), f"record is {e.size:,} bytes, over the {limit:,}-byte limit", line=line) from None


def _line_number(path: Path, offset: int) -> int:
    count = 0
    with open(path, "rb") as f:
        remaining = offset
        while remaining > 0:
            block = f.read(min(BLOCK, remaining))
            if not block:
                break
            count += block.count(b"\n")
            remaining -= len(block)
    return count + 1


# --- reading records back (release, review show) -----------------------------------------------


def iter_jsonl_raw(path: str | Path) -> Iterator[tuple[int, bytes, bytes]]:
    """(row, canonical bytes, original bytes incl. terminator) for each JSONL record."""
    with _open_binary(Path(path)) as f:
        row = 0
        for raw in f:
            line = raw[:-1] if raw.endswith(b"\n") else raw
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line.strip():
                continue
            yield row, line, raw
            row += 1
