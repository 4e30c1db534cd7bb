"""Hostile numbers and sizes never reach SQLite (issue 13 point 11): a clear 4xx page, never a 500."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from trainguard.web import create_app
from trainguard.web.deps import MAX_FORM_BYTES, MAX_REASON
from trainguard.web.routes import ROUTERS

from .helpers import csrf_of, ledger_path, login, queued_rows
from .test_web_api import review_events

HOSTILE = (2**63, 2**64 + 5, -1)


def _query_names(dependant) -> list[str]:
    return [q.name for q in dependant.query_params] + [n for d in dependant.dependencies for n in _query_names(d)]


def _routes() -> list[APIRoute]:
    """Every route of the app: `create_app` includes exactly these routers."""
    return [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]


def test_every_route_answers_hostile_integers_without_a_5xx(gated):
    app = create_app(ledger_path(gated))
    routes = _routes()
    assert len(routes) >= 12, "a route was lost in the split"
    with TestClient(app, raise_server_exceptions=False) as c:
        assert login(c, "alice").status_code == 200
        token = csrf_of(c.get("/queue").text)
        form = {"csrf": token, "decision": "rejected", "reason": "hostile id", "action": "role", "name": "vic",
                "role": "viewer", "return_to": "/queue"}
        tried = 0
        for route in routes:
            if route.path in ("/login", "/logout"):
                continue  # no integer input; logging out would end the session the walk needs
            names = re.findall(r"{(\w+)}", route.path)
            queries = _query_names(route.dependant)
            for value in HOSTILE:
                path = route.path
                for n in names:
                    path = path.replace("{%s}" % n, str(value) if n != "fingerprint" else "x")
                urls = [path] + [f"{path}?{q}={value}" for q in queries]
                if route.path == "/queue":
                    urls += [f"/queue?{q}={value}" for q in ("run", "page", "per_page")]
                for url in urls:
                    for method in route.methods:
                        r = c.request(method, url, data=form if method == "POST" else None)
                        tried += 1
                        assert r.status_code < 500, (method, url, r.status_code, r.text[:300])
                        if value != -1 and (names or "?" in url) and route.path != "/queue":
                            assert r.status_code in (404, 422), (method, url, r.status_code)
                        assert "Traceback" not in r.text
        assert tried > 40
    assert review_events(gated) == []


def test_a_bad_id_is_one_clear_line(client_for):
    r = client_for("vic").get(f"/versions/{2**63}")
    assert r.status_code == 422 and "vid" in r.text and "Bad request" in r.text


def test_a_reason_longer_than_the_limit_is_refused_with_a_clear_422(client_for, gated):
    alice = client_for("alice")
    row = queued_rows(gated)[0]
    token = csrf_of(alice.get("/queue").text)
    long_reason = "x" * (MAX_REASON + 1)
    r = alice.post(f"/queue/1/{row}/decide", data={"decision": "rejected", "reason": long_reason, "csrf": token})
    assert r.status_code == 422 and f"at most {MAX_REASON:,} characters" in r.text
    fp = re.search(r'href="/runs/1/findings/([0-9a-f]+)"', alice.get("/queue").text).group(1)
    r = alice.post(f"/runs/1/findings/{fp}/decide", data={"decision": "rejected", "reason": long_reason,
                                                           "csrf": token})
    assert r.status_code == 422
    assert review_events(gated) == [] and row in queued_rows(gated)
    r = alice.post(f"/queue/1/{row}/decide", data={"decision": "rejected", "reason": "y" * MAX_REASON, "csrf": token})
    assert r.status_code == 200 and len(review_events(gated)) == 1


@pytest.mark.parametrize("size", [MAX_FORM_BYTES + 1, 900_000])
def test_an_oversized_form_is_refused_before_parsing(client_for, gated, size):
    alice = client_for("alice")
    row = queued_rows(gated)[0]
    token = csrf_of(alice.get("/queue").text)
    r = alice.post(f"/queue/1/{row}/decide", data={"decision": "rejected", "reason": "z" * size, "csrf": token})
    assert r.status_code == 413 and "at most 64 KiB" in r.text
    assert review_events(gated) == []
