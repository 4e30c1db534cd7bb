"""Sharded scans: the same detectors, over shards read where they are summarised.

A `ShardedDetector` is map (summarize a shard) + reduce (merge summaries) +
finalize. The driver reads the file once, streaming, and keeps only where
each shard starts (byte offset, file row and line: `readers.shard_starts`,
which also hashes the file) plus the kind and field map it resolved from the
head. Each shard is then read and summarised by whoever runs it, here or on a
Dask worker that opens the same path (shared storage): only shard
descriptors go out and small summaries come back, never rows. Summaries are
merged in an order-preserving tree (on the workers, with a cluster) and
finalised there; findings name positions, which the engine resolves to file
rows, record ids and lines by re-reading only the shards they fall in, so no
per-row index is kept. Bad rows are skipped or fail the scan exactly as the
whole-file reader does (the first bad row in file order names file and line).

A detector whose `finalize` returns a `Pass` (dataset-wide counts first, then a
second map for the candidates' rows) gets further rounds: every shard is read
and summarised again with the pass, merged in the same order-preserving tree and
finalised, until each detector has its result. Later rounds build records
without their content hash (passes never name records; findings are resolved by
re-reading). A shard that reads differently in a later round (the file changed)
fails those detectors.

A requested or default detector without a per-shard summary that applies to
the data's kind is recorded as FAILED (it did not check the data), so the scan
and any gate on it fail closed; the detectors that do shard still run.
"""

from __future__ import annotations

import hashlib
import time
import traceback
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from trainguard.detectors.base import MAX_PASSES, NotApplicable, Pass, ShardedDetector, Summary, runs_sharded
from trainguard.errors import ConfigError, DataError
from trainguard.findings import DetectorResult, DetectorRun, DetectorStatus
from trainguard.io.dataset import Dataset, _builder, _head, _mixed_labels, iter_records, whole_float_notes
from trainguard.io.mapping import FieldMap, LabelTypeError, RecordBuilder, label_family
from trainguard.io.options import LoadOptions
from trainguard.io.readers import ShardStart, read, read_range, shard_starts
from trainguard.records import Kind, Record
from trainguard.report.model import DatasetInfo, Report
from trainguard.scan import DEFAULT_DETECTORS, RecordIndex, build_detectors, sort_findings, stamp

ProgressFn = Callable[[int], None]


def iter_shards(path: str | Path, shard_rows: int, skipped: list[DataError] | None = None,
                **load_options: Any) -> Iterator[Dataset]:
    """Consecutive shards of a file; rows keep their file row numbers."""
    if shard_rows < 1:
        raise ConfigError(f"--shard-rows must be at least 1, got {shard_rows}")
    resolved: dict[str, Any] = {}
    records = iter_records(path, skipped=skipped, resolved=resolved, **load_options)
    while batch := list(islice(records, shard_rows)):
        yield Dataset(records=batch, kind=resolved["kind"], path=str(path), fieldmap=resolved["fieldmap"],
                      kind_reason=str(resolved.get("reason") or ""))


@dataclass(frozen=True)
class Reading:
    """How every shard of one file is read: what the driver resolved from the file's head."""

    path: str
    fmt: str
    header: tuple[str, ...] | None
    kind: Kind
    fieldmap: FieldMap
    label_family: str | None
    fail: bool
    max_record_bytes: int


@dataclass(frozen=True)
class Shard:
    """A shard descriptor: all a worker is sent (plus the detectors and the `Reading`)."""

    index: int
    start: ShardStart
    rows: int  # file rows, bad ones included


@dataclass
class ShardMeta:
    """What reading one shard found besides its records; errors as dicts (DataError does not pickle)."""

    records: int = 0
    skipped: list[dict] = field(default_factory=list)
    fatal: dict | None = None  # the first bad row under --on-error fail
    label_errors: list[dict] = field(default_factory=list)  # under fail, reported together at the end
    families: Counter = field(default_factory=Counter)
    whole_floats: int = 0


@dataclass(frozen=True)
class Failed:
    """A detector that raised on a shard or in finalize: recorded FAILED, never dropped."""

    message: str

    def merge(self, other: Any) -> "Failed":
        return self


