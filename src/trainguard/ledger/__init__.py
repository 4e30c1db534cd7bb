"""Provenance ledger: dataset versions, per-record hashes, Merkle roots, a hash-chained event log."""

from trainguard.ledger.diff import Diff, diff
from trainguard.ledger.hashing import FileLeaves, hash_file, leaf_hash
from trainguard.ledger.integrity import IntegrityReport, check
from trainguard.ledger.ops import IngestResult, VerifyResult, ingest, prove, verify
from trainguard.ledger.store import DEFAULT_PATH, ENV_VAR, Ledger, resolve_path

__all__ = [
    "DEFAULT_PATH", "ENV_VAR", "Diff", "FileLeaves", "IngestResult", "IntegrityReport", "Ledger", "VerifyResult",
    "check", "diff", "hash_file", "ingest", "leaf_hash", "prove", "resolve_path", "verify",
]
