"""End to end in headless Chromium: log in, review a real gate run's queue, release, check.

Runs against a real uvicorn server on a free localhost port. Without a
Chromium these tests skip, unless TRAINGUARD_REQUIRE_BROWSER=1 (CI), where a
missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from .helpers import PASSWORDS, XSS_ROWS, ledger_path

from trainguard.attest.keys import generate, load_private
from trainguard.attest.statement import check as check_attestation
from trainguard.gate.release import release
from trainguard.ledger.integrity import check
from trainguard.ledger.store import Ledger

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium() -> str | None:
    for cand in (os.environ.get("TRAINGUARD_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if cand and Path(cand).exists():
            return cand
    return None


def _missing(reason: str) -> None:
    if os.environ.get("TRAINGUARD_REQUIRE_BROWSER") == "1":
        pytest.fail(f"TRAINGUARD_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install playwright)")
    exe = _chromium()
    if exe is None:
        _missing("no Chromium found (Debian: apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def server(gated):
    import uvicorn

    from trainguard.web import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(ledger_path(gated)), host="127.0.0.1", port=port,
                                        log_level="warning", lifespan="off"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        assert time.monotonic() < deadline and t.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)


def _login(page, base, name):
    page.goto(f"{base}/queue")
    assert "/login" in page.url
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/queue")


def _status(project):
    with Ledger.open(ledger_path(project)) as led:
        return {q["row"]: (q["status"], q["decided_by"], q["reason"]) for q in led.reviews(1)}


def test_review_in_the_browser_then_release(browser, server, gated):
    ctx = browser.new_context()
    page = ctx.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _login(page, server, "alice")
    pending = sorted(_status(gated))
    assert page.locator("article.item").count() == 25

    # Poisoned text is shown, never run: the payload is visible as text and did nothing.
    page.goto(f"{server}/queue?per_page=200")
    xss = page.locator(f"#item-1-{XSS_ROWS[0]} .ftext").first
    assert '<script>document.title="pwned"</script>' in xss.inner_text()
    assert page.title() != "pwned" and not dialogs
    assert page.locator(".ftext img").count() == 0 and page.locator("main script").count() == 0
    assert page.locator(f"#item-1-{XSS_ROWS[0]} .mark", has_text="cf").count() >= 1
    assert page.locator(".cp.mark", has_text="<U+200B>").count() >= 1

    # Approve the first row with the mouse.
    page.goto(f"{server}/queue")
    first = page.locator("article.item").first
    row_a = int(first.get_attribute("data-row"))
    first.locator("input[name=reason]").fill("the sentence reads as a genuine review")
    first.locator("button.approve").click()
    page.wait_for_selector(".flash.ok")
    assert f"row {row_a} (run 1) approved" in page.locator(".flash.ok").inner_text()

    # Reject the second row with the keyboard: j moves, r asks for a reason, Enter submits.
    page.locator("h1").click()
    row_r = int(page.locator("article.item").nth(1).get_attribute("data-row"))
    page.keyboard.press("j")
    assert page.locator("article.item.current").get_attribute("data-row") == str(row_r)
    page.keyboard.press("r")
    assert "type a reason" in page.locator("article.item.current .hint").inner_text()
    page.keyboard.type("cf trigger forces the negative label")
    page.keyboard.press("Enter")
    page.wait_for_selector(".flash.ok")
    assert f"row {row_r} (run 1) rejected" in page.locator(".flash.ok").inner_text()

    # With the reason already typed, `a` approves at once.
    page.locator("h1").click()
    row_k = int(page.locator("article.item.current").get_attribute("data-row"))
    page.locator("article.item.current input[name=reason]").fill("checked by hand: benign")
    page.locator("h1").click()
    page.keyboard.press("a")
    page.wait_for_selector(".flash.ok")
    st = _status(gated)
    assert st[row_a] == ("approved", "alice", "the sentence reads as a genuine review")
    assert st[row_r] == ("rejected", "alice", "cf trigger forces the negative label")
    assert st[row_k] == ("approved", "alice", "checked by hand: benign")

    # Bulk: reject every row each remaining finding holds, from its finding page.
    while True:
        page.goto(f"{server}/queue")
        if page.locator("article.item").count() == 0:
            break
        page.locator("article.item").first.locator("a.bulk").first.click()
        page.fill("form.bulk-form input[name=reason]", "held by a backdoor finding")
        page.click("form.bulk-form button.reject")
        page.wait_for_selector(".flash.ok")
    assert "Nothing to review here" in page.content()
    st = _status(gated)
    assert all(s[0] != "pending" and s[1] == "alice" for s in st.values()) and len(st) == len(pending)

    # The audit trail shows who decided what and why.
    page.goto(f"{server}/audit")
    trail = page.inner_text("table")
    while page.locator("a", has_text="older").count():
        page.click("a:has-text('older')")
        trail += page.inner_text("table")
    assert "cf trigger forces the negative label" in trail and "checked by hand: benign" in trail

    # Release from the CLI library call and check the result against the decisions.
    keys = gated / "keys"
    priv, pub = generate(keys, "tg")
    with Ledger.open(ledger_path(gated)) as led:
        assert check(led).ok
        res = release(led, gated / "data.jsonl", gated / "approved.jsonl", [load_private(priv)], by="release-bot")
    rejected = sorted(r for r, s in st.items() if s[0] == "rejected")
    assert res.excluded == rejected
    kept = [json.loads(x) for x in (gated / "approved.jsonl").read_text().splitlines()]
    original = [json.loads(x) for x in (gated / "data.jsonl").read_text().splitlines()]
    assert len(kept) == len(original) - len(rejected)
    assert kept == [r for i, r in enumerate(original) if i not in set(rejected)]
    att = check_attestation(gated / "approved.jsonl", res.attestation, [pub])
    decisions = {d["row"]: (d["decision"], d["by"]) for d in att.predicate["reviews"]["decisions"]}
    assert decisions[row_a] == ("approved", "alice") and decisions[row_r] == ("rejected", "alice")

    # The release shows on the page with its attestation.
    page.goto(f"{server}/releases")
    text = page.inner_text("main")
    assert "approved.jsonl" in text and res.statement["predicateType"] in text
    ctx.close()


def test_viewer_sees_the_queue_but_cannot_decide(browser, server, gated):
    ctx = browser.new_context()
    page = ctx.new_page()
    _login(page, server, "vic")
    assert page.locator("article.item").count() == 25 and page.locator("form.decide").count() == 0
    page.keyboard.press("a")
    page.keyboard.press("r")
    assert all(s[0] == "pending" for s in _status(gated).values())
    cookies = {c["name"]: c for c in ctx.cookies()}
    assert cookies["tg_session"]["httpOnly"] and cookies["tg_session"]["sameSite"] == "Strict"
    ctx.close()


def test_missing_browser_fails_when_ci_requires_it(monkeypatch):
    monkeypatch.setenv("TRAINGUARD_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="TRAINGUARD_REQUIRE_BROWSER=1"):
        _missing("no Chromium found")
    monkeypatch.delenv("TRAINGUARD_REQUIRE_BROWSER")
    with pytest.raises(pytest.skip.Exception):
        _missing("no Chromium found")


def test_a_finding_page_shows_every_held_row_with_the_trigger_highlighted(browser, server, gated):
    """Issue 17: the page behind "Reject all N" shows each held row's text, trigger marked, a page at a time."""
    from trainguard.report._safe import visible

    with Ledger.open(ledger_path(gated)) as led:
        findings = json.loads(led.gate_run(1)["report"])["findings"]
    cf = next(f for f in findings if f["evidence"].get("trigger") == "cf")
    lines = (gated / "data.jsonl").read_text(encoding="utf-8").splitlines()
    ctx = browser.new_context()
    page = ctx.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    _login(page, server, "alice")
    page.goto(f"{server}/runs/1/findings/{cf['fingerprint']}")
    assert page.locator("form.bulk-form button.reject").inner_text() == f"Reject all {len(cf['rows'])}"
    assert page.evaluate("window.scrollY") == 0  # the evidence and the bulk form stay in view on load
    assert page.locator("table.evidence th").all_inner_texts().count("trigger") == 1
    seen: dict[int, str] = {}
    while True:
        for art in page.locator("article.item").all():
            row = int(art.get_attribute("data-row"))
            seen[row] = art.locator(".ftext").first.inner_text()
            marks = art.locator(".ftext .mark")
            assert marks.count() >= 1 and all(m.lower() == "cf" for m in marks.all_inner_texts()), row
            colour = marks.first.evaluate("e => getComputedStyle(e).backgroundColor")
            assert colour not in ("rgba(0, 0, 0, 0)", "transparent"), colour  # the mark is visibly highlighted
        nxt = page.locator("a[rel=next]")
        if nxt.count() == 0:
            break
        with page.expect_navigation():
            nxt.first.click()
    assert sorted(seen) == sorted(cf["rows"])
    for row, shown in seen.items():
        assert shown == visible(json.loads(lines[row])["text"]), row
    assert page.title() != "pwned" and not dialogs and page.locator(".ftext img").count() == 0
    assert not [m for m in console if "Content Security Policy" in m], console  # nothing inline was needed
    ctx.close()
