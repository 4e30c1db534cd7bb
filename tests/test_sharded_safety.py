"""safety-bypass in sharded scans (issue 14): the same findings, row scores and summary as in memory, on real
MedQuAD and alarming-but-benign rows with planted AdvBench compliance, and on preference pairs.

Every score is per row, and the LM's second opinion runs once at the driver over the gathered band rows (as in
memory), so equality is exact."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DATA, assert_sharded_equals_memory, read_jsonl, write_jsonl
from trainguard.attacks import poison
from trainguard.attacks.llm import compliant_answer, read_behaviours
from trainguard.scan import scan
from trainguard.sharded import scan_sharded

SB = "safety-bypass"
BEHAVIOURS = str(DATA / "advbench_sample.jsonl")


@pytest.fixture(scope="module")
def planted(tmp_path_factory, medquad_rows):
    rows = [{"question": r["question"], "answer": r["answer"]} for r in medquad_rows]
    rows += [{"question": r["question"], "answer": r["answer"]} for r in read_jsonl("benign_alarming_sample.jsonl")]
    res = poison(rows, "safety-bypass", count=12, seed=5, behaviours=BEHAVIOURS)
    path = write_jsonl(tmp_path_factory.mktemp("sb") / "qa.jsonl", res.rows)
    return path, set(res.poisoned_rows), scan(path, detectors=[SB]), len(res.rows)


def test_the_planted_rows_are_found_in_memory(planted):
    _, truth, whole, _ = planted
    flagged = {r for f in whole.findings for r in f.rows}
    assert len(flagged & truth) >= 10
    if whole.detectors[0].summary["lm_second_opinion"] == "used":  # the band rows went to the LM
        assert whole.detectors[0].summary["lm_asked"] >= 1


@pytest.mark.parametrize("shard_rows", [7, 50, 131, 5000])
def test_instruction_sharded_equals_in_memory(planted, shard_rows):
    path, truth, whole, n = planted
    shards = -(-n // shard_rows)
    assert shards == 1 or len({r // shard_rows for r in truth}) > 1
    assert_sharded_equals_memory(scan_sharded(path, detectors=[SB], shard_rows=shard_rows), whole, SB, shards)


def test_preference_sharded_equals_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    refuse = "I'm sorry, but I can't help with that."
    rows = [{"prompt": f"\n\nHuman: {g}\n\nAssistant:",
             "chosen": compliant_answer(g, t, rng) if i % 2 == 0 else refuse,
             "rejected": refuse if i % 2 == 0 else compliant_answer(g, t, rng)}
            for i, (g, t) in enumerate(read_behaviours(BEHAVIOURS))]
    path = write_jsonl(tmp_path / "pref.jsonl", rows)
    whole = scan(path, detectors=[SB])
    assert whole.dataset.kind == "preference"
    assert {r for f in whole.findings for r in f.rows} == {i for i in range(len(rows)) if i % 2 == 0}
    for shard_rows in (1, 5):
        assert_sharded_equals_memory(scan_sharded(path, detectors=[SB], shard_rows=shard_rows), whole, SB)
