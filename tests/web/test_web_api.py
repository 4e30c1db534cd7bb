"""The review app through FastAPI's TestClient: access control, CSRF, escaping, decisions."""

from __future__ import annotations

import json
import re
import threading

from .helpers import PASSWORDS, XSS_ROWS, csrf_of, ledger_path, login, queued_rows

from trainguard.gate import review
from trainguard.ledger.integrity import check
from trainguard.ledger.store import AlreadyDecided, Ledger


def decide(client, run, row, decision="rejected", reason="carries the cf trigger", csrf=None, page="/queue"):
    token = csrf if csrf is not None else csrf_of(client.get(page).text)
    return client.post(f"/queue/{run}/{row}/decide",
                       data={"decision": decision, "reason": reason, "csrf": token, "return_to": page})


def review_events(project):
    with Ledger.open(ledger_path(project)) as led:
        return led.events("review")


def test_pages_need_login(client_for, gated):
    c = client_for()
    for path in ("/", "/queue", "/audit", "/releases", "/versions/1", "/runs/1/report", "/users"):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
    row = queued_rows(gated)[0]
    r = c.post(f"/queue/1/{row}/decide", data={"decision": "approved", "reason": "x", "csrf": "x"},
               follow_redirects=False)
    assert r.status_code == 401
    assert review_events(gated) == []


