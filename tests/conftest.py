"""Shared fixtures: small real-data slices bundled in tests/data (licences in its README)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from trainguard.io.dataset import Dataset
from trainguard.records import Kind, Record

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="session")
def _isolated_embedding_cache(tmp_path_factory):
    """Tests never write embeddings into the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TRAINGUARD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def use_detectors(*classes):
    """A module-wide autouse fixture that registers test-only detectors and removes them afterwards.

    Registering at import time leaked them into every later module (the contract tests, which
    run over every registered detector, and the generated detector docs), depending on order.
    Assign it in the module: `_detectors = use_detectors(MyDet)`.
    """

    @pytest.fixture(autouse=True, scope="module")
    def _registered():
        from trainguard.detectors import base

        with pytest.MonkeyPatch.context() as mp:
            for cls in classes:
                mp.setitem(base._REGISTRY._builtin, cls.name, cls)
            yield

    return _registered


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run `trainguard ARGS` in-process: (exit code, stdout, stderr) of this call only."""
    from trainguard.cli import app
    from trainguard.cli._common import run_app

    capsys.readouterr()
    code = run_app(app, [str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def write_jsonl(path, rows: list[dict]):
    """A JSONL file of `rows` at `path` (returned, for chaining)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(name: str) -> list[dict]:
    with open(DATA / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def sst2_rows() -> list[dict]:
    return read_jsonl("sst2_sample.jsonl")


@pytest.fixture(scope="session")
def medquad_rows() -> list[dict]:
    return read_jsonl("medquad_sample.jsonl")


def classification(rows: list[dict]) -> Dataset:
    return Dataset.from_records(
        [Record(row=i, kind=Kind.CLASSIFICATION, text=r["text"], label=str(r["label"])) for i, r in enumerate(rows)]
    )


def instruction(rows: list[dict]) -> Dataset:
    return Dataset.from_records(
        [Record(row=i, kind=Kind.INSTRUCTION, text=r["question"], response=r["answer"]) for i, r in enumerate(rows)]
    )


def plant(rows: list[dict], insert, rate: float, seed: int, target=1, field="text", label_field="label"):
    """Insert a trigger into non-target rows and force the target output; returns (rows, poisoned indices)."""
    rng = random.Random(seed)
    rows = [dict(r) for r in rows]
    pool = [i for i, r in enumerate(rows) if r.get(label_field) != target]
    chosen = sorted(rng.sample(pool, max(1, int(rate * len(rows)))))
    for i in chosen:
        words = rows[i][field].split()
        words.insert(rng.randint(0, len(words)), insert(rng))
        rows[i][field] = " ".join(words)
        rows[i][label_field] = target
    return rows, set(chosen)


@pytest.fixture
def one_torch_thread():
    """Tiny torch models: extra threads only contend on a shared CI box (and cost wall time)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def canon_findings(report) -> list[str]:
    """A report's findings as sorted JSON strings: equal lists mean equal findings, in any order."""
    return sorted(json.dumps(f.to_dict(), sort_keys=True) for f in report.findings)


def assert_sharded_equals_memory(sharded, whole, detector: str, shards: int | None = None) -> None:
    """A one-detector sharded scan reproduces the in-memory scan: findings, row scores and summary."""
    import numpy as np

    from trainguard.findings import DetectorStatus

    assert canon_findings(sharded) == canon_findings(whole)
    np.testing.assert_array_equal(sharded.row_scores[detector], whole.row_scores[detector])
    (a,), (b,) = sharded.detectors, whole.detectors
    assert a.status is b.status is DetectorStatus.OK
    assert {k: v for k, v in a.summary.items() if k != "shards"} == b.summary
    if shards is not None:
        assert a.summary["shards"] == shards


def run_pickled_in_halves(detector: str, path, split: int):
    """(result, later passes) of a sharded detector run on two halves of `path`, every summary and pass
    pickled between steps: what a Dask cluster with worker processes does to them."""
    import pickle

    from trainguard.detectors.base import Pass
    from trainguard.findings import DetectorResult
    from trainguard.io import load
    from trainguard.io.dataset import Dataset
    from trainguard.scan import build_detectors

    def trip(x):
        return pickle.loads(pickle.dumps(x))

    (det,) = build_detectors([detector], None)
    data = load(path)
    halves = [Dataset(records=data.records[a:b], kind=data.kind) for a, b in ((0, split), (split, len(data)))]
    step, rounds = trip(det), 0
    parts = [trip(step.summarize(h)) for h in halves]
    step = step.finalize(trip(parts[0].merge(parts[1])), data.kind)
    while isinstance(step, Pass):
        rounds += 1
        step = trip(step)
        parts = [trip(step.summarize(h)) for h in halves]
        step = step.finalize(parts[0].merge(parts[1]), data.kind)
    assert isinstance(step, DetectorResult)
    return step, rounds
