"""Datasets and their versions: what was ingested, gated and released."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from trainguard.ledger import views
from trainguard.web import auth
from trainguard.web.deps import Id, current_user, not_found, page, state

router = APIRouter()


@router.get("/")
def datasets(request: Request, user: auth.User = Depends(current_user)) -> Response:
    return page(request, "datasets.html", user, versions=views.version_overviews(state(request).ledger))


@router.get("/versions/{vid}")
def version(request: Request, vid: Id, user: auth.User = Depends(current_user)) -> Response:
    led = state(request).ledger
    v = led.version_by_id(vid)
    if v is None:
        return not_found(request, user, f"no version {vid}")
    rels = [r for r in led.releases() if r["version_id"] == vid]
    return page(request, "version.html", user, v=v, source=led.source(v["source_id"]),
                runs=views.run_summaries(led, vid), releases=rels,
                parent=led.version_by_id(v["derived_from"]) if v["derived_from"] else None)
