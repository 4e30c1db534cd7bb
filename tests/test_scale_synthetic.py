"""benchmarks/make_synthetic.py: unique rows, exact planted count, same seed same bytes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT / "tests" / "data" / "sst2_sample.jsonl"  # the bundled slice: runs from a fresh clone

spec = importlib.util.spec_from_file_location("make_synthetic", ROOT / "benchmarks" / "make_synthetic.py")
ms = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ms)  # type: ignore[union-attr]



def test_rows_unique_planted_and_truthful(tmp_path):
    out = tmp_path / "syn.jsonl"
    truth = ms.make(20_000, out, seed=3, rate=0.001, trigger="cf", target=1, sst2=SST2)
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 20_000
    assert len({r["text"] for r in recs}) == 20_000
    planted = {p["row"] for p in truth["poisoned"]}
    assert len(planted) == 20
    with_trigger = {i for i, r in enumerate(recs) if "cf" in r["text"].split()}
    assert with_trigger == planted
    assert all(recs[p["row"]]["label"] == 1 and p["original_label"] == 0 for p in truth["poisoned"])
    # Clean rows: both halves are SST-2 sentences; the stated label is theirs.
    assert all(r["text"].count(" | ") == 1 for r in recs)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    ta = ms.make(3_000, a, seed=1, sst2=SST2)
    tb = ms.make(3_000, b, seed=1, sst2=SST2)
    tc = ms.make(3_000, c, seed=2, sst2=SST2)
    assert a.read_bytes() == b.read_bytes() and ta["file_sha256"] == tb["file_sha256"]
    assert tc["file_sha256"] != ta["file_sha256"]
    assert len(ta["poisoned"]) == 1  # at least one planted row even below 1 / rate


def test_parquet_and_csv_hold_the_same_rows(tmp_path):
    j, p, c = tmp_path / "s.jsonl", tmp_path / "s.parquet", tmp_path / "s.csv"
    for out in (j, p, c):
        ms.make(2_000, out, seed=5, sst2=SST2)
    texts = [json.loads(x)["text"] for x in j.read_text().splitlines()]
    assert pq.read_table(p).column("text").to_pylist() == texts
    import csv
    with open(c, newline="", encoding="utf-8") as f:
        assert [r["text"] for r in csv.DictReader(f)] == texts


def test_bad_arguments_fail_with_one_line(tmp_path):
    with pytest.raises(SystemExit, match="--rows"):
        ms.make(0, tmp_path / "x.jsonl", sst2=SST2)
    with pytest.raises(SystemExit, match="unknown output format"):
        ms.make(10, tmp_path / "x.txt", sst2=SST2)
