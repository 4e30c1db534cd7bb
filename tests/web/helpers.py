"""Shared constants and helpers for the review page tests (fixtures live in conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path

from trainguard.ledger.store import Ledger

DEMO = Path(__file__).resolve().parents[2] / "src" / "trainguard" / "data" / "demo"
XSS = ' <script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'
XSS_ROWS = (97, 225)  # BadNets rows of the demo set (trigger `cf`): they stay quarantined
PASSWORDS = {"alice": "alice-reviews-rows", "bob": "bob-reviews-rows", "vic": "vic-only-looks", "ada": "ada-administers"}
ROLES = {"alice": "reviewer", "bob": "reviewer", "vic": "viewer", "ada": "admin"}


def ledger_path(project: Path) -> Path:
    return project / ".trainguard" / "ledger.db"


def queued_rows(project: Path, status: str | None = "pending") -> list[int]:
    with Ledger.open(ledger_path(project)) as led:
        return [q["row"] for q in led.reviews(1, status)]


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "page has no CSRF field"
    return m.group(1)


def login(client, name: str, password: str | None = None):
    page = client.get("/login")
    return client.post("/login", data={"name": name, "password": password or PASSWORDS[name],
                                       "csrf": csrf_of(page.text), "next": "/queue"})
