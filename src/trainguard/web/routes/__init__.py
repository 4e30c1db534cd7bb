"""The review app's routes, one router per concern; `create_app` includes them all."""

from trainguard.web.routes import audit, datasets, login, releases, reports, review

ROUTERS = (login.router, datasets.router, reports.router, review.router, audit.router, releases.router)

__all__ = ["ROUTERS"]
