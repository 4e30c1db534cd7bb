"""`trainguard serve` (the review web page) and `trainguard user` (its accounts)."""

from __future__ import annotations

import getpass
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from trainguard.cli._common import err_console, fail

LEDGER_HELP = "Ledger database (default: $TRAINGUARD_LEDGER, else .trainguard/ledger.db)."
user_app = typer.Typer(help="Accounts for the review web page (roles: viewer, reviewer, admin).",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(user_app, name="user")


def _ledger_opt() -> Any:
    return typer.Option(None, "--ledger", envvar="TRAINGUARD_LEDGER", help=LEDGER_HELP)


def serve(
    ledger: Optional[Path] = _ledger_opt(),
    host: str = typer.Option("127.0.0.1", help="Address to bind. Anything but loopback needs --allow-remote."),
    port: int = typer.Option(8765, help="TCP port."),
    allow_remote: bool = typer.Option(False, help="Allow binding a non-loopback address (put TLS in front)."),
    allowed_host: Optional[list[str]] = typer.Option(
        None, "--allowed-host", help="Host header to accept (repeat); default: the loopback names and --host."),
    secure_cookies: bool = typer.Option(False, help="Mark cookies Secure (when served over HTTPS)."),
    logins_per_minute: int = typer.Option(
        30, min=1, help="Logins one client address may start a minute (behind a proxy: all users together)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve the review page: datasets, review queue, audit trail, releases."""
    from trainguard.ledger.store import Ledger, resolve_path

    path = resolve_path(ledger)
    if not path.exists():
        raise fail(f"no ledger at {path}: run `trainguard ingest` first, or pass --ledger")
    if not _is_loopback(host) and not allow_remote:
        raise fail(f"--host {host} is not a loopback address; pass --allow-remote to expose the review page "
                   "(and serve it behind TLS with --secure-cookies)")
    with Ledger.open(path, create=False) as led:
        if not led.users():
            err_console.print(f"[yellow]warning:[/] {escape(str(path))} has no users; add one with "
                              "`trainguard user add NAME --role admin`", markup=True)
    import uvicorn

    from trainguard.web import create_app
    from trainguard.web.limits import LoginLimits

    hosts = list(allowed_host or []) or ["127.0.0.1", "localhost", host]
    if ":" in host and not allowed_host:  # Starlette's Host check cannot match an IPv6 literal
        hosts = ["*"]
    if allow_remote and not allowed_host:
        err_console.print("[yellow]warning:[/] name the public host name with --allowed-host; only the bind "
                          "address and loopback names are accepted now", markup=True)
    app = create_app(path, secure_cookies=secure_cookies, allowed_hosts=hosts,
                     login_limits=LoginLimits(per_client_per_minute=logins_per_minute))
    err_console.print(f"trainguard review page on http://{host}:{port}/ (ledger {path})")
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False, proxy_headers=False)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _password(password_stdin: bool) -> str:
    if password_stdin:
        pw = sys.stdin.readline().rstrip("\r\n")
        if not pw:
            raise fail("--password-stdin: no password on standard input")
        return pw
    if not sys.stdin.isatty():
        raise fail("no terminal to prompt for a password; pipe it with --password-stdin")
    pw = getpass.getpass("password: ")
    if pw != getpass.getpass("again: "):
        raise fail("the two passwords differ")
    return pw


@user_app.command("add")
def user_add(
    name: str = typer.Argument(..., help="Login name (also the reviewer name in the ledger)."),
    role: str = typer.Option("reviewer", help="viewer (read only), reviewer (decides rows) or admin."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
    by: Optional[str] = typer.Option(None, help="Who adds the account (default: the OS user)."),
    ledger: Optional[Path] = _ledger_opt(),
) -> None:
    """Add an account; the password is asked for (or read from stdin) and stored as an scrypt hash."""
    from trainguard.ledger.ops import default_actor
    from trainguard.ledger.store import Ledger
    from trainguard.web import auth

    auth.check_name(name)
    auth.check_role(role)
    pw = _password(password_stdin)
    with Ledger.open(ledger, create=False) as led:
        auth.add_user(led, name, role, pw, by or default_actor())
    err_console.print(f"user {name} added ({role})")


@user_app.command("set")
def user_set(
    name: str = typer.Argument(..., help="Login name."),
    role: Optional[str] = typer.Option(None, help="New role."),
    password: bool = typer.Option(False, "--password", help="Set a new password (prompt, or --password-stdin)."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the new password from stdin."),
    disable: Optional[bool] = typer.Option(None, "--disable/--enable", help="Lock or unlock the account."),
    by: Optional[str] = typer.Option(None, help="Who changes the account (default: the OS user)."),
    ledger: Optional[Path] = _ledger_opt(),
) -> None:
    """Change an account's role, password or lock; a new password or a lock ends its sessions."""
    from trainguard.ledger.ops import default_actor
    from trainguard.ledger.store import Ledger
    from trainguard.web import auth

    if role is None and not (password or password_stdin) and disable is None:
        raise fail("nothing to change: pass --role, --password, --password-stdin or --disable/--enable")
    pw = _password(password_stdin) if (password or password_stdin) else None
    with Ledger.open(ledger, create=False) as led:
        auth.set_user(led, name, by or default_actor(), role=role, password=pw, disabled=disable)
    err_console.print(f"user {name} updated")


@user_app.command("list")
def user_list(
    ledger: Optional[Path] = _ledger_opt(),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
) -> None:
    """List accounts (never their password hashes)."""
    from rich.console import Console
    from rich.table import Table

    from trainguard.ledger.store import Ledger

    if fmt not in ("table", "json"):
        raise fail(f"--format must be table or json, got {fmt!r}")
    with Ledger.open(ledger, create=False) as led:
        users = led.users()
    if fmt == "json":
        typer.echo(json.dumps([{k: u[k] for k in ("name", "role", "created_at")} | {"disabled": bool(u["disabled"])}
                               for u in users], indent=2))
        return
    t = Table("name", "role", "state", "created")
    for u in users:
        t.add_row(u["name"], u["role"], "disabled" if u["disabled"] else "active", u["created_at"][:19])
    Console(highlight=False, markup=False, emoji=False).print(t)
