"""The review web app: FastAPI, server-rendered pages, one small script for shortcuts.

Security model (docs/review.md): every page needs a login; viewers read,
reviewers and admins decide, admins manage accounts. Session cookies are
HttpOnly and SameSite=Strict (Secure with `secure_cookies`). Every POST carries
the session's CSRF token or gets 403. Record text is attacker-controlled and is
only ever printed through jinja2 autoescaping; a Content-Security-Policy allows
scripts from this server alone. Decisions go through `gate.review`, so each is
a hash-chained ledger event carrying the reviewer's name; two reviewers racing
on one row get one decision recorded and one clear refusal.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.templating import Jinja2Templates

from trainguard.errors import ConfigError
from trainguard.gate import review
from trainguard.ledger.store import AlreadyDecided, Ledger
from trainguard.web import auth
from trainguard.report._safe import visible
from trainguard.web.highlight import evidence_chips
from trainguard.web.queue import Queue, parse_filter
from trainguard.web.records import RecordReader
from trainguard.web.reports import attestation_summary, report_html

SESSION_COOKIE = "tg_session"
LOGIN_CSRF_COOKIE = "tg_login_csrf"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-src 'self'; frame-ancestors 'none'; base-uri 'none'")
REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'self'")
AUDIT_PER_PAGE = 50


class _LoginRequired(Exception):
    pass


class _Forbidden(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


class _Connections:
    """One SQLite connection per server thread (sqlite3 objects stay on their thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        Ledger.open(path, create=False).close()  # fail early on a missing ledger; migrate once

    def get(self) -> Ledger:
        led = getattr(self._local, "ledger", None)
        if led is None:
            led = Ledger.open(self.path, create=False)
            self._local.ledger = led
        return led


class _Flash:
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


async def _form(request: Request) -> dict[str, str]:
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


def _local_path(target: str | None, default: str = "/queue") -> str:
    """Only same-site paths: no open redirect through `next` or `return_to`."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


class _Throttle:
    """Slows password guessing: after MAX failures for one name within WINDOW seconds, refuse for WINDOW."""

    MAX, WINDOW = 5, 300.0

    def __init__(self) -> None:
        self._fails: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    def blocked(self, name: str) -> bool:
        with self._lock:
            now = time.monotonic()
            recent = [t for t in self._fails.get(name, []) if now - t < self.WINDOW]
            self._fails[name] = recent
            return len(recent) >= self.MAX

    def failed(self, name: str) -> None:
        with self._lock:
            now = time.monotonic()
            if len(self._fails) > 10_000:  # names are attacker-chosen: keep the table bounded
                self._fails = defaultdict(list, {k: v for k, v in self._fails.items() if v and now - v[-1] < self.WINDOW})
            self._fails[name].append(now)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._fails.pop(name, None)


def create_app(ledger_path: str | Path, *, secure_cookies: bool = False,
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app over one ledger. `allowed_hosts`: Host header values accepted (DNS-rebinding guard)."""
    ledger_path = Path(ledger_path)
    throttle = _Throttle()
    conns = _Connections(ledger_path)
    base = ledger_path.resolve().parent
    queue = Queue(RecordReader([base.parent, base]))
    flash = _Flash()
    env = Environment(loader=PackageLoader("trainguard.web", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    templates = Jinja2Templates(env=env)
    app = FastAPI(title="trainguard review", docs_url=None, redoc_url=None, openapi_url=None)
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

    @app.exception_handler(_LoginRequired)
    async def login_required(request: Request, exc: _LoginRequired) -> Response:
        if request.method != "GET":
            return HTMLResponse("login required", status_code=401)
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": nxt}), status_code=303)

    @app.exception_handler(_Forbidden)
    async def forbidden(request: Request, exc: _Forbidden) -> Response:
        return HTMLResponse(env.get_template("error.html").render(title="Forbidden", message=exc.message, user=None),
                            status_code=403)

    def user_of(request: Request) -> auth.User:
        user = auth.session_user(conns.get(), request.cookies.get(SESSION_COOKIE))
        if user is None:
            raise _LoginRequired()
        return user

    def checked(request: Request, form: dict[str, str], role_check: Callable[[auth.User], bool],
                what: str) -> auth.User:
        """The logged-in user, once the CSRF token and the role are checked (403 otherwise)."""
        user = user_of(request)
        if not auth.csrf_ok(user.csrf, form.get("csrf") or request.headers.get("x-csrf-token")):
            raise _Forbidden("missing or wrong CSRF token: reload the page and try again")
        if not role_check(user):
            raise _Forbidden(f"{user.name} ({user.role}) may not {what}")
        return user

    def page(request: Request, name: str, user: auth.User | None, status: int = 200, **ctx: Any) -> Response:
        token = request.cookies.get(SESSION_COOKIE)
        return templates.TemplateResponse(request, name, {"user": user, "flash": flash.pop(token), **ctx},
                                          status_code=status)

    def back(request: Request, target: str, level: str = "", text: str = "") -> Response:
        if text:
            flash.add(request.cookies.get(SESSION_COOKIE), level, text)
        return RedirectResponse(_local_path(target), status_code=303)

    # --- login ----------------------------------------------------------------------------------

    @app.get("/login")
    def login_form(request: Request, next: str = "/queue") -> Response:  # noqa: A002 - the usual name
        token = secrets.token_urlsafe(32)
        resp = page(request, "login.html", None, csrf=token, next=_local_path(next), error=None)
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies,
                        path="/login")
        return resp

    @app.post("/login")
    async def login(request: Request) -> Response:
        return await run_in_threadpool(login_sync, request, await _form(request))

    def login_sync(request: Request, form: dict[str, str]) -> Response:
        expected = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
        if not expected or not auth.csrf_ok(expected, form.get("csrf")):
            raise _Forbidden("missing or wrong CSRF token: reload the login page and try again")
        name = form.get("name", "").strip()
        nxt = _local_path(form.get("next"))
        if throttle.blocked(name):
            token, error = None, "too many failed logins for this name; wait a few minutes"
        else:
            token, error = auth.login(conns.get(), name, form.get("password", "")), "wrong name or password"
            (throttle.failed if token is None else throttle.succeeded)(name)
        if token is None:
            fresh = secrets.token_urlsafe(32)
            resp = page(request, "login.html", None, status=401 if "wrong" in error else 429, csrf=fresh, next=nxt,
                        error=error)
            resp.set_cookie(LOGIN_CSRF_COOKIE, fresh, httponly=True, samesite="strict", secure=secure_cookies,
                            path="/login")
            return resp
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies, path="/",
                        max_age=auth.SESSION_HOURS * 3600)
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return resp

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        return await run_in_threadpool(logout_sync, request, await _form(request))

    def logout_sync(request: Request, form: dict[str, str]) -> Response:
        checked(request, form, lambda u: True, "log out")
        auth.logout(conns.get(), request.cookies.get(SESSION_COOKIE))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    # --- datasets, versions, reports --------------------------------------------------------------

    @app.get("/")
    def datasets(request: Request) -> Response:
        user = user_of(request)
        led = conns.get()
        versions = led.conn.execute(
            "SELECT v.*, d.name AS dataset, s.name AS source, s.licence, s.owner, s.origin,"
            " (SELECT g.verdict FROM gate_runs g WHERE g.version_id = v.id ORDER BY g.id DESC LIMIT 1) AS gate,"
            " (SELECT g.id FROM gate_runs g WHERE g.version_id = v.id ORDER BY g.id DESC LIMIT 1) AS gate_run,"
            " (SELECT COUNT(*) FROM reviews r JOIN gate_runs g ON g.id = r.gate_run_id WHERE g.version_id = v.id"
            "  AND r.status = 'pending') AS pending,"
            " (SELECT COUNT(*) FROM releases x WHERE x.version_id = v.id) AS releases"
            " FROM versions v JOIN datasets d ON d.id = v.dataset_id LEFT JOIN sources s ON s.id = v.source_id"
            " ORDER BY d.name, v.number DESC").fetchall()
        return page(request, "datasets.html", user, versions=[dict(v) for v in versions])

    @app.get("/versions/{vid}")
    def version(request: Request, vid: int) -> Response:
        user = user_of(request)
        led = conns.get()
        v = led.version_by_id(vid)
        if v is None:
            return page(request, "error.html", user, status=404, title="Not found", message=f"no version {vid}")
        runs = []
        for run in reversed(led.gate_runs(vid)):
            counts = dict(led.conn.execute("SELECT status, COUNT(*) FROM reviews WHERE gate_run_id = ?"
                                           " GROUP BY status", (run["id"],)).fetchall())
            runs.append({k: run[k] for k in ("id", "verdict", "by", "at", "records", "queued", "policy_sha256",
                                             "report_sha256")} | {"reasons": json.loads(run["reasons"]),
                                                                  "counts": counts})
        rels = [r for r in led.releases() if r["version_id"] == vid]
        return page(request, "version.html", user, v=v, source=led.source(v["source_id"]), runs=runs, releases=rels,
                    parent=led.version_by_id(v["derived_from"]) if v["derived_from"] else None)

    @app.get("/runs/{run_id}/report")
    def run_report(request: Request, run_id: int) -> Response:
        user_of(request)
        run = conns.get().gate_run(run_id)
        if run is None:
            return HTMLResponse("no such gate run", status_code=404)
        resp = HTMLResponse(report_html(run["report"]))
        resp.headers["Content-Security-Policy"] = REPORT_CSP
        resp.headers["X-Frame-Options"] = "SAMEORIGIN"
        return resp

    # --- the review queue ---------------------------------------------------------------------------

    @app.get("/queue")
    def queue_page(request: Request) -> Response:
        user = user_of(request)
        led = conns.get()
        flt = parse_filter(dict(request.query_params))
        items, total = queue.page(led, flt)
        pages = max(1, math.ceil(total / flt.per_page))
        here = "/queue" + ("?" + urlencode(flt.query()) if flt.query() else "")
        return page(request, "queue.html", user, items=items, total=total, flt=flt, pages=pages,
                    options=queue.options(led), here=here, urlencode=urlencode)

    @app.post("/queue/{run_id}/{row}/decide")
    async def decide(request: Request, run_id: int, row: int) -> Response:
        return await run_in_threadpool(decide_sync, request, await _form(request), run_id, row)

    def decide_sync(request: Request, form: dict[str, str], run_id: int, row: int) -> Response:
        user = checked(request, form, lambda u: u.can_decide, "decide rows")
        target = form.get("return_to") or "/queue"
        decision, reason = form.get("decision", ""), form.get("reason", "")
        if decision not in review.DECISIONS:
            return back(request, target, "error", f"row {row}: choose approve or reject")
        if not reason.strip():
            return back(request, target, "error", f"row {row}: a decision needs a reason; nothing was recorded")
        try:
            review.decide(conns.get(), row, decision, reason, user.name, run_id, only_pending=True)
        except AlreadyDecided as e:
            return back(request, target, "error",
                        f"row {row} (run {run_id}) was already {e.status} by {e.by} at {e.at}; "
                        "your decision was not recorded")
        except ConfigError as e:
            return back(request, target, "error", str(e))
        return back(request, target, "ok", f"row {row} (run {run_id}) {decision}")

    @app.get("/runs/{run_id}/findings/{fingerprint}")
    def finding(request: Request, run_id: int, fingerprint: str) -> Response:
        user = user_of(request)
        led = conns.get()
        info = queue.run_info(led, run_id)
        f = info.findings.get(fingerprint) if info else None
        if f is None:
            return page(request, "error.html", user, status=404, title="Not found",
                        message=f"gate run {run_id} has no finding {fingerprint}")
        pending = review.rows_with_finding(led, run_id, fingerprint, "pending")
        held = review.rows_with_finding(led, run_id, fingerprint, None)
        evidence = visible(json.dumps(f.get("evidence"), ensure_ascii=False, indent=2, sort_keys=True))
        return page(request, "finding.html", user, run_id=run_id, f=f, chips=evidence_chips(f.get("evidence") or {}),
                    pending=pending, held=held, evidence=evidence)

    @app.post("/runs/{run_id}/findings/{fingerprint}/decide")
    async def decide_finding(request: Request, run_id: int, fingerprint: str) -> Response:
        return await run_in_threadpool(decide_finding_sync, request, await _form(request), run_id, fingerprint)

    def decide_finding_sync(request: Request, form: dict[str, str], run_id: int, fingerprint: str) -> Response:
        user = checked(request, form, lambda u: u.can_decide, "decide rows")
        here = f"/runs/{run_id}/findings/{fingerprint}"
        decision, reason = form.get("decision", ""), form.get("reason", "")
        if decision not in review.DECISIONS or not reason.strip():
            return back(request, here, "error", "a bulk decision needs approve or reject and a reason; "
                                                "nothing was recorded")
        led = conns.get()
        rows = review.rows_with_finding(led, run_id, fingerprint, "pending")
        try:
            done, lost = review.decide_many(led, run_id, rows, decision, reason, user.name)
        except ConfigError as e:
            return back(request, here, "error", str(e))
        msg = f"{decision} {len(done)} row(s) held by this finding"
        if lost:
            msg += "; " + "; ".join(f"row {e.row} was already {e.status} by {e.by}" for e in lost[:10])
        return back(request, here, "ok", msg)

    # --- audit trail, releases, users ------------------------------------------------------------------

    @app.get("/audit")
    def audit(request: Request, page_no: int = 1) -> Response:
        user = user_of(request)
        led = conns.get()
        page_no = max(page_no, 1)
        total = led.conn.execute("SELECT COUNT(*) FROM events WHERE kind IN ('review', 'release', 'gate', 'user')"
                                 ).fetchone()[0]
        rows = led.conn.execute(
            "SELECT seq, ts, kind, actor, payload, hash FROM events WHERE kind IN ('review', 'release', 'gate', 'user')"
            " ORDER BY seq DESC LIMIT ? OFFSET ?", (AUDIT_PER_PAGE, (page_no - 1) * AUDIT_PER_PAGE)).fetchall()
        events = [dict(r) | {"p": json.loads(r["payload"])} for r in rows]
        return page(request, "audit.html", user, events=events, page_no=page_no,
                    pages=max(1, math.ceil(total / AUDIT_PER_PAGE)), total=total)

    @app.get("/releases")
    def releases(request: Request) -> Response:
        user = user_of(request)
        led = conns.get()
        out = []
        for r in reversed(led.releases()):
            v = led.version_by_id(r["version_id"])
            out.append(r | {"version": v, "attestation": attestation_summary(r, queue.reader)})
        return page(request, "releases.html", user, releases=out)

    @app.get("/users")
    def users(request: Request) -> Response:
        user = user_of(request)
        if not user.is_admin:
            raise _Forbidden(f"{user.name} ({user.role}) may not manage users")
        return page(request, "users.html", user, users=conns.get().users(), roles=auth.ROLES)

    @app.post("/users")
    async def users_change(request: Request) -> Response:
        return await run_in_threadpool(users_change_sync, request, await _form(request))

    def users_change_sync(request: Request, form: dict[str, str]) -> Response:
        user = checked(request, form, lambda u: u.is_admin, "manage users")
        led = conns.get()
        name = form.get("name", "")
        try:
            if form.get("action") == "add":
                auth.add_user(led, name, form.get("role", ""), form.get("password", ""), user.name)
                return back(request, "/users", "ok", f"user {name} added")
            if name == user.name:
                return back(request, "/users", "error", "change your own account from the command line")
            if form.get("action") == "role":
                auth.set_user(led, name, user.name, role=form.get("role", ""))
            elif form.get("action") in ("disable", "enable"):
                auth.set_user(led, name, user.name, disabled=form.get("action") == "disable")
            else:
                return back(request, "/users", "error", "unknown action")
        except ConfigError as e:
            return back(request, "/users", "error", str(e))
        return back(request, "/users", "ok", f"user {name} updated")

    return app
