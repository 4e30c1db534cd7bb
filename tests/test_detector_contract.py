"""Contract tests run over every registered detector, built-in or plug-in."""

from __future__ import annotations

import pytest

from trainguard.detectors.base import Detector, register, registry
from trainguard.findings import DetectorResult
from trainguard.io.dataset import Dataset
from trainguard.records import Kind, Record
from trainguard.scan import exit_code, run_detector, scan


def _tiny(kind: Kind) -> Dataset:
    texts = [f"sample text number {i} about topic {i % 7}" for i in range(40)]
    fields = {
        Kind.CLASSIFICATION: lambda i: {"label": str(i % 2)},
        Kind.INSTRUCTION: lambda i: {"response": f"answer {i % 3}"},
        Kind.PREFERENCE: lambda i: {"chosen": f"good {i}", "rejected": f"bad {i}"},
        Kind.DOCUMENTS: lambda i: {"doc_id": str(i)},
    }[kind]
    return Dataset.from_records([Record(row=i, kind=kind, text=t, **fields(i)) for i, t in enumerate(texts)])


CASES = [(name, kind) for name, cls in sorted(registry().items()) for kind in sorted(cls.kinds)]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_detector_contract(name, kind):
    cls = registry()[name]
    assert cls.description and cls.atlas, "every detector explains itself and maps to ATLAS"
    data = _tiny(kind)
    det = cls()
    if det.applies_to(data):
        pytest.skip(det.applies_to(data))
    findings, result = run_detector(det, data)
    assert isinstance(result, DetectorResult)
    assert result.row_scores is not None and len(result.row_scores) == len(data)
    assert ((result.row_scores >= 0) & (result.row_scores <= 1)).all()
    ids = {r.row: r.id for r in data}
    for f in findings:
        assert f.detector == name
        assert all(ids[r] == rid for r, rid in zip(f.rows, f.record_ids))
    again, _ = run_detector(cls(), data)
    assert [f.fingerprint for f in again] == [f.fingerprint for f in findings]


def test_unknown_setting_is_rejected():
    from trainguard.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown setting"):
        registry()["trigger-association"](min_row=3)


class _Boom(Detector):
    name = "test-boom"
    kinds = frozenset(Kind)
    atlas = ("AML.T0020",)
    description = "always fails"

    def run(self, data):
        raise RuntimeError("exploded")


def test_failed_detector_is_recorded_and_fails_closed():
    report = scan(_tiny(Kind.DOCUMENTS), detectors=[_Boom()])
    assert report.failed[0].name == "test-boom"
    assert "exploded" in report.failed[0].message
    assert exit_code(report, None) == 1


def test_register_rejects_a_second_class_under_one_name():
    with pytest.raises(ValueError):
        register(type("Dup", (_Boom,), {"name": "trigger-association"}))
