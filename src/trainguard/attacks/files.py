"""`poison_file()`: poison a dataset file into a new file of the same format, plus a truth file.

The input is opened read-only and hashed before and after; the output and the
truth file are written to temporary names and renamed into place, so a failed
run leaves nothing half-written. For JSONL, untouched lines are copied byte for
byte, so `diff input output` shows exactly the poisoned rows.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

from trainguard.attacks.engine import PoisonResult, poison
from trainguard.errors import ConfigError, DataError
from trainguard.io.dataset import file_sha256
from trainguard.io.readers import DEFAULT_MAX_RECORD_BYTES, detect_format, read
from trainguard.records import Kind

_SUFFIX_FORMAT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
                  ".parquet": "parquet", ".pq": "parquet"}


def _format_from_name(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return next((fmt for suf, fmt in _SUFFIX_FORMAT.items() if name.endswith(suf)), None)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_paths(src: Path, out: Path, truth: Path) -> None:
    for dst, what in ((out, "--out"), (truth, "--truth")):
        if dst.resolve() == src.resolve() or _same_file(src, dst):
            raise ConfigError(f"{what} {dst} is the input file; refusing to overwrite it")
    if out.resolve() == truth.resolve():
        raise ConfigError(f"--out and --truth are the same file ({out})")
    for dst in (out, truth):
        if not dst.parent.is_dir():
            raise ConfigError(f"directory {dst.parent} does not exist")


def poison_file(
    in_path: str | Path,
    out_path: str | Path,
    truth_path: str | Path,
    attack: str,
    *,
    rate: float | None = None,
    count: int | None = None,
    seed: int = 0,
    kind: str | Kind = "auto",
    fields: Mapping[str, str] | None = None,
    fmt: str | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    **params: Any,
) -> PoisonResult:
    """Read `in_path`, poison it, write `out_path` (same format) and the truth JSON."""
    src, out, truth_file = Path(in_path), Path(out_path), Path(truth_path)
    if not src.exists():
        raise DataError(str(src), "file not found")
    if not src.is_file():
        raise DataError(str(src), "not a regular file")
    _check_paths(src, out, truth_file)
    fmt = fmt or detect_format(src)
    out_fmt = _format_from_name(out)
    if out_fmt is not None and out_fmt != fmt:
        raise ConfigError(f"--out {out} names a {out_fmt} file but the input is {fmt}; "
                          "the output keeps the input's format")
    before = _sha256(src)
    rows: list[dict[str, Any]] = []
    lines: list[int | None] = []
    for item in read(src, fmt=fmt, max_record_bytes=max_record_bytes):
        if item.error is not None:
            raise item.error
        assert item.value is not None
        rows.append(item.value)
        lines.append(item.line)
    result = poison(rows, attack, kind=kind, fields=fields, rate=rate, count=count, seed=seed, source=str(src),
                    lines=lines, **params)
    gz = out.name.lower().endswith(".gz")
    with _atomic(out) as f:
        sink: IO[bytes] = gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") if gz else f
        try:
            _WRITERS[fmt](src, sink, result, lines)
        finally:
            if gz:
                sink.close()
    if _sha256(src) != before:  # cannot happen through this code; checked because it must never happen
        raise DataError(str(src), "input file changed while it was being poisoned; output discarded")
    result.truth["input"] = {"path": str(src), "format": fmt, "sha256": before}
    result.truth["output"] = {"path": str(out), "format": fmt, "sha256": file_sha256(out)}
    with _atomic(truth_file) as f:
        f.write(json.dumps(result.truth, indent=2, default=str).encode() + b"\n")
    return result


def _sha256(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as e:
        raise DataError(str(path), f"cannot read: {e.strerror}") from None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def _atomic(path: Path) -> Iterator[IO[bytes]]:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would surprise; honour the umask like open() does
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _open_input(src: Path) -> IO[bytes]:
    raw = open(src, "rb")  # noqa: SIM115 - closed by the caller
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _dumps(row: dict[str, Any]) -> bytes:
    return json.dumps(row, ensure_ascii=False, default=str).encode("utf-8")


def _write_jsonl(src: Path, sink: IO[bytes], result: PoisonResult, lines: list[int | None]) -> None:
    by_line = {lines[i]: i for i in result.poisoned_rows}
    with _open_input(src) as f:
        for lineno, chunk in enumerate(f, start=1):
            i = by_line.get(lineno)
            if i is None:
                sink.write(chunk)
                continue
            ending = b"\r\n" if chunk.endswith(b"\r\n") else b"\n" if chunk.endswith(b"\n") else b""
            sink.write(_dumps(result.rows[i]) + ending)


def _write_json(src: Path, sink: IO[bytes], result: PoisonResult, lines: list[int | None]) -> None:
    sink.write(json.dumps(result.rows, ensure_ascii=False, indent=2, default=str).encode("utf-8") + b"\n")


def _line_ending(src: Path) -> str:
    with _open_input(src) as f:
        first = f.readline(1 << 20)
    return "\r\n" if first.endswith(b"\r\n") else "\n"


def _write_delimited(delimiter: str):
    def write(src: Path, sink: IO[bytes], result: PoisonResult, lines: list[int | None]) -> None:
        header = list(result.rows[0])
        text = io.TextIOWrapper(sink, encoding="utf-8", newline="", write_through=True)
        w = csv.writer(text, delimiter=delimiter, lineterminator=_line_ending(src))
        w.writerow(header)
        for row in result.rows:
            w.writerow([row[h] for h in header])
        text.flush()
        text.detach()

    return write


def _write_parquet(src: Path, sink: IO[bytes], result: PoisonResult, lines: list[int | None]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(src)
    pq.write_table(pa.Table.from_pylist(result.rows, schema=schema), sink)


_WRITERS = {"jsonl": _write_jsonl, "json": _write_json, "csv": _write_delimited(","),
            "tsv": _write_delimited("\t"), "parquet": _write_parquet}
