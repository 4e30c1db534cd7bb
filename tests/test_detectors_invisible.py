"""Invisible and confusable characters, including the benign contexts that must stay quiet."""

from __future__ import annotations

from conftest import classification, plant

from trainguard.scan import run_detector
from trainguard.detectors.invisible_chars import InvisibleCharacters, scan_text
from trainguard.findings import Severity
from trainguard.io.dataset import Dataset
from trainguard.records import Kind, Record


def _docs(texts):
    return Dataset.from_records([Record(row=i, kind=Kind.DOCUMENTS, text=t) for i, t in enumerate(texts)])


def test_zero_width_trigger_with_label_association_is_high(sst2_rows):
    rows, poisoned = plant(sst2_rows, lambda rng: "\u200b", rate=0.01, seed=1)
    result = run_detector(InvisibleCharacters(), classification(rows))
    high = [f for f in result.findings if f.severity >= Severity.HIGH]
    assert len(high) == 1
    assert set(high[0].rows) == poisoned
    assert "U+200B" in high[0].evidence["code_points"]
    assert high[0].evidence["associated_output"] == "1"


def test_clean_slice_is_quiet(sst2_rows):
    assert run_detector(InvisibleCharacters(), classification(sst2_rows)).findings == []


def test_benign_contexts_are_not_reported():
    texts = [
        "family: \U0001f468\u200d\U0001f469\u200d\U0001f467",  # emoji ZWJ sequence
        "\ufeffleading byte order mark",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian ZWNJ
        "flag \U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
        "heart \u2764\ufe0f",
        "café naïve résumé",
    ]
    for t in texts:
        hidden, words = scan_text(t)
        assert hidden == [] and words == [], t


def test_tag_characters_are_high_even_without_association():
    texts = [f"ordinary text {i} \U000e0041\U000e0042" for i in range(3)] + ["clean"] * 5
    result = run_detector(InvisibleCharacters(), _docs(texts))
    assert result.findings[0].severity is Severity.HIGH
    assert result.findings[0].rows == (0, 1, 2)


def test_homoglyph_word_reports_scripts():
    texts = ["please p\u0430y now", "normal words", "\uff50\uff41\uff59 fullwidth"]
    result = run_detector(InvisibleCharacters(), _docs(texts))
    by_scripts = {f.evidence["scripts"]: f.rows for f in result.findings if f.rule == "mixed-script"}
    assert by_scripts == {"Cyrillic+Latin": (0,), "compatibility-lookalike": (2,)}


def test_offsets_point_at_the_character():
    hidden, _ = scan_text("ab\u200bcd\u202e")
    assert hidden == [(2, "\u200b"), (5, "\u202e")]


def test_one_definition_of_hidden_code_points():
    """trainguard.text says which code points hide: what the detectors flag, renderers always show as U+XXXX."""
    import subprocess
    import sys

    from trainguard import text
    from trainguard.report import _safe

    suspicious = [chr(cp) for cp in range(0x110000) if text.SUSPICIOUS.fullmatch(chr(cp))]
    assert len(suspicious) > 6000
    assert all(text.UNSEEN.fullmatch(ch) for ch in suspicious)
    assert _safe.visible is text.visible and _safe._HIDDEN is text.UNSEEN
    assert text.visible("a\u200bb\u3000c d") == "a<U+200B>b<U+3000>c d"
    # No import cycle: the text module stands without the detectors.
    code = "import sys, trainguard.text; print('trainguard.detectors.invisible_chars' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
