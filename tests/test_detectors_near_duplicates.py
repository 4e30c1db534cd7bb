"""Near-duplicate templates judged by their outputs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import classification, instruction

from trainguard.scan import run_detector
from trainguard.detectors.near_duplicates import NearDuplicates, _band_params, _shingles, _signatures
from trainguard.findings import Severity


def test_template_with_fixed_payload_is_high(medquad_rows):
    rows = [dict(r) for r in medquad_rows]
    payload = "Buy the miracle cure at cure-now.example today."
    planted = list(range(0, 60, 6))
    for k, i in enumerate(planted):
        rows[i]["question"] = f"What is the best treatment for condition number {k} according to experts ?"
        rows[i]["answer"] = payload
    result = run_detector(NearDuplicates(), instruction(rows))
    high = [f for f in result.findings if f.severity >= Severity.HIGH]
    assert len(high) == 1 and high[0].rule == "template-payload"
    assert set(high[0].rows) == set(planted)


def test_clean_medical_qa_has_no_high(medquad_rows):
    result = run_detector(NearDuplicates(), instruction(medquad_rows))
    assert not [f for f in result.findings if f.severity >= Severity.HIGH]


def test_plain_duplicates_collapse_into_one_hygiene_finding(medquad_rows):
    rows = [dict(r) for r in medquad_rows[:50]]
    rows += [dict(rows[0]) for _ in range(5)] + [dict(rows[1]) for _ in range(6)]
    result = run_detector(NearDuplicates(), instruction(rows))
    low = [f for f in result.findings if f.rule == "duplicate-group"]
    assert len(low) == 1 and low[0].severity is Severity.LOW
    assert {0, 1, *range(50, 61)} <= set(low[0].rows)


def test_band_parameters_fit_the_signature():
    b, r = _band_params(64, 0.8)
    assert b * r <= 64 and (1 / b) ** (1 / r) < 0.8


def test_identical_inputs_with_conflicting_labels(sst2_rows):
    from conftest import classification

    rows = [dict(r) for r in sst2_rows[:300]]
    rows += [dict(rows[7]) for _ in range(3)] + [dict(rows[7], label=1 - rows[7]["label"])]
    result = run_detector(NearDuplicates(), classification(rows))
    conflict = [f for f in result.findings if f.rule == "conflicting-labels"]
    assert len(conflict) == 1 and conflict[0].severity is Severity.MEDIUM
    assert 303 in conflict[0].rows and 7 not in conflict[0].rows


def test_a_tie_is_listed_but_kept_under_the_bar():
    from trainguard.detectors.near_duplicates import TIED_SCORE, NearDuplicates

    rows = ([{"text": "what are the symptoms of gout", "label": "symptoms"}] * 3
            + [{"text": "what are the symptoms of gout", "label": "treatment"}]      # minority: a suspect
            + [{"text": "how is anemia treated", "label": "treatment"},
               {"text": "how is anemia treated", "label": "causes"}]                 # a tie: no side to pick
            + [{"text": f"an unrelated question number {i}", "label": "other"} for i in range(6)])
    result = run_detector(NearDuplicates(), classification(rows))
    conflict = next(f for f in result.findings if f.rule == "conflicting-labels")
    assert set(conflict.rows) == {3, 4, 5}
    assert conflict.evidence["minority_rows"] == 1 and conflict.evidence["tied_rows"] == 2
    assert result.row_scores[3] == 0.5 and result.row_scores[4] == result.row_scores[5] == TIED_SCORE
    assert result.row_scores[0] < 0.5


def test_signatures_keep_their_scheme():
    """Pinned values: a change of scheme would silently regroup every stored summary."""
    sig = _signatures([["the", "movie"], [""]], 4, 1)
    assert sig.dtype == np.uint32
    assert sig.tolist() == [[3013770857, 2217342365, 1760084983, 599145827],
                            [2533631190, 3324888732, 1096227432, 1113023610]]


def test_signatures_equal_datasketch_minhash(sst2_rows):
    """The scheme is datasketch 2's default, so its `MinHash` must give the same values (when it is installed)."""
    datasketch = pytest.importorskip("datasketch")
    if int(datasketch.__version__.split(".")[0]) < 2:
        pytest.skip("datasketch 1.x uses another permutation scheme")
    from trainguard.text import tokens

    rows = [_shingles(tokens(r["text"]), k) for r in sst2_rows[:400] for k in (1, 2)]
    rows += [[""], ["a", "a", "b"], ["\xff" * 9000], ["\udc80 lone surrogate"]]
    encoded = [[sh.encode("utf-8", "surrogatepass") for sh in row] for row in rows]
    want = np.stack([m.hashvalues for m in datasketch.MinHash.bulk(encoded, num_perm=32, seed=7)])
    np.testing.assert_array_equal(_signatures(rows, 32, 7, block=5), want)