def plan(path: str | Path, shard_rows: int, options: LoadOptions) -> tuple[Reading, list[Shard], str, str]:
    """(Reading, shard descriptors, the file's sha256, why this kind) from the head and one offsets pass."""
    if shard_rows < 1:
        raise ConfigError(f"--shard-rows must be at least 1, got {shard_rows}")
    spath, fail = str(path), options.on_error == "fail"
    items = read(Path(path), fmt=options.fmt, max_record_bytes=options.max_record_bytes)
    head = _head(items, stop_at_error=fail)
    items.close()
    if not any(i.error is None for i in head):
        for _ in iter_records(path, options):  # raises the whole-file reader's own error for this file
            break
        raise DataError(spath, "no readable records among the first rows")
    builder, reason = _builder(spath, options, head)
    hasher = hashlib.sha256()
    fmt, header, starts, n_rows = shard_starts(Path(path), shard_rows, options.fmt, options.max_record_bytes, hasher)
    reading = Reading(spath, fmt, tuple(header) if header is not None else None, builder.kind, builder.fm,
                      builder.label_family, fail, options.max_record_bytes)
    ends = [s.row for s in starts[1:]] + [n_rows]
    shards = [Shard(i, s, e - s.row) for i, (s, e) in enumerate(zip(starts, ends))]
    return reading, shards, hasher.hexdigest(), reason


def read_shard(reading: Reading, shard: Shard, meta: ShardMeta | None = None, ids: bool = True) -> list[Record]:
    """The shard's records, built as `iter_records` builds them; bad rows go to `meta`.

    `ids=False`: records carry the placeholder id `NO_ID`, not their content hash (later passes,
    whose summaries never name records: findings are resolved by `lookup_rows`).
    """
    meta = ShardMeta() if meta is None else meta
    builder, items = _open_shard(reading, shard)
    builder.content_ids = ids
    label_col = reading.fieldmap.label if reading.kind is Kind.CLASSIFICATION else None
    records: list[Record] = []
    try:
        _build(items, builder, label_col, reading.fail, records, meta)
    except DataError as e:  # a whole-file problem (missing on this worker, truncated): fails the scan
        meta.fatal = e.to_dict()
    meta.records, meta.whole_floats = len(records), builder.whole_floats
    return records


def _open_shard(reading: Reading, shard: Shard) -> tuple[RecordBuilder, Iterator[Any]]:
    """A record builder for the file and the shard's raw items, read from its byte range."""
    builder = RecordBuilder(reading.path, reading.kind, reading.fieldmap, label_family=reading.label_family)
    items = read_range(Path(reading.path), reading.fmt, shard.start, shard.rows,
                       list(reading.header) if reading.header is not None else None, reading.max_record_bytes)
    return builder, items


def _build(items: Iterator[Any], builder: RecordBuilder, label_col: str | None, fail: bool, records: list[Record],
           meta: ShardMeta) -> None:
    for item in items:
        error = item.error
        if error is None:
            if label_col is not None and item.value.get(label_col) is not None:
                meta.families[label_family(item.value[label_col])[0]] += 1
            try:
                records.append(builder.build(item.value, item.row, item.line))
                continue
            except LabelTypeError as e:
                if fail:
                    meta.label_errors.append(e.to_dict())
                    continue
                error = e
            except DataError as e:
                error = e
        if fail:
            meta.fatal = error.to_dict()
            return
        meta.skipped.append(error.to_dict())


def summarize_shard(dets: Sequence[ShardedDetector], reading: Reading, shard: Shard) -> tuple[list, ShardMeta]:
    """Map step, run where the shard is read: (one summary or Failed per detector, what reading found)."""
    meta = ShardMeta()
    data = Dataset(records=read_shard(reading, shard, meta), kind=reading.kind, path=reading.path,
                   fieldmap=reading.fieldmap)
    return [_guard(lambda d=d: d.summarize(data)) for d in dets], meta


