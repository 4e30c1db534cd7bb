"""The audit trail: reviews, releases, gate runs and account changes from the hash-chained log."""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from trainguard.ledger import views
from trainguard.web import auth
from trainguard.web.deps import PageNo, current_user, page, state

AUDIT_PER_PAGE = 50

router = APIRouter()


@router.get("/audit")
def audit(request: Request, page_no: PageNo = 1, user: auth.User = Depends(current_user)) -> Response:
    trail = views.audit_events(state(request).ledger, page_no, AUDIT_PER_PAGE)
    return page(request, "audit.html", user, events=trail.events, page_no=page_no,
                pages=max(1, math.ceil(trail.total / AUDIT_PER_PAGE)), total=trail.total)
