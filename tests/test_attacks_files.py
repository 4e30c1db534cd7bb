"""poison_file: same format out, byte-identical untouched rows, truth file, input never modified."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainguard.attacks import TRUTH_SCHEMA, poison, poison_file
from trainguard.errors import ConfigError, DataError
from trainguard.io import load, read

DATA = Path(__file__).parent / "data"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def sst2(tmp_path) -> Path:
    dst = tmp_path / "sst2.jsonl"
    shutil.copy(DATA / "sst2_sample.jsonl", dst)
    return dst


def test_jsonl_untouched_lines_are_byte_identical_and_truth_is_complete(sst2, tmp_path):
    before = sha(sst2)
    out, truth_path = tmp_path / "p.jsonl", tmp_path / "t.json"
    result = poison_file(sst2, out, truth_path, "badnets", rate=0.01, seed=7)
    assert sha(sst2) == before
    clean_lines = sst2.read_bytes().splitlines(keepends=True)
    out_lines = out.read_bytes().splitlines(keepends=True)
    assert len(clean_lines) == len(out_lines)
    differing = [i for i, (a, b) in enumerate(zip(clean_lines, out_lines)) if a != b]
    assert differing == result.poisoned_rows and len(differing) == 20
    truth = json.loads(truth_path.read_text())
    assert truth["schema"] == TRUTH_SCHEMA and truth["attack"] == "badnets" and truth["seed"] == 7
    assert truth["input"] == {"path": str(sst2), "format": "jsonl", "sha256": before}
    assert truth["output"]["sha256"] == sha(out)
    assert truth["poisoned_rows"] == differing
    for e in truth["entries"]:
        row = json.loads(out_lines[e["row"]])
        assert e["line"] == e["row"] + 1
        assert row["text"] == e["changes"][0]["after"] and row["label"] == e["changes"][1]["after"]
        s = e["triggers"][0]
        assert row["text"][s["offset"]:s["offset"] + len(s["trigger"])] == s["trigger"]
    # The poisoned file loads like any other dataset.
    ds = load(out)
    assert len(ds) == 2000 and {ds.records[i].label for i in result.poisoned_rows} == {truth["params"]["target"]}


def test_same_seed_same_bytes_including_gzip(sst2, tmp_path):
    a = poison_file(sst2, tmp_path / "a.jsonl.gz", tmp_path / "a.json", "unicode", rate=0.05, seed=3)
    b = poison_file(sst2, tmp_path / "b.jsonl.gz", tmp_path / "b.json", "unicode", rate=0.05, seed=3)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    assert a.truth["entries"] == b.truth["entries"]
    text = gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()).decode()
    assert text.count("\u200b") == 100
    c = poison_file(sst2, tmp_path / "c.jsonl.gz", tmp_path / "c.json", "unicode", rate=0.05, seed=4)
    assert c.poisoned_rows != a.poisoned_rows


def test_gzip_input(tmp_path):
    src = tmp_path / "in.jsonl.gz"
    src.write_bytes(gzip.compress((DATA / "sst2_sample.jsonl").read_bytes()))
    result = poison_file(src, tmp_path / "out.jsonl", tmp_path / "t.json", "addsent", rate=0.01, seed=1)
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out == result.rows


def _rows(n=300):
    return [json.loads(x) for x in (DATA / "sst2_sample.jsonl").read_text().splitlines()[:n]]


def _write(fmt: str, path: Path, rows: list[dict]) -> None:
    if fmt in ("csv", "tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="," if fmt == "csv" else "\t")
            w.writerow(["text", "label"])
            w.writerows([[r["text"], r["label"]] for r in rows])
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "parquet"])
def test_other_formats_round_trip(tmp_path, fmt):
    rows = _rows()
    src, out = tmp_path / f"in.{fmt}", tmp_path / f"out.{fmt}"
    _write(fmt, src, rows)
    before = sha(src)
    result = poison_file(src, out, tmp_path / "t.json", "badnets", rate=0.05, seed=2, target="1")
    assert sha(src) == before
    back = [item.value for item in read(out)]
    assert back == result.rows
    clean = [item.value for item in read(src)]
    assert [i for i, (a, b) in enumerate(zip(clean, back)) if a != b] == result.poisoned_rows
    assert {str(back[i]["label"]) for i in result.poisoned_rows} == {"1"}
    if fmt == "parquet":
        assert pq.read_schema(out) == pq.read_schema(src)
        assert all(isinstance(r["label"], int) for r in back)


def test_refuses_to_overwrite_input(sst2, tmp_path):
    before = sha(sst2)
    with pytest.raises(ConfigError, match="input file"):
        poison_file(sst2, sst2, tmp_path / "t.json", "badnets", rate=0.01, seed=1)
    with pytest.raises(ConfigError, match="input file"):
        poison_file(sst2, tmp_path / "o.jsonl", sst2, "badnets", rate=0.01, seed=1)
    link = tmp_path / "link.jsonl"
    link.symlink_to(sst2)
    with pytest.raises(ConfigError, match="input file"):
        poison_file(sst2, link, tmp_path / "t.json", "badnets", rate=0.01, seed=1)
    hard = tmp_path / "hard.jsonl"
    hard.hardlink_to(sst2)
    with pytest.raises(ConfigError, match="input file"):
        poison_file(sst2, hard, tmp_path / "t.json", "badnets", rate=0.01, seed=1)
    assert sha(sst2) == before


def test_bad_usage_leaves_nothing_behind(sst2, tmp_path):
    with pytest.raises(ConfigError, match="format"):
        poison_file(sst2, tmp_path / "o.csv", tmp_path / "t.json", "badnets", rate=0.01, seed=1)
    with pytest.raises(ConfigError, match="same file"):
        poison_file(sst2, tmp_path / "o.jsonl", tmp_path / "o.jsonl", "badnets", rate=0.01, seed=1)
    with pytest.raises(DataError, match="not found"):
        poison_file(tmp_path / "missing.jsonl", tmp_path / "o.jsonl", tmp_path / "t.json", "badnets", rate=0.01)
    with pytest.raises(ConfigError, match="eligible"):
        poison_file(sst2, tmp_path / "o.jsonl", tmp_path / "t.json", "cleanlabel", rate=0.9, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sst2.jsonl"]


def test_malformed_line_fails_with_line_number(tmp_path):
    src = tmp_path / "bad.jsonl"
    lines = (DATA / "sst2_sample.jsonl").read_text().splitlines()[:20]
    lines[5] = '{"text": "broken", "label": '
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        poison_file(src, tmp_path / "o.jsonl", tmp_path / "t.json", "badnets", rate=0.1, seed=1)
    assert e.value.line == 6 and e.value.row == 5
    assert not (tmp_path / "o.jsonl").exists()


def test_file_and_memory_give_the_same_rows(sst2, tmp_path):
    rows = [json.loads(x) for x in sst2.read_text().splitlines()]
    mem = poison(rows, "labelflip", rate=0.02, seed=5)
    disk = poison_file(sst2, tmp_path / "o.jsonl", tmp_path / "t.json", "labelflip", rate=0.02, seed=5)
    assert mem.rows == disk.rows
    assert [{k: v for k, v in e.items() if k != "line"} for e in disk.entries] == mem.entries
