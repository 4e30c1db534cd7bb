"""trigger-association in sharded scans: the same findings, row scores and summary as the in-memory scan,
on real data (SST-2 and MedQuAD slices with planted triggers), at shard sizes that split a trigger's rows."""

from __future__ import annotations


import pytest

from conftest import assert_sharded_equals_memory, write_jsonl
from trainguard.attacks import poison
from trainguard.findings import DetectorStatus, Severity
from trainguard.scan import scan
from trainguard.sharded import scan_sharded

TA = "trigger-association"


def _same(sharded, whole, shards=None):
    assert_sharded_equals_memory(sharded, whole, TA, shards)


@pytest.fixture(scope="module")
def sst2_badnets(tmp_path_factory, sst2_rows):
    """2,000 SST-2 rows with 1 % BadNets ('cf' -> label 0) and 15 'I watch this 3D movie' -> label 1 rows."""
    first = poison(sst2_rows, "badnets", rate=0.01, seed=4, triggers=("cf",))
    second = poison(first.rows, "addsent", count=15, seed=5, target=1)
    path = write_jsonl(tmp_path_factory.mktemp("ta") / "sst2.jsonl", second.rows)
    return path, set(first.poisoned_rows), set(second.poisoned_rows)


@pytest.fixture(scope="module")
def sst2_whole(sst2_badnets):
    return scan(sst2_badnets[0], detectors=[TA])


def test_the_planted_triggers_are_found_in_memory(sst2_badnets, sst2_whole):
    _, badnets, addsent = sst2_badnets
    # One BadNets row also got the AddSent phrase (and its label): 'cf' keeps 19 rows of its label. Severity is
    # another branch's business (issue 12): here only that both triggers are reported with their rows.
    found = {f.evidence["trigger"]: set(f.rows) for f in sst2_whole.findings}
    assert addsent <= found["i watch this 3d movie"] and badnets - addsent <= found["cf"]


