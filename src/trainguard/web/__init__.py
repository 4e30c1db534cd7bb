"""`trainguard serve`: the review web page over the ledger (see docs/review.md)."""

from trainguard.web.app import create_app

__all__ = ["create_app"]
