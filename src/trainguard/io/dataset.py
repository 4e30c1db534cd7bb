"""Loading a dataset file into typed records, with every skipped row accounted for."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

from trainguard.errors import ConfigError, DataError
from trainguard.io.mapping import FieldMap, RecordBuilder, detect_kind, fieldmap_for
from trainguard.io.readers import DEFAULT_MAX_RECORD_BYTES, RawItem, read
from trainguard.records import Kind, Record

T = TypeVar("T")
ON_ERROR = ("fail", "skip")
DETECT_ROWS = 32  # good rows whose field names decide the kind


@dataclass
class Dataset:
    """Records of one kind plus lazily built shared artefacts (tokens, features).

    Artefacts are computed once and reused by every detector that asks for
    them, the way Datalab shares its nearest-neighbour graph.
    """

    records: list[Record]
    kind: Kind
    path: str = "<memory>"
    fieldmap: FieldMap = field(default_factory=FieldMap)
    skipped: list[DataError] = field(default_factory=list)
    file_sha256: str | None = None
    _artefacts: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    @classmethod
    def from_records(cls, records: Sequence[Record], kind: Kind | None = None) -> "Dataset":
        records = list(records)
        if kind is None:
            if not records:
                raise ConfigError("an empty dataset needs an explicit kind")
            kind = records[0].kind
        return cls(records=records, kind=kind)

    def artefact(self, name: str, build: Callable[[], T]) -> T:
        if name not in self._artefacts:
            self._artefacts[name] = build()
        return self._artefacts[name]

    @property
    def labels(self) -> list[str | None]:
        return [r.label for r in self.records]

    def info(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind.value,
            "records": len(self.records),
            "fields": self.fieldmap.used(),
            "sha256": self.file_sha256,
            "skipped": [e.to_dict() for e in self.skipped],
        }


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def iter_records(
    path: str | Path,
    kind: str | Kind = "auto",
    fields: Mapping[str, str] | None = None,
    on_error: str = "fail",
    fmt: str | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    skipped: list[DataError] | None = None,
    resolved: dict[str, Any] | None = None,
) -> Iterator[Record]:
    """Stream records in bounded memory. Skipped rows are appended to `skipped`.

    `resolved`, when given, receives the kind and field map actually used.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"--on-error must be one of {ON_ERROR}, got {on_error!r}")
    spath = str(path)
    want = None if kind in ("auto", None) else _parse_kind(kind)
    items = read(Path(path), fmt=fmt, max_record_bytes=max_record_bytes)
    head = _head(items, stop_at_error=on_error == "fail")
    builder = _builder(spath, want, fields, head) if any(i.error is None for i in head) else None
    if builder is not None and resolved is not None:
        resolved.update(kind=builder.kind, fieldmap=builder.fm)
    yielded = 0
    first_bad: DataError | None = None
    for item in chain(head, items):
        error = item.error
        if error is None:
            assert builder is not None and item.value is not None
            try:
                record = builder.build(item.value, item.row, item.line)
            except DataError as e:
                error = e
        if error is not None:
            if on_error == "fail":
                raise error
            first_bad = first_bad or error
            if skipped is not None:
                skipped.append(error)
            continue
        yielded += 1
        yield record
    if not yielded:
        first = f"; the first: {first_bad}" if first_bad else ""
        raise DataError(spath, f"no readable records (every row was skipped){first}")


def _head(items: Iterator[RawItem], stop_at_error: bool) -> list[RawItem]:
    """The first DETECT_ROWS good items (and any bad ones among them), for kind detection.

    Detecting from several rows, not one, keeps a first row that lacks a field
    from silently turning a classification set into documents.
    """
    head: list[RawItem] = []
    good = 0
    for item in items:
        head.append(item)
        if item.error is not None and stop_at_error:
            break
        good += item.error is None
        if good >= DETECT_ROWS:
            break
    return head


def _builder(spath: str, want: Kind | None, fields: Mapping[str, str] | None, head: list[RawItem]) -> RecordBuilder:
    first = next(i for i in head if i.error is None)
    keys = {k for i in head if i.value is not None for k in i.value}
    try:
        kind, fm = (want, fieldmap_for(want, keys, fields)) if want else detect_kind(keys, fields)
    except ConfigError as e:
        raise DataError(spath, str(e), row=first.row, line=first.line) from None
    return RecordBuilder(spath, kind, fm)


def load(
    path: str | Path,
    kind: str | Kind = "auto",
    fields: Mapping[str, str] | None = None,
    on_error: str = "fail",
    fmt: str | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Dataset:
    skipped: list[DataError] = []
    resolved: dict[str, Any] = {}
    records = list(iter_records(path, kind, fields, on_error, fmt, max_record_bytes, skipped, resolved))
    return Dataset(
        records=records,
        kind=resolved["kind"],
        path=str(path),
        fieldmap=resolved["fieldmap"],
        skipped=skipped,
        file_sha256=file_sha256(path),
    )


def _parse_kind(kind: str | Kind) -> Kind:
    try:
        return Kind(kind)
    except ValueError:
        names = ", ".join(["auto", *(k.value for k in Kind)])
        raise ConfigError(f"unknown kind {kind!r}; expected one of: {names}") from None
