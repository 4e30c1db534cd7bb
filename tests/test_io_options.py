"""LoadOptions (configuration resolved once) and the file hashed while it is read."""

from __future__ import annotations

import builtins
import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainguard.errors import ConfigError
from trainguard.io import LoadOptions, iter_records, load

ROWS = [{"text": f"row {i}", "label": i % 2} for i in range(50)]


def _files(d: Path) -> dict[str, Path]:
    body = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    out = {"jsonl": d / "d.jsonl", "gz": d / "d.jsonl.gz", "json": d / "d.json", "csv": d / "d.csv",
           "parquet": d / "d.parquet"}
    out["jsonl"].write_bytes(body + b"\n\n")  # trailing blank lines are bytes of the file too
    out["gz"].write_bytes(gzip.compress(body))
    out["json"].write_text(json.dumps(ROWS))
    out["csv"].write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in ROWS))
    pq.write_table(pa.table({"text": [r["text"] for r in ROWS], "label": [r["label"] for r in ROWS]}),
                   out["parquet"])
    return out


@pytest.mark.parametrize("fmt", ["jsonl", "gz", "json", "csv", "parquet"])
def test_sha256_is_computed_while_reading(tmp_path: Path, fmt: str, monkeypatch) -> None:
    path = _files(tmp_path)[fmt]
    want = hashlib.sha256(path.read_bytes()).hexdigest()
    opened: list[str] = []
    real_open = builtins.open

    def counting_open(file, mode="r", *a, **kw):
        if str(file) == str(path) and "b" in mode:
            opened.append(mode)
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr("trainguard.io.dataset.file_sha256", lambda p: pytest.fail("the file was read again"))
    data = load(path)
    assert data.file_sha256 == want and len(data) == 50
    # Before: one pass to parse plus one whole second pass to hash. Now the sniffing of the
    # format and head (a few KiB) plus one pass; Parquet, read by random access, hashes in its own pass.
    assert len(opened) <= (4 if fmt == "parquet" else 3), opened


def test_streaming_reports_the_digest_only_when_complete(tmp_path: Path) -> None:
    path = _files(tmp_path)["jsonl"]
    resolved: dict = {}
    stream = iter_records(path, resolved=resolved)
    next(stream)
    assert "sha256" not in resolved  # a half-read file has no digest
    list(stream)
    assert resolved["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_load_options_are_checked_before_reading() -> None:
    opts = LoadOptions(kind="classification", fields={"text": "review", "label": "stars"}, on_error="skip")
    assert opts.fields == (("label", "stars"), ("text", "review")) and opts.field_map["text"] == "review"
    with pytest.raises(Exception):
        opts.kind = "documents"  # frozen
    for bad, msg in [({"on_error": "ignore"}, "--on-error must be one of"),
                     ({"kind": "tabular"}, "unknown kind 'tabular'"),
                     ({"max_record_bytes": 0}, "--max-record-bytes must be a positive integer"),
                     ({"fmt": "xml"}, "unknown format 'xml'")]:
        with pytest.raises(ConfigError, match=msg):
            LoadOptions(**bad)
    with pytest.raises(ConfigError, match="not both"):
        LoadOptions.of(opts, kind="documents")


def test_load_takes_options_or_keywords_alike(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps({"review": f"t{i}", "stars": i % 5}) + "\n" for i in range(10)))
    a = load(path, LoadOptions(fields={"text": "review", "label": "stars"}))
    b = load(path, fields={"text": "review", "label": "stars"})
    assert [r.id for r in a] == [r.id for r in b] and a.kind_reason == b.kind_reason
