"""Logging in and out, and the admins' account page.

A login reserves its attempt with the limiter before any password hashing
(`web.limits`): a refused attempt costs no scrypt and gets 429 with Retry-After.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from trainguard.errors import ConfigError
from trainguard.web import auth
from trainguard.web.deps import (LOGIN_CSRF_COOKIE, SESSION_COOKIE, Posted, administering, any_post, back,
                                 current_user, forbidden, form_data, local_path, page, state)
from trainguard.web.limits import Refused

router = APIRouter()


def _login_page(request: Request, nxt: str, status: int = 200, error: str | None = None,
                headers: dict[str, str] | None = None) -> Response:
    """The login form with a fresh double-submit token (cookie + hidden field)."""
    token = secrets.token_urlsafe(32)
    resp = page(request, "login.html", None, status=status, csrf=token, next=nxt, error=error)
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=state(request).secure_cookies,
                    path="/login")
    resp.headers.update(headers or {})
    return resp


@router.get("/login")
def login_form(request: Request, next: str = "/queue") -> Response:  # noqa: A002 - the usual name
    return _login_page(request, local_path(next))


@router.post("/login")
def login(request: Request, form: dict[str, str] = Depends(form_data)) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if not expected or not auth.csrf_ok(expected, form.get("csrf")):
        raise forbidden("missing or wrong CSRF token: reload the login page and try again")
    st = state(request)
    name = form.get("name", "").strip()
    nxt = local_path(form.get("next"))
    if len(name) > auth.MAX_NAME:  # no account can have it: refused unhashed, and never a key in the limiter
        return _login_page(request, nxt, 401, "wrong name or password")
    try:
        slot = st.limiter.reserve(name, request.client.host if request.client else "unknown")
    except Refused as e:
        return _login_page(request, nxt, 429, e.message, {"Retry-After": str(e.retry_after)})
    token = None
    try:
        token = auth.login(st.ledger, name, form.get("password", ""))
    finally:
        st.limiter.finish(slot, ok=token is not None)
    if token is None:
        return _login_page(request, nxt, 401, "wrong name or password")
    resp = RedirectResponse(nxt, status_code=303)
    resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=st.secure_cookies, path="/",
                    max_age=auth.SESSION_HOURS * 3600)
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return resp


@router.post("/logout")
def logout(request: Request, post: Posted = Depends(any_post)) -> Response:
    auth.logout(state(request).ledger, request.cookies.get(SESSION_COOKIE))
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.get("/users")
def users(request: Request, user: auth.User = Depends(current_user)) -> Response:
    if not user.is_admin:
        raise forbidden(f"{user.name} ({user.role}) may not manage users")
    return page(request, "users.html", user, users=state(request).ledger.users(), roles=auth.ROLES)


@router.post("/users")
def users_change(request: Request, post: Posted = Depends(administering)) -> Response:
    led, form = state(request).ledger, post.form
    name = form.get("name", "")
    try:
        if form.get("action") == "add":
            auth.add_user(led, name, form.get("role", ""), form.get("password", ""), post.user.name)
            return back(request, "/users", "ok", f"user {name} added")
        if name == post.user.name:
            return back(request, "/users", "error", "change your own account from the command line")
        if form.get("action") == "role":
            auth.set_user(led, name, post.user.name, role=form.get("role", ""))
        elif form.get("action") in ("disable", "enable"):
            auth.set_user(led, name, post.user.name, disabled=form.get("action") == "disable")
        else:
            return back(request, "/users", "error", "unknown action")
    except ConfigError as e:
        return back(request, "/users", "error", str(e))
    return back(request, "/users", "ok", f"user {name} updated")
