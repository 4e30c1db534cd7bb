"""Sharded scans on a REAL Dask cluster (a `dask scheduler` and two `dask worker` processes on
127.0.0.1) and shard-by-byte-range reading in every format: findings, rows, lines and bad-row
errors identical to the whole-file scan."""

from __future__ import annotations

import csv
import gzip
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_jsonl
from trainguard.attacks import poison
from trainguard.errors import DataError
from trainguard.findings import Severity
from trainguard.scan import scan
from trainguard.sharded import plan, scan_sharded
from trainguard.io.options import LoadOptions

SHARDED = ["invisible-characters", "near-duplicates"]
BIN = Path(sys.executable).parent


def _canon(report):
    return sorted(json.dumps(f.to_dict(), sort_keys=True) for f in report.findings)


def _same(a, b):
    assert _canon(a) == _canon(b)
    assert set(a.row_scores) == set(b.row_scores)
    for name in a.row_scores:
        np.testing.assert_array_equal(a.row_scores[name], b.row_scores[name])
    for key in ("records", "sha256", "kind", "fields", "kind_reason", "notes", "skipped"):
        assert getattr(a.dataset, key) == getattr(b.dataset, key), key


@pytest.fixture(scope="module")
def attacked(tmp_path_factory, sst2_rows):
    """Bundled SST-2 slice with a planted invisible-Unicode backdoor and a few duplicate templates."""
    rows = poison(sst2_rows, "unicode", rate=0.01, seed=3)
    extra = [{"text": f"best movie ever , watch it now at site number {i}", "label": 1} for i in range(8)]
    path = write_jsonl(tmp_path_factory.mktemp("dask") / "attacked.jsonl", rows.rows + extra)
    return path, rows.poisoned_rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A real scheduler and two single-thread worker processes, always torn down."""
    distributed = pytest.importorskip("distributed")
    if not (BIN / "dask").exists():
        pytest.skip("the dask command is not installed next to this Python")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask-logs")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    common = ["--no-dashboard"]
    cmds = [[str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), *common]]
    cmds += [[str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
              "--memory-limit", "0", *common] for _ in range(2)]
    procs = [subprocess.Popen(c, stdout=open(logs / f"{i}.log", "w"), stderr=subprocess.STDOUT, env=env,
                              cwd=tmp_path_factory.mktemp("cwd")) for i, c in enumerate(cmds)]
    client = None
    try:
        deadline = time.monotonic() + 90
        while client is None:
            try:
                client = distributed.Client(address, timeout="5s")
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise
        client.wait_for_workers(2, timeout=max(deadline - time.monotonic(), 1))
        yield client
    finally:
        if client is not None:
            client.close()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_real_cluster_matches_in_process_and_in_memory(cluster, attacked):
    path, planted = attacked
    whole = scan(path, detectors=SHARDED)
    here = scan_sharded(path, detectors=SHARDED, shard_rows=300)
    from distributed import get_task_stream

    with get_task_stream(cluster) as stream:
        there = scan_sharded(path, detectors=SHARDED, shard_rows=300, client=cluster)
    _same(here, whole)
    _same(there, whole)
    hits = {r for f in there.findings if f.detector == "invisible-characters" and f.severity is Severity.HIGH
            for r in f.rows}
    assert set(planted) <= hits and planted
    assert any(f.detector == "near-duplicates" for f in there.findings)
    assert all(f.lines for f in there.findings)  # lines resolved on the workers
    # both worker processes read and summarised shards themselves
    readers = {t["worker"] for t in stream.data if str(t["key"]).startswith("summarize_shard")}
    assert len(readers) == 2, stream.data


def test_real_cluster_runs_trigger_association_in_two_passes(cluster, attacked):
    """trigger-association needs a second map over the shards (the candidates' rows): both worker
    processes read shards in both passes, and findings and row scores equal the in-memory scan's."""
    path, planted = attacked
    dets = ["trigger-association", *SHARDED]
    whole = scan(path, detectors=dets)
    from distributed import get_task_stream

    with get_task_stream(cluster) as stream:
        there = scan_sharded(path, detectors=dets, shard_rows=300, client=cluster)
    _same(there, whole)
    assert [r.status.value for r in there.detectors] == ["ok"] * 3
    hits = {r for f in there.findings if f.detector == "trigger-association" and f.severity is Severity.HIGH
            for r in f.rows}
    assert set(planted) <= hits
    second = {t["worker"] for t in stream.data if str(t["key"]).startswith("summarize_again")}
    assert len(second) == 2, stream.data


def test_real_cluster_bad_row_fails_like_in_process(cluster, tmp_path):
    lines = [json.dumps({"text": f"review number {i}", "label": i % 2}) for i in range(30)]
    lines[24] = '{"text": "broken", "label": '
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as whole:
        scan(p, detectors=SHARDED)
    with pytest.raises(DataError) as there:
        scan_sharded(p, detectors=SHARDED, shard_rows=7, client=cluster)
    assert str(there.value) == str(whole.value).replace(str(p), str(p.resolve()))
    assert "line 25" in str(there.value)


def _rows_with_traps():
    rows = [{"text": f"row {i}\nspans two lines, \"quoted\"" if i % 4 == 0 else f"plain row {i}\u200b",
             "label": i % 2} for i in range(60)]
    rows += [{"text": "same template text about a film", "label": 1} for _ in range(6)]
    return rows


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv", "tsv", "parquet", "json"])
def test_every_format_shards_to_the_same_report(tmp_path, fmt):
    rows = _rows_with_traps()
    p = tmp_path / f"d.{fmt}"
    if fmt.startswith("jsonl"):
        body = "\n".join(json.dumps(r) for r in rows[:30]) + "\n\n\n" + "\n".join(json.dumps(r) for r in rows[30:])
        if fmt.endswith("gz"):
            with gzip.open(p, "wt") as f:
                f.write(body)
        else:
            p.write_text(body)
    elif fmt in ("csv", "tsv"):
        with open(p, "w", newline="") as f:
            w = csv.writer(f, delimiter="," if fmt == "csv" else "\t")
            w.writerow(["text", "label"])
            w.writerows([r["text"], r["label"]] for r in rows)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), p, row_group_size=7)
    else:
        p.write_text(json.dumps(rows))
    whole = scan(p, detectors=SHARDED)
    for k in (1, 5, 13, 1000):
        _same(scan_sharded(p, detectors=SHARDED, shard_rows=k), whole)
    assert whole.findings


