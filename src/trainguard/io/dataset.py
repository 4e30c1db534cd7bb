"""Loading a dataset file into typed records, with every skipped row accounted for.

The file is read once: its SHA-256 is computed from the bytes as they are
parsed (`read(hasher=...)`), so the digest in a report names exactly the bytes
that were scanned. Which kind was resolved, and why, travels with the data
(`Dataset.kind_reason`), as do notes on anything normalised (`Dataset.notes`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

from trainguard.errors import ConfigError, DataError
from trainguard.io.mapping import (
    FieldMap, LabelTypeError, RecordBuilder, detect_kind, family_of_head, fieldmap_for, label_family,
    label_like_column, why,
)
from trainguard.io.options import ON_ERROR, LoadOptions
from trainguard.io.readers import RawItem, read
from trainguard.io.sources import describe, hf_folder_items, is_hf_folder, object_items
from trainguard.records import Kind, Record

T = TypeVar("T")
DETECT_ROWS = 32  # good rows whose field names decide the kind
LIST_BAD_LABELS = 5  # offending rows named in a mixed-label-type error
__all__ = ["DETECT_ROWS", "ON_ERROR", "Dataset", "LoadOptions", "file_sha256", "iter_records", "load", "resolve"]


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
    kind_reason: str = ""  # e.g. "classification (detected from the field names: text='review', label='stars')"
    notes: list[str] = field(default_factory=list)  # what was normalised on the way in
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

    def cached_artefact(self, name: str) -> Any | None:
        """An artefact an earlier detector or pass already built, or None (nothing is built)."""
        return self._artefacts.get(name)

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
            "kind_reason": self.kind_reason,
            "notes": list(self.notes),
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
    options: LoadOptions | None = None,
    *,
    kind: str | Kind | None = None,
    fields: Mapping[str, str] | None = None,
    on_error: str | None = None,
    fmt: str | None = None,
    max_record_bytes: int | None = None,
    split: str | None = None,
    skipped: list[DataError] | None = None,
    resolved: dict[str, Any] | None = None,
) -> Iterator[Record]:
    """Stream records in bounded memory. Skipped rows are appended to `skipped`.

    Give `options`, or the same settings as keywords (not both). `resolved`, when
    given, receives the kind, field map and reason used, then (once the stream is
    exhausted) the file's `sha256` and `notes`.
    """
    opts = LoadOptions.of(options, kind=kind, fields=fields, on_error=on_error, fmt=fmt,
                          max_record_bytes=max_record_bytes, split=split)
    spath = source_name(path)
    fail = opts.on_error == "fail"
    hasher = hashlib.sha256()
    items = open_items(path, opts, hasher)
    head = _head(items, stop_at_error=fail)
    builder, reason = _builder(spath, opts, head) if any(i.error is None for i in head) else (None, "")
    if builder is not None and resolved is not None:
        resolved.update(kind=builder.kind, fieldmap=builder.fm, reason=reason)
    yielded = 0
    first_bad: DataError | None = None
    mixed: list[LabelTypeError] = []
    families: Counter[str] = Counter()
    label_col = builder.fm.label if builder is not None and builder.kind is Kind.CLASSIFICATION else None
    for item in chain(head, items):
        error = item.error
        if error is None:
            assert builder is not None and item.value is not None
            if label_col is not None and item.value.get(label_col) is not None:
                families[label_family(item.value[label_col])[0]] += 1
            try:
                record = builder.build(item.value, item.row, item.line)
            except LabelTypeError as e:
                error = e
                if fail:  # collected, so one error can name every offending row and the type counts
                    mixed.append(e)
                    continue
            except DataError as e:
                error = e
        if error is not None:
            if fail:
                raise error
            first_bad = first_bad or error
            if skipped is not None:
                skipped.append(error)
            continue
        yielded += 1
        yield record
    if mixed:
        raise _mixed_labels(mixed, families)
    if not yielded:
        first = f"; the first: {first_bad}" if first_bad else ""
        raise DataError(spath, f"no readable records (every row was skipped){first}")
    if resolved is not None:
        resolved["sha256"] = hasher.hexdigest() if isinstance(path, (str, Path)) else None
        resolved["notes"] = whole_float_notes(builder.whole_floats if builder is not None else 0)


def whole_float_notes(n: int) -> list[str]:
    """The note for `n` labels written as whole floats (1.0) and read as integers; none when n is 0."""
    return [f"{n} label(s) written as whole floats (e.g. 1.0) were read as the integers they spell (1)"] if n else []


def source_name(source: Any) -> str:
    """What errors and reports call the data: the path, or `<pandas.DataFrame>` for a table in memory."""
    return str(source) if isinstance(source, (str, Path)) else describe(source)


def open_items(source: Any, opts: LoadOptions, hasher: Any = None) -> Iterator[RawItem]:
    """RawItems from a file, a `datasets` save_to_disk folder, or an in-memory table (`io.sources`)."""
    if not isinstance(source, (str, Path)):
        return object_items(source, opts.split)
    path = Path(source)
    if path.is_dir():
        if not is_hf_folder(path):
            raise DataError(str(path), "is a directory, not a data file (nor a datasets save_to_disk folder: "
                                       "no state.json or dataset_dict.json)")
        return hf_folder_items(path, opts.split, hasher)
    if opts.split is not None:
        raise ConfigError(f"--split {opts.split} is for a datasets folder or DatasetDict; {path.name} is a file")
    return read(path, fmt=opts.fmt, max_record_bytes=opts.max_record_bytes, hasher=hasher)


def _mixed_labels(errors: list[LabelTypeError], families: Counter[str]) -> DataError:
    """One error for every label of the wrong type: the first's location, up to N rows, the type counts."""
    first = errors[0]
    listed = "; ".join(f"line {e.line} row {e.row}" if e.line is not None else f"row {e.row}"
                       for e in errors[:LIST_BAD_LABELS])
    more = f" and {len(errors) - LIST_BAD_LABELS} more" if len(errors) > LIST_BAD_LABELS else ""
    counts = ", ".join(f"{f} {n:,}" for f, n in families.most_common())
    msg = (f"{first.message}. {len(errors)} row(s) have unusable labels ({listed}{more}); "
           f"label types in the file: {counts}. Make the labels one type, or use --on-error skip to leave "
           "those rows out (each is listed in the report)")
    return DataError(first.path, msg, row=first.row, line=first.line, field=first.field)


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