def test_login_checks_password_csrf_and_next(client_for):
    c = client_for()
    assert login(c, "alice", "wrong-password-here").status_code == 401
    assert login(c, "nobody", "whatever-password").status_code == 401
    c.get("/login")
    r = c.post("/login", data={"name": "alice", "password": PASSWORDS["alice"], "csrf": "forged"})
    assert r.status_code == 403
    page = c.get("/login?next=//evil.example/x")
    assert "evil.example" not in page.text
    r = c.post("/login", data={"name": "alice", "password": PASSWORDS["alice"], "csrf": csrf_of(page.text),
                               "next": "//evil.example/x"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/queue"
    cookie = r.headers["set-cookie"]
    assert "tg_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie


def test_secure_cookie_option(gated):
    from fastapi.testclient import TestClient

    from trainguard.web import create_app

    with TestClient(create_app(ledger_path(gated), secure_cookies=True), base_url="https://testserver") as c:
        r = c.post("/login", data={"name": "bob", "password": PASSWORDS["bob"], "csrf": csrf_of(c.get("/login").text)},
                   follow_redirects=False)
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


def test_xss_payload_in_a_record_is_rendered_as_text(client_for):
    c = client_for("alice")
    r = c.get("/queue?per_page=200")
    assert r.status_code == 200
    for row in XSS_ROWS:
        assert f'id="item-1-{row}"' in r.text
    assert "<script>document.title" not in r.text and "<img src=x" not in r.text
    assert r.text.count("&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;") == len(XSS_ROWS)
    assert "script-src 'self'" in r.headers["content-security-policy"]
    scripts = re.findall(r"<script[^>]*>", r.text)
    assert scripts == ['<script src="/static/review.js">']  # the page's own script, nothing from data


def test_evidence_is_highlighted(client_for):
    html = client_for("alice").get("/queue?per_page=200").text
    assert '<span class="mark">cf</span>' in html  # BadNets trigger token
    assert '<span class="cp mark">&lt;U+200B&gt;</span>' in html  # zero-width trigger shown as a badge
    assert re.search(r'<span class="mark">I watch this 3D movie</span>', html)  # AddSent phrase
    assert "trigger-association/forced-output" in html and "invisible-characters/zero-width" in html


def test_csrf_is_required_for_every_decision(client_for, gated):
    alice, bob = client_for("alice"), client_for("bob")
    row = queued_rows(gated)[0]
    assert decide(alice, 1, row, csrf="").status_code == 403
    assert decide(alice, 1, row, csrf="not-the-token").status_code == 403
    assert decide(alice, 1, row, csrf=csrf_of(bob.get("/queue").text)).status_code == 403  # another session's
    r = alice.post(f"/queue/1/{row}/decide", data={"decision": "rejected", "reason": "x"})
    assert r.status_code == 403
    assert review_events(gated) == [] and row in queued_rows(gated)
    assert decide(alice, 1, row).status_code == 200
    assert [e["actor"] for e in review_events(gated)] == ["alice"]


def test_viewer_cannot_decide_or_manage(client_for, gated):
    vic = client_for("vic")
    page = vic.get("/queue")
    assert page.status_code == 200 and 'class="decide"' not in page.text
    row = queued_rows(gated)[0]
    r = decide(vic, 1, row)
    assert r.status_code == 403 and "may not decide" in r.text
    assert vic.get("/users").status_code == 403
    token = csrf_of(page.text)
    r = vic.post("/users", data={"csrf": token, "action": "add", "name": "mallory", "role": "admin",
                                 "password": "mallory-password"})
    assert r.status_code == 403
    assert review_events(gated) == []
    with Ledger.open(ledger_path(gated)) as led:
        assert led.user("mallory") is None


def test_decision_needs_a_reason(client_for, gated):
    alice = client_for("alice")
    row = queued_rows(gated)[0]
    r = decide(alice, 1, row, reason="   ")
    assert r.status_code == 200 and "needs a reason" in r.text
    r = decide(alice, 1, row, decision="maybe")
    assert "choose approve or reject" in r.text
    assert review_events(gated) == [] and row in queued_rows(gated)


def test_decisions_are_ledger_events_in_the_audit_trail(client_for, gated):
    alice = client_for("alice")
    rows = queued_rows(gated)
    assert "approved by" not in decide(alice, 1, rows[0], "approved", "sentiment is genuine").text
    decide(alice, 1, rows[1], "rejected", "cf trigger forces the label")
    with Ledger.open(ledger_path(gated)) as led:
        items = {q["row"]: q for q in led.reviews(1)}
        assert (items[rows[0]]["status"], items[rows[0]]["decided_by"]) == ("approved", "alice")
        assert (items[rows[1]]["status"], items[rows[1]]["reason"]) == ("rejected", "cf trigger forces the label")
        assert check(led).ok
    trail = alice.get("/audit").text
    assert "cf trigger forces the label" in trail and "sentiment is genuine" in trail
    assert trail.count("<strong>alice</strong>") == 2


def test_concurrent_decisions_one_wins_over_http(client_for, gated):
    alice, bob = client_for("alice"), client_for("bob")
    row = queued_rows(gated)[0]
    bob_token = csrf_of(bob.get("/queue").text)  # bob has the page open
    decide(alice, 1, row, "approved", "benign review")
    r = decide(bob, 1, row, "rejected", "looks poisoned", csrf=bob_token)
    assert "already approved by alice" in r.text and "your decision was not recorded" in r.text
    assert [(e["actor"], e["payload"]["decision"]) for e in review_events(gated)] == [("alice", "approved")]


def test_concurrent_decisions_one_wins_in_threads(gated):
    """Eight reviewers, one connection each, decide one row at the same moment: one decision lands."""
    row = queued_rows(gated)[0]
    barrier = threading.Barrier(8)
    results: dict[str, str] = {}

    def reviewer(name: str) -> None:
        with Ledger.open(ledger_path(gated)) as led:
            barrier.wait()
            try:
                review.decide(led, row, "rejected", f"reason of {name}", name, 1, only_pending=True)
                results[name] = "won"
            except AlreadyDecided as e:
                results[name] = f"lost to {e.by}"

    threads = [threading.Thread(target=reviewer, args=(f"r{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, v in results.items() if v == "won"]
    assert len(winners) == 1 and len(results) == 8
    assert all(v == f"lost to {winners[0]}" for n, v in results.items() if n != winners[0])
    events = review_events(gated)
    assert [e["actor"] for e in events] == winners
    with Ledger.open(ledger_path(gated)) as led:
        assert led.review_item(1, row)["decided_by"] == winners[0] and check(led).ok


def test_bulk_decision_on_a_finding(client_for, gated):
    alice, bob = client_for("alice"), client_for("bob")
    with Ledger.open(ledger_path(gated)) as led:
        run = json.loads(led.gate_run(1)["report"])
    cf = next(f for f in run["findings"] if f["evidence"].get("trigger") == "cf")
    decide(bob, 1, cf["rows"][0], "approved", "bob checked this one")
    page = alice.get(f"/runs/1/findings/{cf['fingerprint']}")
    assert page.status_code == 200 and f"Reject all {len(cf['rows']) - 1}" in page.text
    r = alice.post(f"/runs/1/findings/{cf['fingerprint']}/decide",
                   data={"decision": "rejected", "reason": "BadNets trigger cf", "csrf": csrf_of(page.text)})
    assert f"rejected {len(cf['rows']) - 1} row(s)" in r.text
    with Ledger.open(ledger_path(gated)) as led:
        status = {q["row"]: (q["status"], q["decided_by"]) for q in led.reviews(1)}
        assert check(led).ok
    assert status[cf["rows"][0]] == ("approved", "bob")
    assert all(status[r] == ("rejected", "alice") for r in cf["rows"][1:])
    r = alice.post(f"/runs/1/findings/{cf['fingerprint']}/decide",
                   data={"decision": "rejected", "reason": "", "csrf": csrf_of(page.text)})
    assert "needs approve or reject and a reason" in r.text


def test_filters_by_detector_severity_source(client_for, gated):
    c = client_for("vic")
    total = len(queued_rows(gated))
    assert f"{total} row(s)" in c.get("/queue").text
    inv = c.get("/queue?detector=invisible-characters&per_page=200").text
    n_inv = inv.count('class="item"')
    assert 0 < n_inv < total and "invisible-characters/zero-width" in inv
    assert c.get("/queue?severity=critical").text.count('class="item"') == 0
    assert c.get("/queue?source=sst2-vendor&per_page=200").text.count('class="item"') == total
    assert c.get("/queue?source=elsewhere").text.count('class="item"') == 0
    assert c.get("/queue?status=bogus&page=-4&per_page=x").status_code == 200  # lenient, falls back


def test_other_pages_render(client_for, gated):
    c = client_for("vic")
    home = c.get("/").text
    assert "data.jsonl" in home and "sst2-vendor" in home and "research-only" in home and "quarantine" in home
    with Ledger.open(ledger_path(gated)) as led:
        root = led.versions()[0]["merkle_root"]
    assert root in c.get("/versions/1").text
    rep = c.get("/runs/1/report")
    assert "Findings by severity" in rep.text and "<script" not in rep.text
    assert rep.headers["content-security-policy"].startswith("default-src 'none'")
    assert c.get("/versions/99").status_code == 404
    assert c.get("/runs/1/findings/nope").status_code == 404


def test_logout_ends_the_session(client_for):
    c = client_for("alice")
    token = csrf_of(c.get("/queue").text)
    cookie = c.cookies.get("tg_session")
    assert c.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    c.cookies.set("tg_session", cookie)
    assert c.get("/queue", follow_redirects=False).status_code == 303


def test_admin_manages_users(client_for, gated):
    ada = client_for("ada")
    token = csrf_of(ada.get("/users").text)
    r = ada.post("/users", data={"csrf": token, "action": "add", "name": "carol", "role": "viewer",
                                 "password": "carol-password"})
    assert "user carol added" in r.text
    r = ada.post("/users", data={"csrf": token, "action": "add", "name": "dave", "role": "viewer", "password": "short"})
    assert "too short" in r.text
    ada.post("/users", data={"csrf": token, "action": "disable", "name": "vic"})
    vic = client_for()
    assert login(vic, "vic").status_code == 401
    with Ledger.open(ledger_path(gated)) as led:
        assert [e["payload"]["action"] for e in led.events("user")][-2:] == ["add", "update"]
        assert led.user("carol")["role"] == "viewer" and led.user("vic")["disabled"] == 1


def test_login_throttle_after_repeated_failures(client_for):
    c = client_for()
    for _ in range(5):
        assert login(c, "bob", "not-bobs-password").status_code == 401
    r = login(c, "bob")  # even the right password waits now
    assert r.status_code == 429 and "too many failed logins" in r.text
    assert login(client_for(), "alice").status_code == 200  # other names are unaffected


def test_unknown_host_header_is_refused(gated):
    from fastapi.testclient import TestClient

    from trainguard.web import create_app

    app = create_app(ledger_path(gated), allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://rebound.example") as c:
        assert c.get("/login").status_code == 400
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        assert c.get("/login").status_code == 200


def test_a_changed_or_missing_file_is_never_shown_as_the_gated_record(client_for, gated):
    rows = queued_rows(gated)
    lines = (gated / "data.jsonl").read_text(encoding="utf-8").splitlines()
    lines[rows[0]] = json.dumps({"text": "swapped after the gate", "label": 1})
    (gated / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    html = client_for("alice").get("/queue").text
    assert "swapped after the gate" not in html
    assert html.count("changed since the gate ran") == 1
    (gated / "data.jsonl").unlink()
    html = client_for("alice").get("/queue").text
    assert html.count("record unavailable: data.jsonl is not found") == 25


def test_a_decision_carried_to_a_later_gate_run_says_where_it_was_made(client_for, gated, monkeypatch):
    from trainguard.gate.policy import load as load_policy
    from trainguard.gate.run import gate

    alice = client_for("alice")
    rows = queued_rows(gated)
    decide(alice, 1, rows[0], "rejected", "cf trigger forces the label")
    monkeypatch.chdir(gated)  # the gated path was recorded relative to the project
    with Ledger.open(ledger_path(gated)) as led:
        again = gate(led, "data.jsonl", load_policy(None), by="ci")
        assert again.run_id == 2 and [c["row"] for c in again.carried] == [rows[0]]
        assert check(led).ok
    html = alice.get("/queue?run=2&status=rejected").text
    assert "carried over from gate run 1" in html and "cf trigger forces the label" in html
    assert "carried over" not in alice.get("/queue?run=1&status=rejected").text  # the original is alice's own


def test_a_newer_gate_run_of_the_same_content_closes_the_older_queue(client_for, gated, monkeypatch):
    """Issue 13 point 12 on the page: after a second run each record waits once, under the newest run."""
    from trainguard.gate.policy import load as load_policy
    from trainguard.gate.run import gate

    pending = queued_rows(gated)
    monkeypatch.chdir(gated)
    with Ledger.open(ledger_path(gated)) as led:
        assert gate(led, "data.jsonl", load_policy(None), by="ci").run_id == 2
    vic = client_for("vic")
    page = vic.get("/queue?per_page=200").text
    assert f"{len(pending)} row(s)" in page and 'data-run="1"' not in page
    old = vic.get("/queue?run=1&status=superseded&per_page=200").text
    assert old.count('class="item"') == len(pending) and "superseded by gate run 2" in old
    trail = vic.get("/audit").text
    assert f"{len(pending)} pending row(s) of gate run 1 closed: superseded by gate run 2" in trail
