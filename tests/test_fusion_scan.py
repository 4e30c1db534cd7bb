"""The fused score through the scan engine and the CLI: one threshold, each row says which detector carries it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cli, classification

from trainguard.attacks import poison
from trainguard.embeddings import use_cache_dir
from trainguard.scan import scan

DETECTORS = ["label-consistency", "keyword-influence", "availability-junk"]


@pytest.fixture
def flipped(sst2_rows, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINGUARD_CACHE_DIR", str(tmp_path))
    out = poison(sst2_rows, "labelflip", rate=0.1, seed=3)
    data = classification(out.rows)
    use_cache_dir(data, tmp_path)
    return data, set(out.poisoned_rows), out.rows


def test_fused_finding_flags_flips_above_the_base_rate(flipped):
    data, truth, _ = flipped
    report = scan(data, detectors=DETECTORS, fuse_threshold=0.5)
    fused = [f for f in report.findings if f.detector == "fusion"]
    assert len(fused) == 1
    f = fused[0]
    scores = report.row_scores["fusion"]
    pos = {r.row: i for i, r in enumerate(data.records)}
    assert all(scores[pos[r]] >= 0.5 for r in f.rows)
    assert sum(scores >= 0.5) == len(f.rows)
    precision = len(truth & set(f.rows)) / len(f.rows)
    assert precision > 0.3, precision  # 10 % of rows are flipped
    assert set(f.evidence["by_detector"]) <= set(DETECTORS) | {"none"}
    assert f.evidence["top"][0]["fused"] == pytest.approx(float(scores.max()), abs=1e-4)


def test_a_higher_threshold_flags_a_subset(flipped):
    data, _, _ = flipped
    low = scan(data, detectors=DETECTORS, fuse_threshold=0.3)
    high = scan(data, detectors=DETECTORS, fuse_threshold=0.9)
    rows = {t: next((set(f.rows) for f in r.findings if f.detector == "fusion"), set())
            for t, r in ((0.3, low), (0.9, high))}
    assert rows[0.9] < rows[0.3]
    np.testing.assert_allclose(low.row_scores["fusion"], high.row_scores["fusion"])


def test_without_fuse_the_report_is_unchanged(flipped):
    data, _, _ = flipped
    report = scan(data, detectors=DETECTORS)
    assert "fusion" not in report.row_scores
    assert not any(f.detector == "fusion" for f in report.findings)


def test_cli_fuse_option_and_its_errors(flipped, tmp_path, capsys):
    _, _, rows = flipped
    path = tmp_path / "flipped.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, _ = cli(capsys, "scan", path, "--detectors", ",".join(DETECTORS), "--fuse", "0.5",
                       "--format", "json", "-q", "--fail-on", "none")
    assert code == 0
    assert any(f["detector"] == "fusion" for f in json.loads(out)["findings"])
    code, _, err = cli(capsys, "scan", path, "--fuse", "1.5", "--detectors", "label-consistency,keyword-influence")
    assert code == 2 and "threshold" in err
    code, _, err = cli(capsys, "scan", path, "--fuse", "0.5", "--shard-rows", "100")
    assert code == 2 and "--shard-rows" in err


def test_fused_finding_names_file_rows_ids_and_lines(tmp_path):
    """Fusion is engine-built: with a skipped first line its rows are file rows, with their ids and lines."""
    from importlib import resources

    from trainguard.io import load

    path = tmp_path / "demo.jsonl"
    demo = (resources.files("trainguard") / "data" / "demo" / "sst2_poisoned.jsonl").read_text(encoding="utf-8")
    path.write_text("{broken\n" + demo, encoding="utf-8")
    report = scan(path, on_error="skip", fuse_threshold=0.5,
                  detectors=["trigger-association", "invisible-characters", "near-duplicates"])
    (f,) = [f for f in report.findings if f.detector == "fusion"]
    records = {r.row: r for r in load(path, on_error="skip")}
    assert min(records) == 1 and f.rows
    assert list(f.record_ids) == [records[r].id for r in f.rows]
    assert list(f.lines) == [records[r].line for r in f.rows] == [r + 1 for r in f.rows]
    assert all(t["row"] in records for t in f.evidence["top"])