def test_skipped_rows_and_mixed_labels_match_the_whole_file_reader(tmp_path):
    lines = [json.dumps({"text": f"review {i}\u200b", "label": i % 2}) for i in range(40)]
    lines[3], lines[17], lines[33] = "{oops", json.dumps({"text": 5, "label": 1}), "[1, 2]"
    p = tmp_path / "skip.jsonl"
    p.write_text("\n".join(lines) + "\n")
    whole = scan(p, detectors=SHARDED, on_error="skip")
    sharded = scan_sharded(p, detectors=SHARDED, shard_rows=6, on_error="skip")
    _same(sharded, whole)
    assert len(sharded.dataset.skipped) == 3
    mixed = [json.dumps({"text": f"r {i}", "label": "pos" if i in (12, 29) else i % 2}) for i in range(40)]
    q = tmp_path / "mixed.jsonl"
    q.write_text("\n".join(mixed) + "\n")
    with pytest.raises(DataError) as a:
        scan(q, detectors=SHARDED)
    with pytest.raises(DataError) as b:
        scan_sharded(q, detectors=SHARDED, shard_rows=5)
    assert str(a.value) == str(b.value) and "2 row(s)" in str(b.value)


def test_the_plan_keeps_offsets_only(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"text": f"t {i}", "label": i % 2} for i in range(100)])
    reading, shards, sha, _ = plan(p, 30, LoadOptions())
    assert [s.rows for s in shards] == [30, 30, 30, 10] and [s.start.line for s in shards] == [1, 31, 61, 91]
    assert reading.kind.value == "classification" and len(sha) == 64


def test_cli_scheduler_option_on_the_real_cluster(cluster, attacked, capsys):
    from conftest import cli

    path, _ = attacked
    address = cluster.scheduler.address
    code, out, err = cli(capsys, "scan", str(path), "--shard-rows", "400", "--scheduler", address,
                         "--detectors", ",".join(SHARDED), "--format", "json", "-q")
    report = json.loads(out)
    assert code == 1, err
    assert report["dataset"]["shard_rows"] == 400
    assert any(f["detector"] == "invisible-characters" and f["severity"] == "high" for f in report["findings"])


def test_only_shards_holding_findings_are_reread(tmp_path, monkeypatch):
    """No per-row index: positions named by findings are resolved by re-reading just their shards."""
    import trainguard.sharded as sh

    rows = [{"text": f"an ordinary review number {i}", "label": i % 2} for i in range(100)]
    rows[57]["text"] += "\u200b"
    p = write_jsonl(tmp_path / "one.jsonl", rows)
    reread = []
    real = sh.lookup_rows
    monkeypatch.setattr(sh, "lookup_rows", lambda reading, shard, local, clean=False: reread.append((shard.index, list(local)))
                        or real(reading, shard, local, clean))
    report = scan_sharded(p, detectors=["invisible-characters"], shard_rows=10)
    assert reread == [(5, [7])]
    (f,) = report.findings
    assert f.rows == (57,) and f.lines == (58,) and f.record_ids == scan(p, detectors=["invisible-characters"]).findings[0].record_ids


def test_a_worker_that_cannot_see_the_file_fails_the_scan_with_one_clear_line(tmp_path):
    import dataclasses

    from trainguard.sharded import _combined, summarize_shard

    p = write_jsonl(tmp_path / "here.jsonl", [{"text": f"t {i}", "label": i % 2} for i in range(20)])
    reading, shards, _, _ = plan(p, 10, LoadOptions())
    elsewhere = dataclasses.replace(reading, path=str(tmp_path / "not-mounted" / "here.jsonl"))
    metas = [summarize_shard([], elsewhere, s)[1] for s in shards]
    with pytest.raises(DataError, match=r"not-mounted/here.jsonl: file not found"):
        _combined(elsewhere, metas)


def test_real_cluster_runs_shortcut_in_four_passes(cluster, tmp_path, sst2_rows):
    """shortcut (issue 14) maps the shards four times; its passes and summaries travel between worker
    processes (pickled), and findings, row scores and summary still equal the in-memory scan's."""
    from trainguard.attacks import poison as plant

    rows = plant(sst2_rows, "format", count=25, seed=2, target=0).rows
    path = write_jsonl(tmp_path / "format.jsonl", rows)
    whole = scan(path, detectors=["shortcut"])
    from distributed import get_task_stream

    with get_task_stream(cluster) as stream:
        there = scan_sharded(path, detectors=["shortcut"], shard_rows=300, client=cluster)
    _same(there, whole)
    (a,), (b,) = there.detectors, whole.detectors
    assert a.status.value == "ok" and {k: v for k, v in a.summary.items() if k != "shards"} == b.summary
    assert any(f.evidence["feature"] == "format:double space" for f in there.findings)
    again = {t["worker"] for t in stream.data if str(t["key"]).startswith("summarize_again")}
    assert len(again) == 2, stream.data
