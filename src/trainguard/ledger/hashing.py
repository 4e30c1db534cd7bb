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

Plain JSONL is read once, in ~8 MB blocks of whole lines: the main process
updates the file's SHA-256 from each block and, for large files, hands the
blocks to worker processes that return their packed leaves and the roots of
each 65,536-leaf subtree (threads do not help: the per-record loop holds the
GIL). Memory is a few blocks in flight: the leaves (32 bytes a record) go to
an unlinked temporary file in 2 MiB pieces, and no Python object is made per
record outside a block.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, overload

import orjson

from trainguard.errors import DataError
from trainguard.io.dataset import file_sha256
from trainguard.io.readers import DEFAULT_MAX_RECORD_BYTES, _open_binary, detect_format, read
from trainguard.ledger import merkle

LEAF_PREFIX = b"\x00"
LEAF_SIZE = 32
BLOCK = 8 << 20
CHUNK_LEAVES = merkle.BLOCK_LEAVES  # leaves per piece: one aligned subtree, one ledger row
PARALLEL_MIN_BYTES = 64 << 20  # below this, forking costs more than it saves
PARALLEL_MIN_CPUS = 4  # below this, one process is faster (measured: see auto_workers)


@dataclass(frozen=True)
class FileLeaves:
    """The leaves of one file, 32 bytes each in row order, held as CHUNK_LEAVES-leaf pieces.

    Pieces, not one buffer, spilled to a temporary file (`LeafPieces`): at 10^7 rows the
    leaves are 320 MB, which would otherwise be most of the memory bar; the ledger stores
    them in the same pieces.
    """

    path: str
    fmt: str
    chunks: Sequence[bytes]
    file_sha256: str
    file_bytes: int
    root: bytes | None = None  # set when worker processes built it alongside the leaves

    @property
    def leaves(self) -> bytes:
        """All leaves in one buffer (a copy: small files, diffs and tests)."""
        return b"".join(self.chunks)

    @property
    def merkle_root(self) -> str:
        if self.root is None:
            # Streamed over the pieces: each is an aligned power-of-two subtree.
            object.__setattr__(self, "root", merkle.block_roots_root([merkle.root(c) for c in self.chunks]))
        return self.root.hex()  # type: ignore[union-attr]

    @property
    def count(self) -> int:
        nbytes = getattr(self.chunks, "nbytes", None)
        return (nbytes if nbytes is not None else sum(len(c) for c in self.chunks)) // LEAF_SIZE

    def leaf(self, row: int) -> bytes:
        if row < 0:
            return b""
        if isinstance(self.chunks, LeafPieces):
            return self.chunks.leaf(row)
        c, i = divmod(row, CHUNK_LEAVES)
        if c >= len(self.chunks):
            return b""
        return self.chunks[c][i * LEAF_SIZE:(i + 1) * LEAF_SIZE]


class LeafPieces(Sequence[bytes]):
    """Leaf pieces in an unlinked temporary file: 10^7 leaves take 320 MB of disk and page
    cache, not of the process's memory; a piece or a leaf is read back on demand."""

    def __init__(self, piece_bytes: int) -> None:
        self.piece_bytes = piece_bytes
        self.nbytes = 0
        self._count = 0
        self._cached: tuple[int, bytes] = (-1, b"")
        self._f = tempfile.TemporaryFile(prefix="trainguard-leaves-")

    def append(self, piece: bytes) -> None:
        if self._count and self.nbytes != self._count * self.piece_bytes:
            raise ValueError("only the last piece may be short")
        self._cached = (-1, b"")
        self._f.seek(self.nbytes)
        self._f.write(piece)
        self.nbytes += len(piece)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, i: int) -> bytes: ...

    @overload
    def __getitem__(self, i: slice) -> list[bytes]: ...

    def __getitem__(self, i: int | slice) -> bytes | list[bytes]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._count))]
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError(i)
        start = i * self.piece_bytes
        return self._read(start, min(self.piece_bytes, self.nbytes - start))

    def leaf(self, row: int) -> bytes:
        """One leaf; the piece it sits in is kept, so reading rows in order costs one read a piece."""
        if not 0 <= row * LEAF_SIZE < self.nbytes:
            return b""
        c, i = divmod(row * LEAF_SIZE, self.piece_bytes)
        if self._cached[0] != c:
            self._cached = (c, self[c])
        return self._cached[1][i:i + LEAF_SIZE]

    def _read(self, start: int, size: int) -> bytes:
        self._f.seek(start)
        return self._f.read(size)


