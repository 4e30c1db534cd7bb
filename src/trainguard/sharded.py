"""Sharded scans: the same detectors, streamed here or mapped over a Dask cluster.

A `ShardedDetector` is map (summarize a shard) + reduce (merge summaries) +
finalize. Here the file is streamed in shards of `shard_rows` records, so
memory is one shard plus the summaries; with a `distributed.Client` the
shards are summarised on the workers (at most `max_in_flight` outstanding)
and the summaries are merged there in a tree that keeps shard order, so row
scores stay positional. Summaries speak of positions only; the engine keeps
each shard's rows and record ids (`RecordIndex`, numpy arrays) and stamps the
findings. A requested or default detector without a per-shard summary that
applies to the data's kind is recorded as FAILED (it did not check the data),
so the scan and any gate on it fail closed instead of passing with a gap; the
detectors that do shard still run and report.
"""

from __future__ import annotations

import time
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from trainguard.detectors.base import ShardedDetector, Summary
from trainguard.errors import ConfigError, DataError
from trainguard.findings import DetectorRun, DetectorStatus
from trainguard.io.dataset import Dataset, file_sha256, iter_records
from trainguard.report.model import DatasetInfo, Report
from trainguard.scan import DEFAULT_DETECTORS, RecordIndex, build_detectors, failed_run, sort_findings, stamp

ProgressFn = Callable[[int], None]


def iter_shards(path: str | Path, shard_rows: int, skipped: list[DataError] | None = None,
                resolved: dict[str, Any] | None = None, **load_options: Any) -> Iterator[Dataset]:
    """Consecutive shards of a file; rows keep their file row numbers.

    `resolved`, when given, receives what the reader resolved (kind, field map,
    why that kind; once the file is read through, its sha256 and notes).
    """
    if shard_rows < 1:
        raise ConfigError(f"--shard-rows must be at least 1, got {shard_rows}")
    resolved = {} if resolved is None else resolved
    records = iter_records(path, skipped=skipped, resolved=resolved, **load_options)
    while batch := list(islice(records, shard_rows)):
        yield Dataset(records=batch, kind=resolved["kind"], path=str(path), fieldmap=resolved["fieldmap"],
                      kind_reason=str(resolved.get("reason") or ""))


def scan_sharded(
    path: str | Path,
    detectors: Sequence[str] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    shard_rows: int = 50_000,
    client: Any = None,
    max_in_flight: int = 8,
    progress: ProgressFn | None = None,
    **load_options: Any,
) -> Report:
    """Scan `path` shard by shard; `client` is an optional `distributed.Client`."""
    chosen = build_detectors(detectors, settings)
    shardable = [d for d in chosen if isinstance(d, ShardedDetector)]
    others = [d for d in chosen if not isinstance(d, ShardedDetector)]
    skipped: list[DataError] = []
    indexes: list[RecordIndex] = []
    resolved: dict[str, Any] = {}
    shards = _indexed(iter_shards(path, shard_rows, skipped=skipped, resolved=resolved, **load_options), indexes)
    t0 = time.perf_counter()
    if client is None:
        summaries, kind, n = _summarize_locally(shardable, shards, progress)
    else:
        summaries, kind, n = _summarize_on_cluster(client, shardable, shards, max_in_flight, progress)
    index = RecordIndex.concat(indexes)
    runs = [_unshardable(d, kind) for d in others]
    findings, row_scores = [], {}
    for det, summary in zip(shardable, summaries):
        if kind not in det.kinds:
            runs.append(DetectorRun(det.name, det.version, DetectorStatus.SKIPPED, det.settings_dict(),
                                    message=f"does not handle {kind.value} data"))
            continue
        try:
            result = det.finalize(summary, kind)
            stamped = stamp(det, result, index)
        except Exception as e:  # noqa: BLE001 - isolate and record, the gate fails closed
            runs.append(failed_run(det, e, time.perf_counter() - t0))
            continue
        runs.append(DetectorRun(det.name, det.version, DetectorStatus.OK, det.settings_dict(),
                                time.perf_counter() - t0,
                                summary={**dict(result.summary), "shards": _shard_count(n, shard_rows)}))
        findings.extend(stamped)
        if result.row_scores is not None:
            row_scores[det.name] = np.asarray(result.row_scores)
    info = DatasetInfo(path=str(path), kind=kind.value, records=n, fields=dict(resolved["fieldmap"].used()),
                       sha256=resolved.get("sha256") or file_sha256(path),  # hashed while read, when the reader can
                       skipped=tuple(e.to_dict() for e in skipped), shard_rows=shard_rows,
                       kind_reason=str(resolved.get("reason") or ""), notes=tuple(resolved.get("notes") or ()))
    return Report(dataset=info, detectors=runs, findings=sort_findings(findings), row_scores=row_scores)