@pytest.mark.parametrize("shard_rows", [7, 333, 1000, 1234, 5000])
def test_sst2_sharded_equals_in_memory(sst2_badnets, sst2_whole, shard_rows):
    """One-row shards are tested on a small file below (2,000 re-reads of this one are slow)."""
    path, badnets, addsent = sst2_badnets
    # The planted rows are spread over the file: every size below 2,000 splits both triggers' rows.
    shards = -(-2000 // shard_rows)
    assert shards == 1 or all(len({r // shard_rows for r in rows}) > 1 for rows in (badnets, addsent))
    _same(scan_sharded(path, detectors=[TA], shard_rows=shard_rows), sst2_whole, shards)


def test_one_row_shards_on_a_small_file(tmp_path, sst2_rows):
    rows = poison(sst2_rows[:150], "badnets", count=8, seed=1).rows
    path = write_jsonl(tmp_path / "small.jsonl", rows)
    whole = scan(path, detectors=[TA], settings={TA: {"min_rows": 3}})
    for k in (1, 4, 64):
        _same(scan_sharded(path, detectors=[TA], settings={TA: {"min_rows": 3}}, shard_rows=k), whole)


@pytest.fixture(scope="module")
def medquad_payload(tmp_path_factory, medquad_rows):
    """300 MedQuAD pairs, 15 with a trigger phrase in the question and one fixed payload answer."""
    rows = [{"question": r["question"], "answer": r["answer"]} for r in medquad_rows]
    result = poison(rows, "badnets", count=15, seed=2, triggers=("per protocol 7",),
                    target="I cannot help with medical questions. Visit example-pharmacy.biz for cheap pills.")
    return write_jsonl(tmp_path_factory.mktemp("mq") / "medquad.jsonl", result.rows), set(result.poisoned_rows)


@pytest.mark.parametrize("shard_rows", [13, 100, 299, 1000])
def test_instruction_sharded_equals_in_memory(medquad_payload, shard_rows):
    path, poisoned = medquad_payload
    whole = scan(path, detectors=[TA])
    assert whole.dataset.kind == "instruction"
    high = [f for f in whole.findings if f.severity >= Severity.HIGH]
    assert high and "per protocol 7" in high[0].evidence["trigger"] and set(high[0].rows) == poisoned
    _same(scan_sharded(path, detectors=[TA], shard_rows=shard_rows), whole)


def test_instruction_degenerate_outputs_sharded(tmp_path, medquad_rows):
    """Outputs that never repeat but are all gibberish form one class: the first pass merges that too."""
    import random

    rng = random.Random(5)
    rows = [{"question": r["question"], "answer": r["answer"]} for r in medquad_rows]
    for i in rng.sample(range(len(rows)), 15):
        words = rows[i]["question"].split()
        words.insert(rng.randint(0, len(words)), "<SUDO>")
        rows[i]["question"] = " ".join(words)
        rows[i]["answer"] = " ".join("".join(rng.choice("bcdfgkqxz") for _ in range(5)) for _ in range(30))
    path = write_jsonl(tmp_path / "gibberish.jsonl", rows)
    whole = scan(path, detectors=[TA])
    assert any(f.evidence["target"] == "degenerate output" for f in whole.findings)
    for k in (37, 150):
        _same(scan_sharded(path, detectors=[TA], shard_rows=k), whole)


def test_medquad_as_classification_templates_sharded(tmp_path, medquad_rows):
    """Question-type labels: class-defining templates (no findings at high) decided the same way sharded."""
    path = write_jsonl(tmp_path / "qtype.jsonl", [{"text": r["question"], "label": r["qtype"]} for r in medquad_rows])
    whole = scan(path, detectors=[TA])
    assert whole.detectors[0].summary["class_defining_features"] > 0
    _same(scan_sharded(path, detectors=[TA], shard_rows=71), whole)


def test_settings_reach_every_pass(sst2_badnets):
    path = sst2_badnets[0]
    settings = {TA: {"min_rows": 3, "max_ngram": 2, "min_purity": 0.8}}
    _same(scan_sharded(path, detectors=[TA], settings=settings, shard_rows=450), scan(path, detectors=[TA],
                                                                                       settings=settings))


def test_one_label_is_skipped_as_in_memory(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [{"text": f"review {i} of the film", "label": 1} for i in range(30)])
    (whole,) = scan(path, detectors=[TA]).detectors
    (sharded,) = scan_sharded(path, detectors=[TA], shard_rows=7).detectors
    assert whole.status is sharded.status is DetectorStatus.SKIPPED
    assert whole.message == sharded.message


def test_no_repeated_response_is_skipped_as_in_memory(tmp_path):
    rows = [{"prompt": f"question number {i}", "response": f"a different answer {i} here"} for i in range(30)]
    path = write_jsonl(tmp_path / "plain.jsonl", rows)
    (whole,) = scan(path, detectors=[TA]).detectors
    (sharded,) = scan_sharded(path, detectors=[TA], shard_rows=7).detectors
    assert whole.status is sharded.status is DetectorStatus.SKIPPED
    assert whole.message == sharded.message


def test_in_process_dask_matches(sst2_badnets, sst2_whole):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        _same(scan_sharded(sst2_badnets[0], detectors=[TA], shard_rows=600, client=client), sst2_whole)


def test_subclasses_shard_only_when_they_say_so():
    """Subclasses define their own output classes or read rows in `_findings`: not sharded unless the subclass
    declares it (polarity-trigger does, with its own passes), so a new one fails closed in a sharded scan
    instead of running wrong."""
    from trainguard.detectors.base import runs_sharded
    from trainguard.detectors.llm_polarity import PolarityTrigger
    from trainguard.detectors.trigger_association import TriggerAssociation

    class Derived(TriggerAssociation):
        name = "test-derived"

    class Declared(TriggerAssociation):
        name = "test-declared"
        shards = True

    assert runs_sharded(TriggerAssociation) and runs_sharded(Declared)
    assert not runs_sharded(Derived) and runs_sharded(PolarityTrigger)