def _builder(spath: str, opts: LoadOptions, head: list[RawItem]) -> tuple[RecordBuilder, str]:
    first = next(i for i in head if i.error is None)
    keys = {k for i in head if i.value is not None for k in i.value}
    want, overrides = opts.want, opts.field_map
    try:
        kind, fm = (want, fieldmap_for(want, keys, overrides)) if want else detect_kind(keys, overrides)
    except ConfigError as e:
        raise DataError(spath, str(e), row=first.row, line=first.line) from None
    if want is None and kind is Kind.DOCUMENTS:
        col = label_like_column(keys, fm)
        if col is not None:
            raise DataError(spath, f"looks like classification data: column {col!r} looks like a label, but no "
                            f"column is named 'label'; pass --field label={col} to scan it as classification "
                            f"data, or --kind documents to scan it as unlabelled documents", field=col)
    family = None
    if kind is Kind.CLASSIFICATION and fm.label:
        family = family_of_head([i.value.get(fm.label) for i in head if i.value is not None])
    return RecordBuilder(spath, kind, fm, label_family=family), why(kind, fm, want is not None, overrides)


def resolve(path: str | Path, options: LoadOptions | None = None) -> tuple[Kind, FieldMap, str]:
    """The kind, field map and reason `load` would use, from the first rows only (cheap).

    For commands that hash or copy a file without parsing every record
    (`ingest`, `verify`, `release`), so they can say how the data will be read.
    """
    opts = options or LoadOptions()
    items = open_items(path, opts)
    head = _head(items, stop_at_error=False)
    getattr(items, "close", lambda: None)()
    if not any(i.error is None for i in head):
        first = next(i.error for i in head if i.error is not None)
        raise DataError(source_name(path), f"no readable record among the first rows; the first: {first}")
    builder, reason = _builder(source_name(path), opts, head)
    return builder.kind, builder.fm, reason


def load(
    path: Any,
    options: LoadOptions | None = None,
    *,
    kind: str | Kind | None = None,
    fields: Mapping[str, str] | None = None,
    on_error: str | None = None,
    fmt: str | None = None,
    max_record_bytes: int | None = None,
    split: str | None = None,
) -> Dataset:
    """Read a whole file into a Dataset (one pass: records and the file's SHA-256 together).

    `path` may also be a `datasets` save_to_disk folder, or a table in memory: a list of
    dicts, a pandas or polars DataFrame, a pyarrow Table, a `datasets.Dataset` or (with
    `split`) `DatasetDict` (`io.sources`); those have no file digest.
    """
    skipped: list[DataError] = []
    resolved: dict[str, Any] = {}
    records = list(iter_records(path, options, kind=kind, fields=fields, on_error=on_error, fmt=fmt,
                                max_record_bytes=max_record_bytes, split=split, skipped=skipped,
                                resolved=resolved))
    return Dataset(
        records=records,
        kind=resolved["kind"],
        path=source_name(path),
        fieldmap=resolved["fieldmap"],
        skipped=skipped,
        file_sha256=resolved["sha256"],
        kind_reason=resolved["reason"],
        notes=resolved["notes"],
    )