def leaf_hash(canonical: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + canonical).digest()


def is_plain_jsonl(path: Path, fmt: str) -> bool:
    if fmt != "jsonl":
        return False
    with open(path, "rb") as f:
        return f.read(2) != b"\x1f\x8b"


def hash_file(path: str | Path, fmt: str | None = None, workers: int | None = None,
              max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, known_sha256: str | None = None) -> FileLeaves:
    """Leaves of every record in `path`, plus the whole file's SHA-256 (unless already `known_sha256`).

    JSONL (plain or gzip) is read once: the file digest is updated from the same blocks the
    records are split from.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), "file not found")
    if path.is_dir():
        raise DataError(str(path), "is a directory, not a data file")
    size = path.stat().st_size
    if size == 0:
        raise DataError(str(path), "file is empty")
    fmt = fmt or detect_format(path)
    sha = None if known_sha256 else hashlib.sha256()
    root = None
    if is_plain_jsonl(path, fmt):
        chunks, root = _jsonl_leaves(path, size, workers, max_record_bytes, sha)
    elif fmt == "jsonl":
        sink = _Sink(None)
        with _open_binary(path, sha) as f:
            _stream_leaves(str(path), f, max_record_bytes, sink)
        chunks = sink.finish()[0]
    else:
        # Other formats are parsed by the dataset reader; the digest reads the file beside it
        # (hashlib releases the GIL).
        digest: dict[str, str] = {}
        t = threading.Thread(target=lambda: digest.setdefault("sha", _file_sha256(path)), daemon=True)
        if sha is not None:
            t.start()
        try:
            sink = _Sink(None)
            batch: list[bytes] = []
            for v in _raw_rows(path, fmt, max_record_bytes):
                batch.append(leaf_hash(canonical_row(v)))
                if len(batch) == 4096:
                    sink.add(b"".join(batch))
                    batch = []
            sink.add(b"".join(batch))
            chunks = sink.finish()[0]
        finally:
            if t.is_alive():
                t.join()
        if sha is not None:
            known_sha256 = digest["sha"]
    if not chunks:
        raise DataError(str(path), "file has no records (only blank lines)")
    return FileLeaves(str(path), fmt, chunks, known_sha256 or sha.hexdigest(), size, root)  # type: ignore[union-attr]


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


def _hash_unit(args: tuple[bytes, int]) -> tuple[bytes, int, int]:
    """(packed leaves, index of the first line over the limit or -1, its length) of whole lines."""
    unit, limit = args
    lines = unit.split(b"\n")
    if lines and max(map(len, lines)) > limit:
        i = next(i for i, x in enumerate(lines) if len(x) > limit)
        return b"", i, len(lines[i])
    out: list[bytes] = []
    _hash_lines(lines, out, b"\r" in unit)
    return b"".join(out), -1, 0


def _units(spath: str, f: Any, size: int | None, limit: int, sha: Any) -> Iterator[tuple[bytes, int]]:
    """(whole lines, physical lines before them) of file `spath` in blocks of about BLOCK bytes, feeding `sha`.

    Raises _Oversized(line number, bytes) for a line over `limit` that spans blocks.
    """
    carry = b""
    lines_before = 0
    left = size
    while left is None or left > 0:
        try:
            block = f.read(BLOCK if left is None else min(BLOCK, left))
        except (OSError, EOFError) as e:
            raise DataError(spath, f"cannot decompress: {e}") from None
        if not block:
            break
        if left is not None:
            left -= len(block)
        if sha is not None:
            sha.update(block)
        cut = block.rfind(b"\n")
        if cut < 0:
            carry += block
            if len(carry) > limit:
                raise _Oversized(lines_before + 1, len(carry))
            continue
        unit = carry + block[:cut + 1] if carry else block[:cut + 1]
        carry = block[cut + 1:]
        yield unit, lines_before
        lines_before += unit.count(b"\n")
        if len(carry) > limit:
            raise _Oversized(lines_before + 1, len(carry))
    if carry:
        yield carry, lines_before


class _Sink:
    """Collects leaves into CHUNK_LEAVES pieces and (with a pool) their subtree roots, in order."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.chunks = LeafPieces(CHUNK_LEAVES * LEAF_SIZE)
        self.roots: list[Any] = []
        self._buf = bytearray()
        self._step = CHUNK_LEAVES * LEAF_SIZE

    def add(self, leaves: bytes) -> None:
        self._buf += leaves
        while len(self._buf) >= self._step:
            self._close(bytes(self._buf[:self._step]))
            del self._buf[:self._step]

    def _close(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        if self.pool is not None:
            self.roots.append(self.pool.apply_async(merkle.root, (chunk,)))

    def finish(self) -> tuple[LeafPieces, bytes | None]:
        if self._buf:
            self._close(bytes(self._buf))
            self._buf = bytearray()
        if self.pool is None:
            return self.chunks, None
        return self.chunks, merkle.block_roots_root([r.get() for r in self.roots])


def _stream_leaves(spath: str, f: Any, limit: int, sink: _Sink, pool: Any = None, sha: Any = None,
                   window: int = 4) -> None:
    """Hash the JSONL records of binary file `f` into `sink`; with `pool`, blocks go to its workers.

    At most `window` blocks are in flight, so memory stays at a few blocks whatever the file size.
    """
    pending: deque[tuple[Any, int]] = deque()

    def take() -> None:
        res, before = pending.popleft()
        leaves, bad, size = res.get() if pool is not None else res
        if bad >= 0:
            raise DataError(spath, f"record is {size:,} bytes, over the {limit:,}-byte limit", line=before + bad + 1)
        sink.add(leaves)

    try:
        for unit, before in _units(spath, f, None, limit, sha):
            if pool is None:
                pending.append((_hash_unit((unit, limit)), before))
            else:
                pending.append((pool.apply_async(_hash_unit, ((unit, limit),)), before))
            while len(pending) > (window if pool is not None else 0):
                take()
        while pending:
            take()
    except _Oversized as e:
        raise DataError(spath, f"record is {e.size:,} bytes, over the {limit:,}-byte limit", line=e.offset) from None


def auto_workers(size: int, load: float | None = None) -> int:
    """Hashing processes for a file of `size` bytes.

    Below PARALLEL_MIN_CPUS CPUs, two processes only while the 1-minute load average leaves a
    core idle. Measured on 2 cores at 10^7 rows (docs/_bench_provenance.md): two processes were
    1.6x faster than one at load 0.8 and 1.3x at load 1.9, but 1.1-3x slower at load 4.5-6.8, where
    the main process's reading, digest and piece handling contend with both.
    """
    cpus = os.cpu_count() or 1
    if size < PARALLEL_MIN_BYTES or cpus < 2:
        return 1
    if cpus < PARALLEL_MIN_CPUS:
        if load is None:
            try:
                load = os.getloadavg()[0]
            except OSError:  # no load average on this platform: stay with the safe choice
                return 1
        return 2 if load < cpus else 1
    return min(cpus - 1, 8)


def _jsonl_leaves(path: Path, size: int, workers: int | None, limit: int,
                  sha: Any) -> tuple[LeafPieces, bytes | None]:
    """Leaf pieces, and (when worker processes are used) the Merkle root built by them too.

    The main process reads the file once, updating `sha`, and hands whole-line blocks to the
    workers (a block is one pickle of ~8 MB, not one per record); it keeps only the leaves.
    """
    if workers is None:
        workers = auto_workers(size)
    with open(path, "rb") as f:
        if workers <= 1:
            sink = _Sink(None)
            _stream_leaves(str(path), f, limit, sink, sha=sha)
            return sink.finish()
        import multiprocessing as mp

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers) as pool:
            sink = _Sink(pool)
            _stream_leaves(str(path), f, limit, sink, pool=pool, sha=sha, window=2 * workers)
            return sink.finish()


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