def _guard(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - isolated per detector; the scan records it FAILED
        return Failed(traceback.format_exception_only(type(e), e)[-1].strip())


def summarize_again(steps: Sequence[Any], reading: Reading, shard: Shard, expect: int) -> list:
    """A later round's map step: the shard read again and summarised by each pending `Pass`."""
    meta = ShardMeta()
    data = Dataset(records=read_shard(reading, shard, meta, ids=False), kind=reading.kind, path=reading.path,
                   fieldmap=reading.fieldmap)
    if meta.fatal is not None or meta.records != expect:
        changed = Failed(f"{reading.path}: shard {shard.index} read {meta.records} records in a later pass, "
                         f"{expect} in the first (the file changed while it was being scanned); scan it again")
        return [changed for _ in steps]
    return [_guard(lambda p=p: p.summarize(data)) for p in steps]


def _pending(results: Sequence[Any]) -> list[int]:
    return [i for i, r in enumerate(results) if isinstance(r, Pass)]


def _pick(results: Sequence[Any], idx: Sequence[int]) -> list:
    return [results[i] for i in idx]


def _finalize_into(results: Sequence[Any], idx: Sequence[int], merged: list, kind: Kind) -> list:
    """`results` with the pending passes at `idx` replaced by what their finalize returns."""
    out = list(results)
    for i, r in zip(idx, _finalize_all(_pick(results, idx), merged, kind)):
        out[i] = r
    return out


def _out_of_passes(results: Sequence[Any]) -> list:
    return [Failed(f"still asking for another pass after {MAX_PASSES}") if isinstance(r, Pass) else r
            for r in results]


def _merge_lists(a: list[Summary | Failed], b: list[Summary | Failed]) -> list[Summary | Failed]:
    return [y if isinstance(y, Failed) and not isinstance(x, Failed) else x.merge(y) for x, y in zip(a, b)]


def _finalize_all(dets: Sequence[ShardedDetector], summaries: list, kind: Kind) -> list[DetectorResult | Failed]:
    return [s if isinstance(s, Failed) else _guard(lambda d=d, s=s: d.finalize(s, kind))
            for d, s in zip(dets, summaries)]


def _first(pair: tuple) -> Any:
    return pair[0]


def _second(pair: tuple) -> Any:
    return pair[1]


def scan_sharded(
    path: str | Path,
    detectors: Sequence[str] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    shard_rows: int = 50_000,
    client: Any = None,
    max_in_flight: int = 8,
    progress: ProgressFn | None = None,
    options: LoadOptions | None = None,
    **load_options: Any,
) -> Report:
    """Scan `path` shard by shard; `client` is an optional `distributed.Client` whose workers read `path`.

    `options` says how to read the file (or give its settings as keywords, not both).

    `max_in_flight` is kept for callers; shards are tiny descriptors, so all are submitted at once.
    """
    chosen = build_detectors(detectors, settings)
    options = LoadOptions.of(options, **load_options)
    if client is not None:
        path = Path(path).resolve()  # workers open it themselves: the same absolute path on shared storage
    reading, shards, sha256, reason = plan(path, shard_rows, options)
    kind = reading.kind
    dets = [d for d in chosen if runs_sharded(d) and kind in d.kinds]
    t0 = time.perf_counter()
    run_here = _Local(progress) if client is None else _Cluster(client, progress)
    results, metas = run_here.summarize(dets, reading, shards)
    meta = _combined(reading, metas)
    counts = [m.records for m in metas]
    runs, findings, row_scores = [], [], {}
    wanted = [r for r in results if isinstance(r, DetectorResult)]
    clean = [m.records == s.rows for m, s in zip(metas, shards)]
    found = run_here.lookup(reading, shards, counts, clean, _positions(wanted))
    if any(v is None for v in found.values()):
        raise DataError(reading.path, "the file changed while it was being scanned (a finding's row is no longer "
                                      "where the scan read it); scan it again")
    index = _Resolved.of(found, meta.records)
    by_det = dict(zip((d.name for d in dets), results))
    for det in chosen:
        if det.name not in by_det:
            runs.append(_not_run(det, kind))
            continue
        result = by_det[det.name]
        if isinstance(result, NotApplicable):
            runs.append(DetectorRun(det.name, det.version, DetectorStatus.SKIPPED, det.settings_dict(),
                                    message=result.reason))
            continue
        if not isinstance(result, Failed):
            try:
                stamped = stamp(det, result, index)
            except Exception as e:  # noqa: BLE001 - isolate and record, the gate fails closed
                result = Failed(traceback.format_exception_only(type(e), e)[-1].strip())
        if isinstance(result, Failed):
            runs.append(DetectorRun(det.name, det.version, DetectorStatus.FAILED, det.settings_dict(),
                                    time.perf_counter() - t0, message=result.message))
            continue
        runs.append(DetectorRun(det.name, det.version, DetectorStatus.OK, det.settings_dict(),
                                time.perf_counter() - t0, summary={**dict(result.summary), "shards": len(shards)}))
        findings.extend(stamped)
        if result.row_scores is not None:
            row_scores[det.name] = np.asarray(result.row_scores)
    notes = tuple(whole_float_notes(meta.whole_floats))
    info = DatasetInfo(path=str(path), kind=kind.value, records=meta.records, fields=dict(reading.fieldmap.used()),
                       sha256=sha256, skipped=tuple(meta.skipped), shard_rows=shard_rows, kind_reason=reason,
                       notes=notes)
    return Report(dataset=info, detectors=runs, findings=sort_findings(findings), row_scores=row_scores)


def _combined(reading: Reading, metas: Sequence[ShardMeta]) -> ShardMeta:
    """The shards' reading outcomes as one whole-file read would give them (errors in file order)."""
    out = ShardMeta()
    for m in metas:
        if m.fatal is not None:
            raise DataError(**m.fatal)
        out.records += m.records
        out.skipped += m.skipped
        out.label_errors += m.label_errors
        out.families.update(m.families)
        out.whole_floats += m.whole_floats
    if out.label_errors:
        raise _mixed_labels([DataError(**e) for e in out.label_errors], out.families)  # type: ignore[arg-type]
    if not out.records:
        first = f"; the first: {DataError(**out.skipped[0])}" if out.skipped else ""
        raise DataError(reading.path, f"no readable records (every row was skipped){first}")
    return out


def _positions(results: Sequence[DetectorResult]) -> set[int]:
    """Every position a finding names (alerts and their evidence): the only rows the engine resolves."""
    out: set[int] = set()

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                if k == "positions" and isinstance(v, (list, tuple)):
                    out.update(int(p) for p in v)
                else:
                    walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    for r in results:
        for a in r.alerts:
            out.update(int(p) for p in a.positions)
            walk(a.evidence)
    return out


def _lookups(shards: Sequence[Shard], counts: Sequence[int], positions: set[int]) -> list[tuple[Shard, int, list[int]]]:
    """(shard, its first position, the local positions wanted in it), for shards holding any."""
    firsts = [0, *np.cumsum(counts).tolist()]
    by_shard: dict[int, list[int]] = {}
    for p in sorted(positions):
        if 0 <= p < firsts[-1]:
            i = bisect_right(firsts, p) - 1
            by_shard.setdefault(i, []).append(p - firsts[i])
    return [(shards[i], firsts[i], local) for i, local in sorted(by_shard.items())]


def lookup_rows(reading: Reading, shard: Shard, local: Sequence[int],
                clean: bool = False) -> list[tuple[int, str, int | None] | None]:
    """(file row, record id, line) of the given positions of one shard, re-read from the file; None
    for a position the re-read no longer finds (the file changed since it was summarised).

    `clean`: the shard had no bad row, so position p is its p-th row and only the wanted rows
    are built (building and hashing records is most of what a re-read costs).
    """
    if not clean:
        records = read_shard(reading, shard)
        return [(records[p].row, records[p].id, records[p].line) if p < len(records) else None for p in local]
    wanted, found = set(local), {}
    builder, items = _open_shard(reading, shard)
    for p, item in enumerate(items):
        if p in wanted and item.error is None:
            r = builder.build(item.value, item.row, item.line)
            found[p] = (r.row, r.id, r.line)
            if len(found) == len(wanted):
                break
    return [found.get(p) for p in local]


@dataclass(frozen=True)
class _Resolved(RecordIndex):
    """A `RecordIndex` holding only the positions findings name (dicts), for `stamp`."""

    n: int = 0

    @classmethod
    def of(cls, found: Mapping[int, tuple[int, str, int | None]], n: int) -> "_Resolved":  # type: ignore[override]
        return cls({p: v[0] for p, v in found.items()}, {p: v[1] for p, v in found.items()},
                   {p: v[2] for p, v in found.items()}, n)

    def __len__(self) -> int:
        return self.n

    def record_id(self, p: int) -> str:
        return self.ids[p]

    def line(self, p: int) -> int | None:
        return self.lines[p]


class _Local:
    """Shards read and summarised in this process, one at a time."""

    def __init__(self, progress: ProgressFn | None):
        self.progress = progress

    def summarize(self, dets, reading, shards):
        """Merged as they come, equal-sized runs first (a binary counter): the same order-preserving
        tree as on a cluster, but only log2(shards) partial summaries are alive, never every level."""
        runs: list[tuple[int, list]] = []
        metas, n = [], 0
        for shard in shards:
            part, meta = summarize_shard(dets, reading, shard)
            runs.append((1, part))
            del part
            while len(runs) > 1 and runs[-1][0] == runs[-2][0]:
                (size, right), (_, left) = runs.pop(), runs.pop()
                runs.append((2 * size, _merge_lists(left, right)))
                del left, right
            metas.append(meta)
            n += meta.records
            if self.progress:
                self.progress(n)
            if meta.fatal is not None:
                break  # the rest is not needed: the first bad row fails the scan
        if not runs:
            raise DataError("<shards>", "no records to scan")
        merged = runs.pop(0)[1]
        while runs:
            merged = _merge_lists(merged, runs.pop(0)[1])
        results = _finalize_all(dets, merged, reading.kind)
        del merged
        if any(m.fatal is not None for m in metas):
            return results, metas  # the scan fails on the bad row; no further passes
        for _ in range(MAX_PASSES):
            idx = _pending(results)
            if not idx:
                break
            steps = _pick(results, idx)
            runs = []
            for shard, meta in zip(shards, metas):
                runs.append((1, summarize_again(steps, reading, shard, meta.records)))
                while len(runs) > 1 and runs[-1][0] == runs[-2][0]:
                    (size, right), (_, left) = runs.pop(), runs.pop()
                    runs.append((2 * size, _merge_lists(left, right)))
                    del left, right
            merged = runs.pop(0)[1]
            while runs:
                merged = _merge_lists(merged, runs.pop(0)[1])
            del steps
            results = _finalize_into(results, idx, merged, reading.kind)
            del merged
        return _out_of_passes(results), metas

    def lookup(self, reading, shards, counts, clean, positions):
        found = {}
        for shard, first, local in _lookups(shards, counts, positions):
            found.update({first + p: v for p, v in zip(local, lookup_rows(reading, shard, local, clean[shard.index]))})
        return found


class _Cluster:
    """Shards read and summarised on Dask workers; summaries merged and finalised there.

    Only descriptors go out and only reading outcomes, findings and row scores
    come back (gathered straight from the workers, not through the scheduler).
    """

    def __init__(self, client: Any, progress: ProgressFn | None):
        self.client, self.progress = client, progress

    def summarize(self, dets, reading, shards):
        from distributed import as_completed

        c = self.client
        mapped = [c.submit(summarize_shard, dets, reading, s, pure=False) for s in shards]
        meta_f = [c.submit(_second, f, pure=False) for f in mapped]
        parts = [c.submit(_first, f, pure=False) for f in mapped]
        if self.progress:
            n = 0
            for f in as_completed(meta_f):
                n += f.result().records
                self.progress(n)
        merged = _tree(parts, lambda a, b: c.submit(_merge_lists, a, b, pure=False))
        final = c.submit(_finalize_all, dets, merged, reading.kind, pure=False)
        metas = c.gather(meta_f, direct=True)
        if any(m.fatal is not None for m in metas):
            return c.gather(final, direct=True), metas
        for _ in range(MAX_PASSES):
            # Only which detectors ask for another pass comes back here; the passes (their
            # dataset-wide state) stay on the workers, which fetch them once each.
            idx = c.submit(_pending, final, pure=False).result()
            if not idx:
                break
            steps = c.submit(_pick, final, idx, pure=False)
            parts = [c.submit(summarize_again, steps, reading, s, m.records, pure=False)
                     for s, m in zip(shards, metas)]
            merged = _tree(parts, lambda a, b: c.submit(_merge_lists, a, b, pure=False))
            final = c.submit(_finalize_into, final, idx, merged, reading.kind, pure=False)
        results = c.gather(final, direct=True)
        return _out_of_passes(results), metas

    def lookup(self, reading, shards, counts, clean, positions):
        jobs = _lookups(shards, counts, positions)
        futures = [self.client.submit(lookup_rows, reading, shard, local, clean[shard.index], pure=False)
                   for shard, _, local in jobs]
        found = {}
        for (shard, first, local), rows in zip(jobs, self.client.gather(futures, direct=True)):
            found.update({first + p: v for p, v in zip(local, rows)})
        return found


def _not_run(det: Any, kind: Kind) -> DetectorRun:
    """A detector that cannot run sharded: SKIPPED if it would not apply anyway, else FAILED (fail closed)."""
    if kind not in det.kinds:
        return DetectorRun(det.name, det.version, DetectorStatus.SKIPPED, det.settings_dict(),
                           message=f"does not handle {kind.value} data")
    return DetectorRun(det.name, det.version, DetectorStatus.FAILED, det.settings_dict(),
                       message=f"{det.name} has no per-shard summary yet, so a sharded scan cannot run it: "
                               f"run without --shard-rows (detectors that shard: "
                               f"{', '.join(sharded_detector_names())})")


def sharded_detector_names() -> list[str]:
    from trainguard.detectors.base import registry

    return sorted(n for n, cls in registry().items() if runs_sharded(cls))


def default_sharded_detectors() -> list[str]:
    return [n for n in DEFAULT_DETECTORS if n in set(sharded_detector_names())]


def _tree(items: list, merge: Callable[[Any, Any], Any]) -> Any:
    """Pairwise, order-preserving reduction: depth log2(shards), not a long left fold."""
    if not items:
        raise DataError("<shards>", "no records to scan")
    while len(items) > 1:
        items = [merge(items[i], items[i + 1]) if i + 1 < len(items) else items[i] for i in range(0, len(items), 2)]
    return items[0]
