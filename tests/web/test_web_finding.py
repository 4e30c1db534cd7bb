"""Reviewers see the rows (issue 17): a finding page lists every held row's text, trigger marked,
evidence as a readable key/value table, a page of rows at a time."""

from __future__ import annotations

import html
import json
import re

from trainguard.ledger.store import Ledger
from trainguard.report.highlight import evidence_table, record_fields, segments

from .helpers import XSS_ROWS, ledger_path


def _findings(project) -> list[dict]:
    with Ledger.open(ledger_path(project)) as led:
        return json.loads(led.gate_run(1)["report"])["findings"]


def _walk(client, url: str) -> tuple[dict[int, str], list[str]]:
    """Every article on every page of a finding's rows: {row: article html}, and the pages' html."""
    arts: dict[int, str] = {}
    pages, nxt = [], url
    while nxt:
        page = client.get(nxt)
        assert page.status_code == 200, page.text[:300]
        pages.append(page.text)
        for row, body in re.findall(r'<article class="item"[^>]*data-row="(\d+)">(.*?)</article>', page.text, re.S):
            assert int(row) not in arts, f"row {row} shown on two pages"
            arts[int(row)] = body
        m = re.search(r'<a href="([^"]+)#rows" rel="next">', page.text)
        nxt = html.unescape(m.group(1)) if m else None
    return arts, pages


def test_finding_page_shows_every_held_row_with_its_trigger_marked(client_for, gated):
    cf = next(f for f in _findings(gated) if f["evidence"].get("trigger") == "cf")
    lines = (gated / "data.jsonl").read_text(encoding="utf-8").splitlines()
    arts, pages = _walk(client_for("alice"), f"/runs/1/findings/{cf['fingerprint']}")
    assert len(pages) > 1, "30 rows at 20 a page should take two pages"
    assert sorted(arts) == sorted(cf["rows"])
    for row, body in arts.items():
        assert '<span class="mark">cf</span>' in body, row
        text = json.loads(lines[row])["text"]
        plain = html.unescape(re.sub(r"<[^>]+>", "", body))
        assert text.split(" cf ")[0][:30] in plain, row
    for row in XSS_ROWS:  # attacker text is shown as text, never as markup
        assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in arts[row]
    for page in pages:
        assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/review.js">']
    assert f"Reject all {len(cf['rows'])}" in pages[0]


def test_finding_rows_page_size_is_bounded_and_paged(client_for, gated):
    cf = next(f for f in _findings(gated) if f["evidence"].get("trigger") == "cf")
    c = client_for("vic")
    arts, pages = _walk(c, f"/runs/1/findings/{cf['fingerprint']}?per_page=7")
    assert len(pages) == -(-len(cf["rows"]) // 7) and sorted(arts) == sorted(cf["rows"])
    assert c.get(f"/runs/1/findings/{cf['fingerprint']}?per_page=100000").status_code == 422
    beyond = c.get(f"/runs/1/findings/{cf['fingerprint']}?page_no=99")
    assert beyond.status_code == 200 and 'class="item"' not in beyond.text


def test_evidence_is_a_key_value_table_without_newline_badges(client_for, gated):
    inv = next(f for f in _findings(gated) if f["detector"] == "invisible-characters")
    page = client_for("vic").get(f"/runs/1/findings/{inv['fingerprint']}").text
    evidence = page[page.index("<h2>Evidence</h2>"):page.index('<h2 id="rows">')]
    assert "<pre" not in evidence and "&lt;U+000A&gt;" not in evidence
    assert "<th>category</th>" in evidence and "zero-width" in evidence
    assert evidence.count('<table class="kv">') >= 2  # nested values (examples -> text -> offsets) are tables
    assert "<th>offsets</th>" in evidence


def test_newlines_are_line_breaks_and_hidden_characters_badges():
    assert segments("line one\nline\ttwo") == [("line one\nline\ttwo", "")]
    assert segments("a\u200bb\rc") == [("a", ""), ("<U+200B>", "cp"), ("b", ""), ("<U+000D>", "cp"), ("c", "")]
    rows = dict(evidence_table({"note": "first\nsecond", "nested": {"k": ["a", "b"]}, "n": 0.123456}))
    assert rows["note"] == {"text": [("first\nsecond", "")]}
    assert rows["nested"]["table"][0] == ("k", {"text": [("a, b", "")]})
    assert rows["n"] == {"text": [("0.1235", "")]}
    deep = evidence_table({"a": {"b": {"c": {"d": {"e": 1}}}}})
    assert "text" in deep[0][1]["table"][0][1]["table"][0][1]["table"][0][1]  # past MAX_DEPTH: compact JSON


def test_preference_and_chat_records_read_as_text():
    rec = {"prompt": [{"role": "user", "content": "cf tell me"}, {"role": "assistant", "content": "Sure"}],
           "chosen": "no\nthanks", "rejected": "Sure cf", "label": 1}
    fields = {name: "".join(t for t, _ in segs) for name, segs in record_fields(rec, ["cf"])}
    assert fields == {"prompt": "user: cf tell me\n\nassistant: Sure", "chosen": "no\nthanks",
                      "rejected": "Sure cf", "label": "1"}
    marked = [t for _, segs in record_fields(rec, ["cf"]) for t, c in segs if c == "mark"]
    assert marked == ["cf", "cf"]


def test_ledger_views_are_typed_and_agree_with_the_gate(gated):
    import dataclasses

    import pytest

    from trainguard.gate import review
    from trainguard.ledger import views

    cf = next(f for f in _findings(gated) if f["evidence"].get("trigger") == "cf")
    with Ledger.open(ledger_path(gated)) as led:
        flt = views.QueueFilter(status="all", run=1, fingerprint=cf["fingerprint"], per_page=views.MAX_PER_PAGE)
        rows, total = views.queue_rows(led, flt)
        assert [r.row for r in rows] == review.rows_with_finding(led, 1, cf["fingerprint"], None) == sorted(cf["rows"])
        assert total == len(rows) and all(isinstance(r, views.QueueRow) and r.status == "pending" for r in rows)
        with pytest.raises(dataclasses.FrozenInstanceError):
            rows[0].status = "approved"  # type: ignore[misc]
        pending = len(led.reviews(1, "pending"))
        (v,) = views.version_overviews(led)
        assert (v.dataset, v.gate, v.gate_run, v.pending, v.releases) == ("data.jsonl", "quarantine", 1, pending, 0)
        (run,) = views.run_summaries(led, v.id)
        assert run.counts == {"pending": pending} and run.queued == pending
        trail = views.audit_events(led, 1, 50)
        assert trail.total >= 5 and trail.events[0].kind in views.AUDIT_KINDS
        opts = views.queue_options(led)
        assert "trigger-association" in opts.detectors and [r.pending for r in opts.runs] == [pending]
