"""What every router of the review app shares: its state, the session user and CSRF as dependencies.

A route says what it needs in its signature: `user: User = Depends(current_user)`
for a page, `post: Posted = Depends(deciding)` (or `any_post`, `administering`) for a
state change, which checks the login, the session's CSRF token and the role before
the route runs. Integer path and query parameters are bounded (`Id`, `PageNo`), so a
number SQLite cannot hold is a 422 page, never a 500.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Annotated, Any, Callable

from fastapi import Depends, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from trainguard.ledger.store import Ledger
from trainguard.ledger.views import MAX_ID, MAX_PER_PAGE
from trainguard.web import auth
from trainguard.web.limits import LoginLimiter
from trainguard.web.queue import MAX_PAGE, Queue

SESSION_COOKIE = "tg_session"
LOGIN_CSRF_COOKIE = "tg_login_csrf"
MAX_FORM_BYTES = 64 * 1024  # every form of the app fits; a larger body is refused before parsing
MAX_REASON = 2000  # characters of a review reason (the forms say so too)

Id = Annotated[int, Path(ge=0, le=MAX_ID)]
PageNo = Annotated[int, Query(ge=1, le=MAX_PAGE)]
PerPage = Annotated[int, Query(ge=1, le=MAX_PER_PAGE)]


class LoginRequired(Exception):
    pass


class PageError(Exception):
    """Answered with the error page: `status`, a title, one line for the user, extra headers."""

    def __init__(self, status: int, title: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.headers = status, title, message, headers or {}


def forbidden(message: str) -> PageError:
    return PageError(403, "Forbidden", message)


class Connections:
    """One SQLite connection per server thread (sqlite3 objects stay on their thread)."""

    def __init__(self, path: FsPath) -> None:
        self.path = path
        self._local = threading.local()
        Ledger.open(path, create=False).close()  # fail early on a missing ledger; migrate once

    def get(self) -> Ledger:
        led = getattr(self._local, "ledger", None)
        if led is None:
            led = Ledger.open(self.path, create=False)
            self._local.ledger = led
        return led


class Flash:
    """Messages shown once on the next page, per session (kept server-side, never in a URL)."""

    def __init__(self) -> None:
        self._msgs: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self._lock = threading.Lock()

    def add(self, token: str | None, level: str, text: str) -> None:
        if token:
            with self._lock:
                self._msgs[auth.token_digest(token)].append((level, text))

    def pop(self, token: str | None) -> list[tuple[str, str]]:
        if not token:
            return []
        with self._lock:
            return self._msgs.pop(auth.token_digest(token), [])


@dataclass
class WebState:
    conns: Connections
    queue: Queue
    flash: Flash
    templates: Jinja2Templates
    limiter: LoginLimiter
    secure_cookies: bool

    @property
    def ledger(self) -> Ledger:
        return self.conns.get()


def state(request: Request) -> WebState:
    return request.app.state.tg  # type: ignore[no-any-return]


def local_path(target: str | None, default: str = "/queue") -> str:
    """Only same-site paths: no open redirect through `next` or `return_to`."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def current_user(request: Request) -> auth.User:
    """The session's user; a request without a live session is sent to the login page (401 for a POST)."""
    user = auth.session_user(state(request).ledger, request.cookies.get(SESSION_COOKIE))
    if user is None:
        raise LoginRequired()
    return user


async def form_data(request: Request) -> dict[str, str]:
    """The POSTed form's text fields, read only up to MAX_FORM_BYTES (a larger body is a 413)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise PageError(413, "Too large", f"a form may carry at most {MAX_FORM_BYTES // 1024} KiB")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PageError(413, "Too large", f"a form may carry at most {MAX_FORM_BYTES // 1024} KiB")
    request._body = body  # starlette parses the form from the body already read
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


@dataclass(frozen=True)
class Posted:
    user: auth.User
    form: dict[str, str]


def _posting(role_check: Callable[[auth.User], bool], what: str) -> Callable[..., Posted]:
    def dependency(request: Request, form: dict[str, str] = Depends(form_data)) -> Posted:
        """The logged-in user and the form, once the CSRF token and the role are checked (403 otherwise)."""
        user = current_user(request)
        if not auth.csrf_ok(user.csrf, form.get("csrf") or request.headers.get("x-csrf-token")):
            raise forbidden("missing or wrong CSRF token: reload the page and try again")
        if not role_check(user):
            raise forbidden(f"{user.name} ({user.role}) may not {what}")
        return Posted(user, form)
    return dependency


any_post = _posting(lambda u: True, "log out")
deciding = _posting(lambda u: u.can_decide, "decide rows")
administering = _posting(lambda u: u.is_admin, "manage users")


def reason_of(form: dict[str, str]) -> str:
    """The review reason, refused with a clear 422 when longer than the ledger keeps."""
    reason = form.get("reason", "")
    if len(reason) > MAX_REASON:
        raise PageError(422, "Reason too long", f"a reason may have at most {MAX_REASON:,} characters "
                        f"(this one has {len(reason):,}); nothing was recorded")
    return reason


def page(request: Request, name: str, user: auth.User | None, status: int = 200, **ctx: Any) -> Response:
    st = state(request)
    return st.templates.TemplateResponse(
        request, name, {"user": user, "flash": st.flash.pop(request.cookies.get(SESSION_COOKIE)), **ctx},
        status_code=status)


def not_found(request: Request, user: auth.User, message: str) -> Response:
    return page(request, "error.html", user, status=404, title="Not found", message=message)


def back(request: Request, target: str, level: str = "", text: str = "") -> Response:
    """Redirect (303) to a same-site page, with a message shown there once."""
    if text:
        state(request).flash.add(request.cookies.get(SESSION_COOKIE), level, text)
    return RedirectResponse(local_path(target), status_code=303)
