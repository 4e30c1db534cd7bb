"""Data in the forms people hold it: DataFrames, lists of dicts, Arrow tables, saved HF datasets.

The bar: the same examples give the same findings as the JSONL file.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import cli

import trainguard
from trainguard.errors import ConfigError, DataError

DEMO = Path(str(resources.files("trainguard") / "data" / "demo" / "sst2_poisoned.jsonl"))


@pytest.fixture(scope="module")
def demo_rows() -> list[dict]:
    return [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def jsonl_report():
    return trainguard.scan(DEMO)


def _same(a, b) -> None:
    key = lambda r: sorted((f.detector, f.rule, f.rows, f.record_ids, str(f.severity)) for f in r.findings)  # noqa: E731
    assert key(a) == key(b) and a.findings


def test_dataframe_list_and_arrow_give_the_jsonl_findings(demo_rows, jsonl_report):
    pd = pytest.importorskip("pandas")
    _same(trainguard.scan(pd.DataFrame(demo_rows)), jsonl_report)
    _same(trainguard.scan(demo_rows), jsonl_report)
    _same(trainguard.scan(pa.Table.from_pylist(demo_rows)), jsonl_report)


def test_polars_and_datasets_objects(demo_rows, jsonl_report):
    pl = pytest.importorskip("polars")
    datasets = pytest.importorskip("datasets")
    _same(trainguard.scan(pl.DataFrame(demo_rows)), jsonl_report)
    ds = datasets.Dataset.from_list(demo_rows)
    _same(trainguard.scan(ds), jsonl_report)
    # A shuffled view is read as the user sees it (the index mapping applied), not in storage order.
    view = ds.select(range(10, 0, -1))
    assert [r.text for r in trainguard.load(view).records] == [demo_rows[i]["text"] for i in range(10, 0, -1)]
    with pytest.raises(ConfigError, match="pick one"):
        trainguard.load(datasets.DatasetDict({"train": ds, "test": ds}))
    assert len(trainguard.load(datasets.DatasetDict({"train": ds}), split="train")) == len(demo_rows)


def test_cli_scans_a_save_to_disk_folder_with_split(tmp_path, capsys, demo_rows):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(demo_rows)
    datasets.DatasetDict({"train": ds, "test": ds.select(range(50))}).save_to_disk(str(tmp_path / "hf"))
    code, out, err = cli(capsys, "scan", tmp_path / "hf", "--split", "train", "-q", "-f", "json")
    assert code == 1, err
    got = json.loads(out)
    code, out, _ = cli(capsys, "scan", DEMO, "-q", "-f", "json")
    want = json.loads(out)
    strip = lambda rep: [{k: f[k] for k in ("fingerprint", "rows", "severity")} for f in rep["findings"]]  # noqa: E731
    assert strip(got) == strip(want)
    code, _, err = cli(capsys, "scan", tmp_path / "hf", "-q")
    assert code == 2 and "--split" in err and "train" in err


def test_a_crafted_state_json_cannot_point_outside_the_folder(tmp_path, demo_rows):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(demo_rows[:5]).save_to_disk(str(tmp_path / "hf"))
    state = json.loads((tmp_path / "hf" / "state.json").read_text())
    state["_data_files"] = [{"filename": "../secret.arrow"}]
    (tmp_path / "hf" / "state.json").write_text(json.dumps(state))
    shutil.copy(next((tmp_path / "hf").glob("*.arrow")), tmp_path / "secret.arrow")
    with pytest.raises(DataError, match="inside the folder"):
        trainguard.load(tmp_path / "hf")


def test_values_are_plain_and_missing_values_are_none():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"text": ["good film", "bad film", None], "label": [1, 0, 1]})
    with pytest.raises(DataError, match="text"):
        trainguard.load(df)  # a missing text is a bad row, named, like a JSONL null
    data = trainguard.load(df, on_error="skip")
    assert [r.label for r in data.records] == ["1", "0"] and len(data.skipped) == 1


def test_an_unsupported_object_is_a_clear_error():
    with pytest.raises(ConfigError, match="cannot read a builtins.set"):
        trainguard.load({1, 2})
