"""in-toto Statement v1 for a released dataset, and the check a consumer runs.

Subject: the released file (name + SHA-256). Predicate (project-defined type
`PREDICATE_TYPE`, fields in docs/provenance.md): the input version's Merkle root,
the scan report, policy and review-decision digests, the gate verdict, the
findings reported but not quarantined and the detectors that did not run OK, the
ledger head (the release's own event), the tool version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trainguard.attest import dsse
from trainguard.attest.dsse import AttestationError
from trainguard.attest.keys import load_public
from trainguard.io.dataset import file_sha256

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://trainguard.dev/attestation/release/v1"


def statement(subject_name: str, subject_sha256: str, predicate: dict[str, Any]) -> dict[str, Any]:
    return {"_type": STATEMENT_TYPE, "subject": [{"name": subject_name, "digest": {"sha256": subject_sha256}}],
            "predicateType": PREDICATE_TYPE, "predicate": predicate}


def sign_statement(stmt: dict[str, Any], keys: Iterable[Ed25519PrivateKey]) -> dict[str, Any]:
    body = json.dumps(stmt, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return dsse.sign(body, keys)


@dataclass(frozen=True)
class CheckedRelease:
    path: str
    sha256: str
    statement: dict[str, Any]
    keyids: tuple[str, ...]
    attestation_sha256: str

    @property
    def predicate(self) -> dict[str, Any]:
        return self.statement["predicate"]


def read_unverified(data: bytes | dict[str, Any]) -> tuple[dsse.Envelope, dict[str, Any]]:
    """The envelope and the statement it carries, WITHOUT checking signatures: for showing what an
    attestation claims (the web page). Trust nothing in it; use `check` for that."""
    try:
        env = json.loads(data) if isinstance(data, bytes) else data
    except ValueError:
        raise AttestationError("attestation is not valid JSON") from None
    envelope = dsse.parse(env)
    return envelope, _statement(envelope.body)


def _statement(body: bytes) -> dict[str, Any]:
    try:
        stmt = json.loads(body)
    except ValueError:
        raise AttestationError("signed payload is not JSON") from None
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
        raise AttestationError(f"payload is not an in-toto Statement v1 (_type {stmt.get('_type')!r})"
                               if isinstance(stmt, dict) else "payload is not an in-toto Statement")
    if stmt.get("predicateType") != PREDICATE_TYPE:
        raise AttestationError(f"predicateType is {stmt.get('predicateType')!r}, expected {PREDICATE_TYPE}")
    if not isinstance(stmt.get("predicate"), dict):
        raise AttestationError("statement has no predicate object")
    return stmt


def load_envelope(attestation: str | Path | dict[str, Any]) -> tuple[dict[str, Any], str]:
    if isinstance(attestation, dict):
        raw = json.dumps(attestation, sort_keys=True).encode()
        return attestation, hashlib.sha256(raw).hexdigest()
    p = Path(attestation)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise AttestationError(f"{p}: cannot read attestation ({e.strerror})") from None
    try:
        env = json.loads(raw)
    except ValueError:
        raise AttestationError(f"{p}: attestation is not valid JSON") from None
    return env, hashlib.sha256(raw).hexdigest()


def check(data_path: str | Path, attestation: str | Path | dict[str, Any],
          trusted_keys: Iterable[str | Path | bytes | Ed25519PublicKey], min_signatures: int = 1) -> CheckedRelease:
    """Raise AttestationError (with the reason) unless a trusted key signed a release of exactly this file."""
    env, att_digest = load_envelope(attestation)
    keys = [load_public(k) for k in trusted_keys]
    body, keyids = dsse.verify(env, keys, min_signatures)
    stmt = _statement(body)
    digests = [s.get("digest", {}).get("sha256") for s in stmt.get("subject", []) if isinstance(s, dict)]
    if not digests:
        raise AttestationError("statement has no sha256 subject")
    p = Path(data_path)
    try:
        actual = file_sha256(p)
    except OSError as e:
        raise AttestationError(f"{p}: cannot read dataset ({e.strerror})") from None
    if actual not in digests:
        raise AttestationError(f"{p}: dataset differs from the attested release (file sha256 {actual}, "
                               f"attested {digests[0]})")
    return CheckedRelease(str(p), actual, stmt, tuple(keyids), att_digest)
