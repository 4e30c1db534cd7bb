"""Login limits hold under parallel attack (issue 13 point 10): password checks are counted, never timed.

Each test replaces `auth.verify_password` by a stand-in that records the attempt and
blocks until every request has either reached it or been answered, so the count of
evaluations is the number of scrypt hashes the server would have started at once.
"""

from __future__ import annotations

import secrets
import threading
import time

import pytest
from fastapi.testclient import TestClient

from trainguard.web import auth, create_app
from trainguard.web.limits import LoginLimiter, LoginLimits, Refused

from .helpers import csrf_of, ledger_path, login

N = 40


def _attack(app, monkeypatch, names: list[str], clients: list[str]) -> tuple[int, list]:
    """Post one wrong-password login per (name, client) at the same moment: (evaluated, responses)."""
    evaluated: list[str] = []
    lock = threading.Lock()
    release = threading.Event()

    def counting(password: str, stored: str) -> bool:
        with lock:
            evaluated.append(password)
        release.wait(30)
        return False

    monkeypatch.setattr(auth, "verify_password", counting)
    prepared = []
    for name, ip in zip(names, clients):
        c = TestClient(app, client=(ip, 50000))
        prepared.append((c, {"name": name, "password": "wrong-" + secrets.token_hex(4),
                             "csrf": csrf_of(c.get("/login").text), "next": "/queue"}))
    responses: list = []
    start = threading.Barrier(len(prepared))

    def attempt(c, form) -> None:
        start.wait()
        r = c.post("/login", data=form)
        with lock:
            responses.append(r)

    threads = [threading.Thread(target=attempt, args=p) for p in prepared]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60  # a safety net against a hang, not a measurement
    while time.monotonic() < deadline:
        with lock:
            if len(responses) + len(evaluated) >= len(prepared):
                break
        time.sleep(0.01)
    release.set()
    for t in threads:
        t.join(30)
    for c, _ in prepared:
        c.close()
    assert len(responses) == len(prepared)
    return len(evaluated), responses


def test_parallel_wrong_passwords_for_one_name_are_cut_at_the_lockout(gated, monkeypatch):
    """40 parallel guesses for one name from 40 addresses: only the lockout's 5 are evaluated (was: all 40)."""
    app = create_app(ledger_path(gated), login_limits=LoginLimits(in_flight=N, per_client=N,
                                                                  per_client_per_minute=1000, wait=0))
    evaluated, responses = _attack(app, monkeypatch, ["bob"] * N, [f"10.0.0.{i}" for i in range(N)])
    assert evaluated == LoginLimits.max_failures
    refused = [r for r in responses if r.status_code == 429]
    assert len(refused) == N - evaluated
    assert all("too many failed logins" in r.text and int(r.headers["retry-after"]) > 0 for r in refused)
    monkeypatch.undo()
    with TestClient(app, client=("10.0.1.1", 1)) as c:  # even the right password waits now
        r = login(c, "bob")
        assert r.status_code == 429 and int(r.headers["retry-after"]) <= LoginLimits.window


def test_a_flood_of_random_names_from_one_client_is_refused_beyond_its_limit(app, monkeypatch):
    """Made-up names dodge the per-name lockout; the per-address bound still stops the scrypt work."""
    evaluated, responses = _attack(app, monkeypatch, [secrets.token_hex(6) for _ in range(N)], ["203.0.113.9"] * N)
    assert evaluated <= LoginLimits.per_client
    refused = [r for r in responses if r.status_code == 429]
    assert len(refused) == N - evaluated and all(int(r.headers["retry-after"]) >= 1 for r in refused)
    monkeypatch.undo()
    with TestClient(app, client=("198.51.100.7", 1)) as c:  # the slots were given back: a real user gets in
        assert login(c, "alice").status_code == 200


def test_a_flood_from_many_addresses_is_bounded_in_total(gated, monkeypatch):
    app = create_app(ledger_path(gated), login_limits=LoginLimits(in_flight=3, per_client=N,
                                                                  per_client_per_minute=1000, wait=0))
    evaluated, responses = _attack(app, monkeypatch, [secrets.token_hex(6) for _ in range(N)],
                                   [f"10.1.{i}.1" for i in range(N)])
    assert evaluated == 3
    assert sum(r.status_code == 429 and "busy" in r.text for r in responses) == N - 3


def test_one_address_may_start_only_so_many_logins_a_minute(gated):
    app = create_app(ledger_path(gated), login_limits=LoginLimits(per_client_per_minute=3))
    with TestClient(app) as c:
        codes = [login(c, f"nobody{i}", "wrong-password").status_code for i in range(4)]
        assert codes == [401, 401, 401, 429]
    with TestClient(app, client=("192.0.2.1", 1)) as other:
        assert login(other, "alice").status_code == 200


def test_limiter_reservation_is_released_and_success_clears_the_name():
    lim = LoginLimiter(LoginLimits(max_failures=2, in_flight=1, per_client=1, wait=0))
    slot = lim.reserve("ann", "a")
    with pytest.raises(Refused, match="busy"):
        lim.reserve("bea", "b")  # the one server-wide slot is taken
    with pytest.raises(Refused, match="still being checked"):
        lim.reserve("cy", "a")
    lim.finish(slot, ok=False)
    lim.finish(slot, ok=False)  # finishing twice frees nothing twice
    lim.finish(lim.reserve("ann", "b"), ok=False)
    with pytest.raises(Refused, match="too many failed") as e:
        lim.reserve("ann", "c")
    assert 1 <= e.value.retry_after <= 300
    lim2 = LoginLimiter(LoginLimits(max_failures=2, in_flight=1, wait=0))
    lim2.finish(lim2.reserve("dan", "a"), ok=False)
    lim2.finish(lim2.reserve("dan", "a"), ok=True)  # a success forgets the earlier failure
    lim2.finish(lim2.reserve("dan", "a"), ok=False)
    lim2.reserve("dan", "a")



def test_attempts_waiting_for_a_slot_are_checked_again_when_they_get_it():
    """Two guesses for a name one failure from the lockout wait for the only slot: one runs, one is refused."""
    lim = LoginLimiter(LoginLimits(max_failures=2, in_flight=1, per_client=10, wait=30))
    lim.finish(lim.reserve("nell", "c0"), ok=False)
    holder = lim.reserve("someone-else", "a")
    results: dict[str, object] = {}

    def guess(client: str) -> None:
        try:
            results[client] = lim.reserve("nell", client)
        except Refused as e:
            results[client] = e

    threads = [threading.Thread(target=guess, args=(c,)) for c in ("b", "c")]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30  # safety net only
    while time.monotonic() < deadline:
        with lim._cond:
            if {"b", "c"} <= set(lim._client_busy):
                break
        time.sleep(0.01)
    lim.finish(holder, ok=True)
    while time.monotonic() < deadline and not results:
        time.sleep(0.01)
    admitted = [v for v in results.values() if not isinstance(v, Refused)]
    assert len(admitted) == 1
    lim.finish(admitted[0], ok=False)
    for t in threads:
        t.join(30)
    refused = [v for v in results.values() if isinstance(v, Refused)]
    assert len(refused) == 1 and "too many failed" in refused[0].message


def test_a_name_no_account_can_have_costs_no_hash_and_no_limiter_entry(app, monkeypatch):
    monkeypatch.setattr(auth, "verify_password", lambda *a: pytest.fail("hashed a password for an impossible name"))
    with TestClient(app) as c:
        assert login(c, "n" * 5000, "wrong-password").status_code == 401
    assert not app.state.tg.limiter._fails
