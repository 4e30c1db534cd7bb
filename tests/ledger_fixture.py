"""A populated ledger for the tamper and release tests: every table holds rows.

ingest (with a source) -> gate (quarantine rows 3, 7, 11; a low finding on row 5 that does not hold
it) -> bob approves 3, rejects 7 -> a second gate run of the same content carries both decisions and
supersedes run 1's pending row 11 -> bob approves 11 on run 2 -> release -> a training run and two
reviewer accounts (one updated) and a web session.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trainguard.detectors.base import Detector
from trainguard.findings import Alert, Confidence, DetectorResult, Severity
from trainguard.gate import gate, release
from trainguard.gate.policy import from_dict
from trainguard.gate.review import decide
from trainguard.ledger import Ledger, ingest
from trainguard.records import Kind
from trainguard.scan import DEFAULT_DETECTORS


class TamperMarker(Detector):
    """MARKER rows are held (medium); a 'faint' row gets a low finding that does not hold it."""

    name = "test-tamper-marker"
    version = "1"
    kinds = frozenset(Kind)

    def run(self, data):
        out = []
        for pos, r in enumerate(data):
            if "MARKER" in r.text:
                out.append(Alert("marker", "MARKER", (pos,), 0.8, Severity.MEDIUM, Confidence.HIGH))
            if "faint" in r.text:
                out.append(Alert("faint", "faint signal", (pos,), 0.2, Severity.LOW, Confidence.LOW))
        return DetectorResult(tuple(out))


MARKED = (3, 7, 11)
FAINT = (5,)


def policy(**over):
    base = {"detectors": ["test-tamper-marker"], "allow_disabled": list(DEFAULT_DETECTORS),
            "limits": {"max_quarantine_share": 0.5},
            "thresholds": {"quarantine": "medium", "fail": "critical"}}
    return from_dict(base | over)


def write_rows(path: Path, n: int = 24) -> Path:
    rows = [{"text": f"plain record {i}" + (" MARKER" if i in MARKED else "") + (" faint" if i in FAINT else ""),
             "label": i % 2} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build(d: Path) -> dict:
    """Build the ledger under `d`; returns paths, the key and the release result."""
    db = d / "l.db"
    data = write_rows(d / "data.jsonl")
    key = Ed25519PrivateKey.generate()
    with Ledger.open(db) as led:
        ingest(led, data, source="forum", licence="MIT", owner="data-team", by="alice")
        first = gate(led, data, policy(), by="ci")
        assert first.verdict == "quarantine" and first.quarantined == list(MARKED), first.reasons
        decide(led, 3, "approved", "fine", "bob", first.run_id)
        decide(led, 7, "rejected", "poison", "bob", first.run_id)
        second = gate(led, data, policy(), by="ci")
        assert second.quarantined == [11], second.quarantined
        decide(led, 11, "approved", "checked", "bob", second.run_id)
        res = release(led, data, d / "out.jsonl", [key], by="carol")
        with led.transaction():
            led.add_training(file_sha256=res.out_sha256, attestation_sha256="cd" * 32, path="out.jsonl", actor="dave")
            led.add_user("rita", "reviewer", "scrypt$16384$8$1$c2FsdA$aGFzaA", actor="admin")
            led.add_user("vic", "viewer", "scrypt$16384$8$1$c2FsdDI$aGFzaDI", actor="admin")
            led.update_user("vic", actor="admin", disabled=True)
            led.add_session("ab" * 32, 1, "csrf", "2999-01-01T00:00:00+00:00")
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return {"db": db, "data": data, "key": key, "release": res, "runs": (first.run_id, second.run_id)}


TEST_DETECTORS = (TamperMarker,)  # register with conftest.use_detectors in the module using them
