"""DSSE envelopes (https://github.com/secure-systems-lab/dsse), Ed25519 only.

The signature covers PAE(type, body) = "DSSEv1 <len type> <type> <len body> <body>",
so the payload type cannot be swapped without breaking it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trainguard.attest.keys import keyid
from trainguard.errors import TrainguardError

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


class AttestationError(TrainguardError):
    """An attestation that must not be trusted; the message says why."""


def pae(payload_type: str, body: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def sign(body: bytes, keys: Iterable[Ed25519PrivateKey], payload_type: str = INTOTO_PAYLOAD_TYPE) -> dict[str, Any]:
    message = pae(payload_type, body)
    sigs = [{"keyid": keyid(k.public_key()), "sig": base64.b64encode(k.sign(message)).decode()} for k in keys]
    if not sigs:
        raise AttestationError("no signing key given")
    return {"payloadType": payload_type, "payload": base64.b64encode(body).decode(), "signatures": sigs}


@dataclass(frozen=True)
class Envelope:
    """A parsed, NOT verified, DSSE envelope: what it claims, for display or for `verify`."""

    payload_type: str
    body: bytes
    signatures: tuple[Any, ...]

    @property
    def keyids(self) -> list[str]:
        return [str(s.get("keyid")) for s in self.signatures if isinstance(s, dict)]


def parse(envelope: Any) -> Envelope:
    """The one DSSE parser (verify, the CLI and the web page use it); raises AttestationError naming the fault."""
    if not isinstance(envelope, dict) or not {"payloadType", "payload", "signatures"} <= envelope.keys():
        raise AttestationError("not a DSSE envelope (needs payloadType, payload, signatures)")
    ptype = envelope["payloadType"]
    if ptype != INTOTO_PAYLOAD_TYPE:
        raise AttestationError(f"payloadType is {ptype!r}, expected {INTOTO_PAYLOAD_TYPE!r}")
    try:
        body = base64.b64decode(envelope["payload"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise AttestationError("payload is not valid base64 (envelope edited)") from None
    sigs = envelope["signatures"]
    if not isinstance(sigs, list) or not sigs:
        raise AttestationError("envelope carries no signatures")
    return Envelope(ptype, body, tuple(sigs))


def verify(envelope: Any, trusted: Iterable[Ed25519PublicKey], min_signatures: int = 1) -> tuple[bytes, list[str]]:
    """Payload bytes and the trusted key ids whose signatures verify; raise with the reason otherwise."""
    env = parse(envelope)
    ptype, body, sigs = env.payload_type, env.body, env.signatures
    trusted_by_id = {keyid(k): k for k in trusted}
    if not trusted_by_id:
        raise AttestationError("no trusted key given")
    message = pae(ptype, body)
    good: list[str] = []
    bad_trusted: list[str] = []
    for s in sigs:
        kid = s.get("keyid") if isinstance(s, dict) else None
        candidates = [trusted_by_id[kid]] if kid in trusted_by_id else []
        try:
            raw = base64.b64decode(s.get("sig", ""), validate=True) if isinstance(s, dict) else b""
        except (binascii.Error, TypeError, ValueError):
            raw = b""
        for key in candidates:
            try:
                key.verify(raw, message)
                if kid not in good:
                    good.append(kid)
            except InvalidSignature:
                bad_trusted.append(kid)
    if len(good) >= max(min_signatures, 1):
        return body, good
    if bad_trusted:
        raise AttestationError(
            f"signature by trusted key {bad_trusted[0][:16]}... does not verify: the payload or the signature "
            "was modified after signing")
    if good:
        raise AttestationError(f"only {len(good)} trusted signature(s), the policy requires {min_signatures}")
    signed_by = ", ".join(str(s.get("keyid", "?"))[:16] + "..." for s in sigs if isinstance(s, dict))
    trusted_ids = ", ".join(k[:16] + "..." for k in trusted_by_id)
    raise AttestationError(f"signed by key(s) {signed_by}, none of which is trusted (trusted: {trusted_ids})")
