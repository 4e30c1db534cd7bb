"""Stored artefacts shown as pages: a gate run's scan report, a release's attestation."""

from __future__ import annotations

import hashlib
import html
import json
from typing import Any

from trainguard.attest import AttestationError, read_unverified
from trainguard.gate.release import attestation_path
from trainguard.report.model import Report
from trainguard.web.records import RecordReader


def report_from_dict(d: dict[str, Any]) -> Report:
    """The Report a gate stored as JSON (per-row scores are not stored, so no histograms)."""
    return Report.from_dict(d)


def report_html(report_json: str) -> str:
    from trainguard.report import html as html_report

    try:
        return html_report.render(report_from_dict(json.loads(report_json)))
    except (ValueError, KeyError, TypeError) as e:
        return ("<!doctype html><meta charset=utf-8><title>report unavailable</title>"
                f"<p>The stored scan report cannot be shown: {html.escape(str(e))}</p>")


def attestation_summary(release: dict[str, Any], reader: RecordReader) -> dict[str, Any]:
    """What the release's attestation file says, if it is still next to the output and matches the ledger."""
    att = reader.resolve(str(attestation_path(release["out_path"])))
    if att is None:
        return {"status": "attestation file not found beside the released file (a custom --attestation path "
                          "is not recorded)"}
    data = att.read_bytes()
    if hashlib.sha256(data).hexdigest() != release["attestation_sha256"]:
        return {"status": f"{att} differs from the attestation recorded in the ledger", "path": str(att)}
    try:
        env, stmt = read_unverified(data)
    except AttestationError as e:
        return {"status": f"{att} is not a readable DSSE envelope ({e})", "path": str(att)}
    pred = stmt["predicate"]
    return {"status": "ok", "path": str(att), "payload_type": env.payload_type, "keyids": env.keyids,
            "predicate_type": stmt.get("predicateType"), "subject": stmt.get("subject"),
            "gate": pred.get("gate"), "output": {k: v for k, v in (pred.get("output") or {}).items()
                                                 if k != "excluded_rows"},
            "excluded": len((pred.get("output") or {}).get("excluded_rows") or []),
            "decisions": len((pred.get("reviews") or {}).get("decisions") or []),
            "released_by": pred.get("released_by"), "released_at": pred.get("released_at"),
            "ledger": pred.get("ledger")}
