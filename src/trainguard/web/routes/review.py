"""The review queue, one row's decision, and a finding's page (its rows, its evidence, a bulk decision)."""

from __future__ import annotations

import math
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from trainguard.errors import ConfigError
from trainguard.gate import review
from trainguard.ledger.store import AlreadyDecided
from trainguard.ledger.views import QueueFilter
from trainguard.web import auth
from trainguard.web.deps import (Id, PageNo, PerPage, Posted, back, current_user, deciding, not_found, page,
                                 reason_of, state)
from trainguard.report.highlight import evidence_chips, evidence_table
from trainguard.web.queue import parse_filter

FINDING_ROWS_PER_PAGE = 20

router = APIRouter()


@router.get("/queue")
def queue_page(request: Request, user: auth.User = Depends(current_user)) -> Response:
    st = state(request)
    flt = parse_filter(dict(request.query_params))
    items, total = st.queue.page(st.ledger, flt)
    pages = max(1, math.ceil(total / flt.per_page))
    here = "/queue" + ("?" + urlencode(flt.query()) if flt.query() else "")
    return page(request, "queue.html", user, items=items, total=total, flt=flt, pages=pages,
                options=st.queue.options(st.ledger), here=here, urlencode=urlencode)


@router.post("/queue/{run_id}/{row}/decide")
def decide(request: Request, run_id: Id, row: Id, post: Posted = Depends(deciding)) -> Response:
    target = post.form.get("return_to") or "/queue"
    decision, reason = post.form.get("decision", ""), reason_of(post.form)
    if decision not in review.DECISIONS:
        return back(request, target, "error", f"row {row}: choose approve or reject")
    if not reason.strip():
        return back(request, target, "error", f"row {row}: a decision needs a reason; nothing was recorded")
    try:
        review.decide(state(request).ledger, row, decision, reason, post.user.name, run_id, only_pending=True)
    except AlreadyDecided as e:
        return back(request, target, "error",
                    f"row {row} (run {run_id}) was already {e.status} by {e.by} at {e.at}; "
                    "your decision was not recorded")
    except ConfigError as e:
        return back(request, target, "error", str(e))
    return back(request, target, "ok", f"row {row} (run {run_id}) {decision}")


@router.get("/runs/{run_id}/findings/{fingerprint}")
def finding(request: Request, run_id: Id, fingerprint: str, page_no: PageNo = 1,
            per_page: PerPage = FINDING_ROWS_PER_PAGE, user: auth.User = Depends(current_user)) -> Response:
    """The finding's evidence as a table and the rows it held, a page at a time, each with its text."""
    st = state(request)
    led = st.ledger
    info = st.queue.run_info(led, run_id)
    f = info.findings.get(fingerprint) if info else None
    if f is None:
        return not_found(request, user, f"gate run {run_id} has no finding {fingerprint}")
    pending = review.rows_with_finding(led, run_id, fingerprint, "pending")
    flt = QueueFilter(status="all", run=run_id, fingerprint=fingerprint, page=page_no, per_page=per_page)
    items, total = st.queue.page(led, flt)
    here = f"/runs/{run_id}/findings/{fingerprint}"
    link = {"per_page": per_page} if per_page != FINDING_ROWS_PER_PAGE else {}
    return page(request, "finding.html", user, run_id=run_id, f=f, chips=evidence_chips(f.get("evidence") or {}),
                pending=pending, held_total=total, items=items, evidence=evidence_table(f.get("evidence")),
                page_no=page_no, pages=max(1, math.ceil(total / per_page)), here=here,
                return_to=here + "?" + urlencode(link | {"page_no": page_no}), link=link, urlencode=urlencode)


@router.post("/runs/{run_id}/findings/{fingerprint}/decide")
def decide_finding(request: Request, run_id: Id, fingerprint: str, post: Posted = Depends(deciding)) -> Response:
    here = f"/runs/{run_id}/findings/{fingerprint}"
    decision, reason = post.form.get("decision", ""), reason_of(post.form)
    if decision not in review.DECISIONS or not reason.strip():
        return back(request, here, "error", "a bulk decision needs approve or reject and a reason; "
                                            "nothing was recorded")
    led = state(request).ledger
    rows = review.rows_with_finding(led, run_id, fingerprint, "pending")
    try:
        done, lost = review.decide_many(led, run_id, rows, decision, reason, post.user.name)
    except ConfigError as e:
        return back(request, here, "error", str(e))
    msg = f"{decision} {len(done)} row(s) held by this finding"
    if lost:
        msg += "; " + "; ".join(f"row {e.row} was already {e.status} by {e.by}" for e in lost[:10])
    return back(request, here, "ok", msg)
