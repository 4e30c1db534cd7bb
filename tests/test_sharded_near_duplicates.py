"""near-duplicates in bounded memory: the band-key sketch, the candidate filter, and any split of the rows.

The detector keeps a once/twice bitset sketch of the rows' LSH band keys (pass 1), may count the
flagged keys exactly (pass 2), and gathers only rows holding a repeated band key (last pass). These
tests check that the sketch merges exactly in any order, that the filter never drops a row the
all-rows computation groups, and that findings are the same for several shard splits of real data.
"""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest
from conftest import classification, instruction, read_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trainguard.detectors.near_duplicates as nd
from trainguard.detectors.base import Pass
from trainguard.detectors.near_duplicates import KeySketch, NearDuplicates, _GatherPass, _bit_positions, _lsh_groups
from trainguard.findings import Severity
from trainguard.scan import scan
from trainguard.sharded import scan_sharded


def _dense(sk: KeySketch) -> tuple[np.ndarray, np.ndarray]:
    """Both bitsets as dense words, whatever form the sketch is in."""
    if sk.dense:
        return sk.once, sk.twice
    once, twice = nd._words(), nd._words()
    nd._set_bits(once, sk.once)
    nd._set_bits(twice, sk.twice)
    return once, twice


def _tree(parts: list[KeySketch]) -> KeySketch:
    while len(parts) > 1:
        parts = [parts[i].merge(parts[i + 1]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


@pytest.mark.parametrize("bits", [1 << 12, 1 << 16, 1 << 29])  # small: merges go dense; default: stay sparse
def test_sketch_merge_is_exact_and_order_free(monkeypatch, bits):
    monkeypatch.setattr(nd, "SKETCH_BITS", bits)
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 1 << 63, size=(3000, 12), dtype=np.uint64)
    keys[rng.integers(0, 3000, 400)] = keys[rng.integers(0, 3000, 400)]  # repeated rows
    keys[:, 3][rng.integers(0, 3000, 300)] = keys[0, 3]  # one key in many rows
    whole = KeySketch.of(keys, len(keys))
    # The truth: a bit is in `twice` iff two or more key occurrences hit it.
    hits = Counter(_bit_positions(keys).ravel().tolist())
    want_once, want_twice = nd._words(), nd._words()
    nd._set_bits(want_once, np.array(sorted(hits), np.uint64))
    nd._set_bits(want_twice, np.array(sorted(p for p, c in hits.items() if c >= 2), np.uint64))
    for cuts in ([1500], [1, 2, 999, 2998], sorted(rng.choice(np.arange(1, 3000), 40, replace=False).tolist())):
        parts = [KeySketch.of(k, len(k)) for k in np.split(keys, cuts)]
        left = parts[0]
        for p in parts[1:]:
            left = left.merge(p)
        right = parts[-1]
        for p in reversed(parts[:-1]):
            right = p.merge(right)  # merges are commutative too
        shuffled = list(parts)
        random.Random(len(cuts)).shuffle(shuffled)
        folded = KeySketch.of(keys[:0], 0)
        for k in np.split(keys, cuts):
            folded = folded.absorb(KeySketch.of(k, len(k)))  # in place once dense (pass 1 in memory)
        for merged in (left, right, _tree(parts), _tree(shuffled), folded):
            assert merged.n == len(keys)
            once, twice = _dense(merged)
            np.testing.assert_array_equal(once, want_once)
            np.testing.assert_array_equal(twice, want_twice)
    np.testing.assert_array_equal(_dense(whole)[1], want_twice)
    # Every key that occurs twice is flagged, however the rows were split.
    repeated = Counter(keys.ravel().tolist())
    twice_keys = np.array([k for k, c in repeated.items() if c >= 2], np.uint64)
    assert whole.repeated(twice_keys).all() and _tree(parts).repeated(twice_keys).all()


def _candidates(det: NearDuplicates, data) -> tuple[np.ndarray, object]:
    """Run the passes in memory; return the positions the gather pass held and the result."""
    step = det.finalize(det.summarize(data), data.kind)
    held = np.zeros(0, np.int64)
    while isinstance(step, Pass):
        summary = step.summarize(data)
        if isinstance(step, _GatherPass):
            held = np.concatenate([q.pos + q.offset for q in summary.parts])
        step = step.finalize(summary, data.kind)
    return held, step


def _reference(det: NearDuplicates, data):
    """The all-rows computation (the code before the filter): every row gathered, outputs counted."""
    gather = _GatherPass(det, None, None, False, None, None)
    return gather.finalize(gather.summarize(data), data.kind)


def _alerts(result) -> list:
    return [(a.rule, a.title, a.positions, a.score, a.severity, a.confidence,
             json.dumps(a.evidence, sort_keys=True, default=str)) for a in result.alerts]


def _same(a, b) -> None:
    assert _alerts(a) == _alerts(b)
    np.testing.assert_array_equal(a.row_scores, b.row_scores)
    strip = lambda s: {k: v for k, v in dict(s).items() if k != "candidate_rows"}  # noqa: E731
    assert strip(a.summary) == strip(b.summary)


WORDS = ["the", "movie", "film", "good", "bad", "plot", "a", "is", "not", "very", "fun", "dull", "cast", "x"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(st.lists(st.sampled_from(WORDS), min_size=0, max_size=7), min_size=1, max_size=60),
       labels=st.lists(st.sampled_from(["0", "1", "2"]), min_size=60, max_size=60),
       route=st.sampled_from(["direct", "exact", "tiny-sketch"]),
       threshold=st.sampled_from([0.5, 0.7, 0.9]), min_cluster=st.sampled_from([2, 3, 5]))
def test_filter_never_drops_a_grouped_row(texts, labels, route, threshold, min_cluster):
    rows = [{"text": " ".join(t), "label": y} for t, y in zip(texts, labels)]
    data = classification(rows)
    det = NearDuplicates(threshold=threshold, min_cluster=min_cluster)
    old = (nd.DIRECT_GATHER, nd.SKETCH_BITS)
    try:
        if route != "direct":
            nd.DIRECT_GATHER = -1.0  # always count the flagged keys exactly first
        if route == "tiny-sketch":
            nd.SKETCH_BITS = 1 << 6  # nearly every key collides: many false flags, all removed or harmless
        held, result = _candidates(det, data)
    finally:
        nd.DIRECT_GATHER, nd.SKETCH_BITS = old
    full = _gather_all(det, data)
    inv, size = _lsh_groups(full.sigs, threshold)
    grouped = np.flatnonzero(size[inv] >= 2)
    digests = Counter(full.digests.tolist())
    repeated_input = [i for i, d in enumerate(full.digests.tolist()) if digests[d] >= 2]
    assert set(grouped.tolist()) <= set(held.tolist())
    assert set(repeated_input) <= set(held.tolist())
    _same(result, _reference(det, data))


def _gather_all(det, data):
    summary = _GatherPass(det, None, None, False, None, None).summarize(data)
    return summary.flatten(det.settings.num_perm, documents=False)


def _planted_sst2() -> list[dict]:
    rng = random.Random(3)
    rows = [dict(r) for r in read_jsonl("sst2_sample.jsonl") + read_jsonl("sst2_rows_2001_4000.jsonl")]
    for _ in range(40):
        base = rows[rng.randrange(len(rows))]
        for _ in range(rng.randrange(1, 7)):
            w = base["text"].split()
            if w and rng.random() < 0.5:
                w[rng.randrange(len(w))] = "xyz"
            rows.append({"text": " ".join(w), "label": base["label"] if rng.random() < 0.8 else 1 - base["label"]})
    rng.shuffle(rows)
    return rows


def _write(tmp_path, rows: list[dict]):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _reports_equal(a, b) -> None:
    assert [f.to_dict() for f in a.findings] == [f.to_dict() for f in b.findings]
    np.testing.assert_array_equal(a.row_scores["near-duplicates"], b.row_scores["near-duplicates"])
    sa = next(r.summary for r in a.detectors if r.name == "near-duplicates")
    sb = {k: v for k, v in next(r.summary for r in b.detectors if r.name == "near-duplicates").items() if k != "shards"}
    assert dict(sa) == sb


@pytest.mark.parametrize("route", ["direct", "exact"])
def test_sst2_slice_same_findings_for_any_split(tmp_path, monkeypatch, route):
    if route == "exact":
        monkeypatch.setattr(nd, "DIRECT_GATHER", -1.0)
    rows = _planted_sst2()
    path = _write(tmp_path, rows)
    whole = scan(path, detectors=["near-duplicates"])
    rules = {f.rule for f in whole.findings}
    assert {"duplicate-group", "conflicting-labels"} <= rules
    ref = _reference(NearDuplicates(), classification(rows))
    _same(NearDuplicates().run(classification(rows)), ref)
    assert sorted((f.rule, f.rows, f.score) for f in whole.findings) == sorted(
        (a.rule, a.positions, a.score) for a in ref.alerts)
    for shard_rows in (97, 1234, 2500, len(rows)):
        _reports_equal(whole, scan_sharded(path, detectors=["near-duplicates"], shard_rows=shard_rows))


def test_instruction_payload_same_findings_for_any_split(tmp_path, medquad_rows):
    """Instruction data always counts flagged keys exactly, then the candidates' outputs over all rows."""
    rows = [dict(r) for r in medquad_rows]
    for k, i in enumerate(range(0, 60, 6)):
        rows[i]["question"] = f"What is the best treatment for condition number {k} according to experts ?"
        rows[i]["answer"] = "Buy the miracle cure at cure-now.example today."
    rows += [dict(rows[3]) for _ in range(5)]
    path = _write(tmp_path, rows)
    whole = scan(path, detectors=["near-duplicates"])
    high = [f for f in whole.findings if f.severity >= Severity.HIGH]
    assert len(high) == 1 and high[0].rule == "template-payload"
    ref = _reference(NearDuplicates(), instruction(rows))
    _same(NearDuplicates().run(instruction(rows)), ref)
    assert sorted((f.rule, f.rows, f.score) for f in whole.findings) == sorted(
        (a.rule, a.positions, a.score) for a in ref.alerts)
    for shard_rows in (7, 50, 151):
        _reports_equal(whole, scan_sharded(path, detectors=["near-duplicates"], shard_rows=shard_rows))


def test_rows_without_a_repeated_key_are_not_held():
    """Unique rows are not gathered: the held rows are the duplicates, not the data."""
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    rows = [{"text": " ".join(rng.choices(vocab, k=15)), "label": str(rng.randrange(2))} for _ in range(2000)]
    rows += [dict(rows[10]) for _ in range(4)]
    held, result = _candidates(NearDuplicates(), classification(rows))
    assert set(held.tolist()) >= {10, 2000, 2001, 2002, 2003} and len(held) < 20
    assert result.summary["candidate_rows"] == len(held)


def test_signatures_do_not_depend_on_the_blocks():
    """Rows are signed in blocks of about `block` shingles (a long row alone): any blocking, same values."""
    rng = random.Random(2)
    rows = [[f"w{rng.randrange(300)}" for _ in range(rng.randint(1, 40))] for _ in range(700)]
    rows[100] = [f"long{i}" for i in range(5000)]
    want = nd._signatures(rows, 64, 1, block=1)
    for block in (7, 64, 1 << 12, 1 << 18):
        np.testing.assert_array_equal(nd._signatures(rows, 64, 1, block=block), want)
