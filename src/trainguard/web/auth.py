"""Reviewer accounts: roles, scrypt password hashes, login sessions.

Passwords are stored as `scrypt$N$r$p$salt$hash` (stdlib `hashlib.scrypt`, a
16-byte random salt per user), so the cost can rise later without breaking old
hashes. A session cookie carries a random token; the ledger keeps only its
SHA-256, so a copy of the database does not let anyone log in. Each session has
its own CSRF token, checked on every state-changing request.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from trainguard.errors import ConfigError
from trainguard.ledger.store import Ledger

ROLES = ("viewer", "reviewer", "admin")
CAN_DECIDE = frozenset({"reviewer", "admin"})
MIN_PASSWORD = 10
MAX_NAME = 64
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # ~16 MiB and ~50 ms per attempt
SESSION_HOURS = 8
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    csrf: str

    @property
    def can_decide(self) -> bool:
        return self.role in CAN_DECIDE

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=256 * 1024 * 1024, dklen=len(base64.b64decode(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


@functools.cache
def _dummy_hash() -> str:
    """Checked when the user does not exist, so an unknown name costs as long as a wrong password."""
    return hash_password(secrets.token_urlsafe(16))


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or not set(name) <= NAME_CHARS:
        raise ConfigError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '-' or '@'")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ConfigError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"password too short: at least {MIN_PASSWORD} characters")
    return password


def add_user(ledger: Ledger, name: str, role: str, password: str, by: str) -> int:
    name, role, password = check_name(name), check_role(role), check_password(password)
    if ledger.user(name) is not None:
        raise ConfigError(f"user {name!r} already exists in {ledger.path}")
    pw = hash_password(password)
    with ledger.transaction():
        return ledger.add_user(name, role, pw, by)


def set_user(ledger: Ledger, name: str, by: str, *, role: str | None = None, password: str | None = None,
             disabled: bool | None = None) -> None:
    pw = hash_password(check_password(password)) if password is not None else None
    with ledger.transaction():
        ledger.update_user(name, by, role=check_role(role) if role else None, password_hash=pw, disabled=disabled)


def login(ledger: Ledger, name: str, password: str) -> str | None:
    """A new session token for valid credentials, else None (same work either way)."""
    user = ledger.user(name.strip())
    ok = verify_password(password, user["password"] if user else _dummy_hash())
    if not ok or user is None or user["disabled"]:
        return None
    token = secrets.token_urlsafe(32)
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=SESSION_HOURS)).isoformat(timespec="microseconds")
    with ledger.transaction():
        ledger.add_session(token_digest(token), user["id"], secrets.token_urlsafe(32), expires)
    return token


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_user(ledger: Ledger, token: str | None) -> User | None:
    if not token or len(token) > 200:
        return None
    s = ledger.session(token_digest(token))
    return None if s is None else User(s["user_id"], s["name"], s["role"], s["csrf"])


def logout(ledger: Ledger, token: str | None) -> None:
    if token:
        with ledger.transaction():
            ledger.end_session(token_digest(token))


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())
