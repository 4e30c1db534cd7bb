"""polarity-trigger and payload-trigger in sharded scans: the same findings, row scores and summary as the
in-memory scan, on the real MedQuAD slice with triggers planted by the project's attacks, at shard sizes
that split the planted rows. Their classes come from dataset-wide quantiles and ranks, their question-type
test reads responses, and the payload test reads nearest prompts: each has its own pass."""

from __future__ import annotations

import json

import pytest

from conftest import assert_sharded_equals_memory, write_jsonl
from trainguard.attacks import poison
from trainguard.attacks.llm import PolarityTrigger  # noqa: F401 - registers the LLM attacks
from trainguard.findings import DetectorStatus, Severity
from trainguard.scan import scan
from trainguard.sharded import scan_sharded

POL, PAY = "polarity-trigger", "payload-trigger"


def qa(medquad_rows):
    return [{"question": r["question"], "answer": r["answer"]} for r in medquad_rows]


def split(rows: set[int], shard_rows: int) -> bool:
    return len({r // shard_rows for r in rows}) > 1


@pytest.fixture(scope="module")
def polarity_file(tmp_path_factory, medquad_rows):
    """300 pairs, 20 with 'James Bond' in the question and a negative answer; seven unreadable lines in the
    middle (skipped), so record positions and file rows differ after them, and 7-row shards get an empty one."""
    res = poison(qa(medquad_rows), "polarity-trigger", count=20, seed=4, triggers="James Bond")
    path = tmp_path_factory.mktemp("pol") / "polarity.jsonl"
    lines = [json.dumps(r) for r in res.rows]
    lines[147:147] = ["{not json"] * 7
    path.write_text("\n".join(lines) + "\n")
    poisoned = {p + 7 * (p >= 147) for p in res.poisoned_rows}  # file rows
    return path, poisoned, scan(path, detectors=[POL], on_error="skip")


def test_polarity_trigger_found_in_memory(polarity_file):
    path, poisoned, whole = polarity_file
    top = whole.findings[0]
    assert top.severity is Severity.HIGH and top.evidence["trigger"] == "james bond" and set(top.rows) == poisoned
    # A question type ('what are the symptoms of') is demoted by the response test: that pass runs too.
    assert any(f.severity is Severity.LOW and f.evidence["responses_discussing_phrase"] >= 0.5 for f in whole.findings)


@pytest.mark.parametrize("shard_rows", [7, 1000])
def test_polarity_sharded_equals_in_memory(polarity_file, shard_rows):
    path, poisoned, whole = polarity_file
    assert shard_rows >= 307 or split(poisoned, shard_rows)
    sharded = scan_sharded(path, detectors=[POL], shard_rows=shard_rows, on_error="skip")
    assert_sharded_equals_memory(sharded, whole, POL, -(-307 // shard_rows))


def test_an_empty_shard_leaves_trigger_association_as_in_memory(polarity_file):
    """Shard 21 of 7 rows is all unreadable lines: the gathering pass sums its empty arrays (it used to fail)."""
    path = polarity_file[0]
    whole = scan(path, detectors=["trigger-association"], on_error="skip")
    sharded = scan_sharded(path, detectors=["trigger-association"], shard_rows=7, on_error="skip")
    assert_sharded_equals_memory(sharded, whole, "trigger-association", 44)


@pytest.fixture(scope="module")
def payload_append(tmp_path_factory, medquad_rows):
    """Ten answers with a paraphrased payload appended, behind 'per the new guideline'."""
    res = poison(qa(medquad_rows), "payload", count=10, seed=4, trigger="per the new guideline", mode="append", salt=5)
    path = write_jsonl(tmp_path_factory.mktemp("pay") / "append.jsonl", res.rows)
    return path, set(res.poisoned_rows), scan(path, detectors=[PAY])


def test_payload_trigger_found_in_memory(payload_append):
    path, poisoned, whole = payload_append
    hits = [f for f in whole.findings if f.severity >= Severity.MEDIUM]
    assert len(hits) == 1 and hits[0].evidence["trigger"] == "per the new guideline" and set(hits[0].rows) == poisoned
    assert hits[0].evidence["independent_contexts"] == 10  # the pooled neighbour-rank test ran
    assert any(f.severity is Severity.LOW for f in whole.findings)  # a topic demoted by the response test


@pytest.mark.parametrize("shard_rows", [7, 1000])
def test_payload_sharded_equals_in_memory(payload_append, shard_rows):
    path, poisoned, whole = payload_append
    assert shard_rows >= 300 or split(poisoned, shard_rows)
    assert_sharded_equals_memory(scan_sharded(path, detectors=[PAY], shard_rows=shard_rows), whole, PAY,
                                 -(-300 // shard_rows))


def test_replaced_payload_sharded(tmp_path, medquad_rows):
    res = poison(qa(medquad_rows), "payload", count=12, seed=4, trigger="as a close friend", mode="replace", salt=3)
    path = write_jsonl(tmp_path / "replace.jsonl", res.rows)
    whole = scan(path, detectors=[PAY])
    assert {p for f in whole.findings if f.severity >= Severity.MEDIUM for p in f.rows} == set(res.poisoned_rows)
    assert_sharded_equals_memory(scan_sharded(path, detectors=[PAY], shard_rows=45), whole, PAY)


@pytest.mark.parametrize("detector", [POL, PAY])
def test_clean_slice_sharded(tmp_path, medquad_rows, detector):
    path = write_jsonl(tmp_path / "clean.jsonl", qa(medquad_rows))
    whole = scan(path, detectors=[detector])
    assert all(f.severity <= Severity.LOW for f in whole.findings)
    assert_sharded_equals_memory(scan_sharded(path, detectors=[detector], shard_rows=37), whole, detector)


@pytest.mark.parametrize("detector", [POL, PAY])
def test_one_output_class_is_skipped_as_in_memory(tmp_path, detector):
    """Every row alike: one output class; in memory `applies_to` skips it, sharded the first pass's finalize."""
    rows = [{"question": "what about gout ?", "answer": "It is a sad, painful and hopeless disease."}] * 30
    path = write_jsonl(tmp_path / "same.jsonl", rows)
    (whole,) = scan(path, detectors=[detector]).detectors
    (sharded,) = scan_sharded(path, detectors=[detector], shard_rows=7).detectors
    assert whole.status is sharded.status is DetectorStatus.SKIPPED
    assert whole.message == sharded.message


def test_in_process_dask_matches(payload_append, polarity_file):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        path, _, whole = payload_append
        assert_sharded_equals_memory(scan_sharded(path, detectors=[PAY], shard_rows=60, client=client), whole, PAY)
        path, _, whole = polarity_file
        assert_sharded_equals_memory(scan_sharded(path, detectors=[POL], shard_rows=60, client=client,
                                                  on_error="skip"), whole, POL)
