"""Releases and what each one's attestation says."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from trainguard.web import auth
from trainguard.web.deps import current_user, page, state
from trainguard.web.reports import attestation_summary

router = APIRouter()


@router.get("/releases")
def releases(request: Request, user: auth.User = Depends(current_user)) -> Response:
    st = state(request)
    led = st.ledger
    out = [r | {"version": led.version_by_id(r["version_id"]),
                "attestation": attestation_summary(r, st.queue.reader)} for r in reversed(led.releases())]
    return page(request, "releases.html", user, releases=out)