def _unshardable(det: Any, kind: Any) -> DetectorRun:
    """A detector that cannot run sharded: SKIPPED if it would not apply anyway, else FAILED (fail closed)."""
    if kind not in det.kinds:
        return DetectorRun(det.name, det.version, DetectorStatus.SKIPPED, det.settings_dict(),
                           message=f"does not handle {kind.value} data")
    return DetectorRun(det.name, det.version, DetectorStatus.FAILED, det.settings_dict(),
                       message=f"{det.name} has no per-shard summary yet, so a sharded scan cannot run it: "
                               f"run without --shard-rows (detectors that shard: "
                               f"{', '.join(sharded_detector_names())})")


def _indexed(shards: Iterator[Dataset], indexes: list[RecordIndex]) -> Iterator[Dataset]:
    """Pass shards through, keeping each one's rows and ids for stamping (the texts go with the shard)."""
    for shard in shards:
        indexes.append(RecordIndex.of(shard.records))
        yield shard


def sharded_detector_names() -> list[str]:
    from trainguard.detectors.base import registry

    return sorted(n for n, cls in registry().items() if issubclass(cls, ShardedDetector))


def default_sharded_detectors() -> list[str]:
    return [n for n in DEFAULT_DETECTORS if n in set(sharded_detector_names())]


def _summarize_shard(dets: Sequence[ShardedDetector], shard: Dataset) -> list[Summary | None]:
    return [d.summarize(shard) if shard.kind in d.kinds else None for d in dets]


def _merge_lists(a: list[Summary | None], b: list[Summary | None]) -> list[Summary | None]:
    return [x.merge(y) if x is not None and y is not None else None for x, y in zip(a, b)]


def _summarize_locally(dets, shards, progress):
    parts, kind, n = [], None, 0
    for shard in shards:
        kind, n = shard.kind, n + len(shard)
        parts.append(_summarize_shard(dets, shard))
        if progress:
            progress(n)
    return _tree(parts, _merge_lists), kind, n


def _summarize_on_cluster(client, dets, shards, max_in_flight, progress):
    from distributed import wait

    futures, kind, n = [], None, 0
    for shard in shards:
        kind, n = shard.kind, n + len(shard)
        futures.append(client.submit(_summarize_shard, dets, shard, pure=False))
        pending = [f for f in futures if not f.done()]
        if len(pending) >= max_in_flight:
            wait(pending, return_when="FIRST_COMPLETED")
        if progress:
            progress(n)
    merged = _tree(futures, lambda a, b: client.submit(_merge_lists, a, b, pure=False))
    return merged.result(), kind, n


def _tree(items: list, merge: Callable[[Any, Any], Any]) -> Any:
    """Pairwise, order-preserving reduction: depth log2(shards), not a long left fold."""
    if not items:
        raise DataError("<shards>", "no records to scan")
    while len(items) > 1:
        items = [merge(items[i], items[i + 1]) if i + 1 < len(items) else items[i] for i in range(0, len(items), 2)]
    return items[0]


def _shard_count(n: int, shard_rows: int) -> int:
    return -(-n // shard_rows)

