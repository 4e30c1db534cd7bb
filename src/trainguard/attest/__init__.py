"""Signed attestations: Ed25519 keys, DSSE envelopes, in-toto release statements."""

from trainguard.attest.dsse import AttestationError
from trainguard.attest.keys import generate, keyid, load_private, load_public
from trainguard.attest.statement import (
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    CheckedRelease,
    check,
    read_unverified,
    sign_statement,
    statement,
)

__all__ = [
    "PREDICATE_TYPE", "STATEMENT_TYPE", "AttestationError", "CheckedRelease", "check", "generate", "keyid",
    "load_private", "load_public", "read_unverified", "sign_statement", "statement",
]
