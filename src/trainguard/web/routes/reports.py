"""A gate run's stored scan report as its own page (no scripts; framed by the version page)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from trainguard.web import auth
from trainguard.web.deps import Id, current_user, state
from trainguard.web.reports import report_html

REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'self'")

router = APIRouter()


@router.get("/runs/{run_id}/report")
def run_report(request: Request, run_id: Id, user: auth.User = Depends(current_user)) -> Response:
    run = state(request).ledger.gate_run(run_id)
    if run is None:
        return HTMLResponse("no such gate run", status_code=404)
    resp = HTMLResponse(report_html(run["report"]))
    resp.headers["Content-Security-Policy"] = REPORT_CSP
    resp.headers["X-Frame-Options"] = "SAMEORIGIN"
    return resp
