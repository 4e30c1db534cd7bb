"""The review web app: FastAPI, server-rendered pages, one small script for shortcuts.

Security model (docs/review.md): every page needs a login; viewers read,
reviewers and admins decide, admins manage accounts. Session cookies are
HttpOnly and SameSite=Strict (Secure with `secure_cookies`). Every POST carries
the session's CSRF token or gets 403. Record text is attacker-controlled and is
only ever printed through jinja2 autoescaping; a Content-Security-Policy allows
scripts from this server alone. Decisions go through `gate.review`, so each is
a hash-chained ledger event carrying the reviewer's name; two reviewers racing
on one row get one decision recorded and one clear refusal. Logins are bounded
per name, per client and in total before any password is hashed (`web.limits`).

This module only assembles the app; the routes live in `web.routes` (one router
per concern) and share the session user and CSRF checks from `web.deps`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.templating import Jinja2Templates

from trainguard.web.deps import Connections, Flash, LoginRequired, PageError, WebState
from trainguard.web.limits import LoginLimiter, LoginLimits
from trainguard.web.queue import Queue
from trainguard.web.records import RecordReader
from trainguard.web.routes import ROUTERS

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-src 'self'; frame-ancestors 'none'; base-uri 'none'")


def create_app(ledger_path: str | Path, *, secure_cookies: bool = False, allowed_hosts: list[str] | None = None,
               login_limits: LoginLimits | None = None) -> FastAPI:
    """The app over one ledger. `allowed_hosts`: Host header values accepted (DNS-rebinding guard);
    `login_limits`: how much password hashing logins may start (defaults in `web.limits`)."""
    ledger_path = Path(ledger_path)
    conns = Connections(ledger_path)
    base = ledger_path.resolve().parent
    env = Environment(loader=PackageLoader("trainguard.web", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    app = FastAPI(title="trainguard review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.tg = WebState(conns=conns, queue=Queue(RecordReader([base.parent, base])), flash=Flash(),
                            templates=Jinja2Templates(env=env), limiter=LoginLimiter(login_limits),
                            secure_cookies=secure_cookies)
    app.mount("/static", StaticFiles(packages=[("trainguard.web", "static")]), name="static")
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[..., Any]) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers["Cache-Control"] = "no-store"
        return response

    def error_page(status: int, title: str, message: str, headers: dict[str, str] | None = None) -> Response:
        return HTMLResponse(env.get_template("error.html").render(title=title, message=message, user=None),
                            status_code=status, headers=headers)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.method != "GET":
            return HTMLResponse("login required", status_code=401)
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": nxt}), status_code=303)

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> Response:
        return error_page(exc.status, exc.title, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> Response:
        """A malformed or out-of-range parameter (an id past 2^63-1, a page 0): one line, 422, never a 500."""
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "a parameter"
        return error_page(422, "Bad request", f"{where}: {first.get('msg', 'invalid value')}")

    for router in ROUTERS:
        app.include_router(router)
    return app
