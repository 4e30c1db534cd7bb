"""Library calls behind `ingest`, `verify` and `prove`."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainguard.errors import ConfigError
from trainguard.ledger import merkle
from trainguard.ledger.diff import Diff, as_words, diff
from trainguard.ledger.hashing import FileLeaves, _file_sha256, hash_file
from trainguard.ledger.store import Ledger


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def dataset_name(path: str | Path, name: str | None = None) -> str:
    """Datasets are named by file name unless told otherwise (paths differ across CI checkouts)."""
    return name or Path(path).name


@dataclass
class IngestResult:
    version: dict[str, Any]
    created: bool


def ingest(ledger: Ledger, path: str | Path, *, name: str | None = None, source: str | None = None,
           licence: str | None = None, origin: str | None = None, owner: str | None = None,
           by: str | None = None, fmt: str | None = None, workers: int | None = None,
           derived_from: int | None = None, leaves: FileLeaves | None = None) -> IngestResult:
    """Hash every record, then record the version in one transaction (idempotent per content)."""
    if source is None and any(v is not None for v in (licence, origin, owner)):
        raise ConfigError("--licence, --origin and --owner describe a source: also pass --source NAME")
    actor = by or default_actor()
    fl = leaves or hash_file(path, fmt=fmt, workers=workers)
    root = fl.merkle_root
    ds = dataset_name(path, name)
    with ledger.transaction():
        source_id = ledger.upsert_source(source, actor, licence, origin, owner) if source else None
        latest = ledger.version(ds)
        if latest and latest["merkle_root"] == root and latest["file_sha256"] == fl.file_sha256 \
                and (source_id is None or latest["source_id"] == source_id):
            return IngestResult(latest, False)
        version = ledger.add_version(ds, str(path), fl.fmt, fl.chunks, root, fl.file_sha256, fl.file_bytes, actor,
                                     source_id=source_id, derived_from=derived_from)
    return IngestResult(version, True)


def resolve_version(ledger: Ledger, path: str | Path, name: str | None = None, number: int | None = None,
                    fl: FileLeaves | None = None) -> dict[str, Any]:
    """The version a file is checked against: by dataset name, else by matching content."""
    ds = dataset_name(path, name)
    v = ledger.version(ds, number)
    if v is not None:
        return v
    if number is not None:
        raise ConfigError(f"dataset {ds!r} has no version {number} in {ledger.path}")
    if fl is not None and name is None:
        same = ledger.versions_by_root(fl.merkle_root)
        if same:
            return same[0]
    known = ", ".join(ledger.datasets()) or "none"
    raise ConfigError(f"dataset {ds!r} is not in the ledger {ledger.path} (recorded: {known}); "
                      "ingest it first or pass --name")


@dataclass
class VerifyResult:
    version: dict[str, Any]
    diff: Diff
    records: int
    merkle_root: str
    file_sha256: str

    @property
    def ok(self) -> bool:
        return self.diff.ok and self.merkle_root == self.version["merkle_root"]

    def to_dict(self) -> dict[str, Any]:
        v = self.version
        return {
            **self.diff.to_dict(), "ok": self.ok,
            "dataset": v["dataset"], "version": v["number"], "records": self.records,
            "ledger_records": v["records"], "merkle_root": self.merkle_root,
            "ledger_merkle_root": v["merkle_root"], "file_sha256": self.file_sha256,
            "bytes_identical": self.file_sha256 == v["file_sha256"],
        }


def verify(ledger: Ledger, path: str | Path, *, name: str | None = None, number: int | None = None,
           fmt: str | None = None, workers: int | None = None) -> VerifyResult:
    v = ledger.version(dataset_name(path, name), number)
    digest = None
    if v is not None and Path(path).is_file():
        # Same bytes as recorded means the same records: skip per-record hashing.
        digest = _file_sha256(Path(path))
        if digest == v["file_sha256"]:
            return VerifyResult(v, Diff(), v["records"], v["merkle_root"], digest)
    fl = hash_file(path, fmt=fmt, workers=workers, known_sha256=digest)
    v = resolve_version(ledger, path, name, number, fl)
    root = fl.merkle_root
    d = Diff() if root == v["merkle_root"] else (_streamed_edits(ledger, v, fl)
                                                  or diff(ledger.leaves(v["id"]), fl.leaves))
    return VerifyResult(v, d, fl.count, root, fl.file_sha256)


def _streamed_edits(ledger: Ledger, v: dict[str, Any], fl: FileLeaves) -> Diff | None:
    """The diff when records were only edited in place, found piece by piece (bounded memory).

    Applies exactly when `diff`'s own shortcut does (same count; few differing rows; none of
    their leaves, by first 64 bits, elsewhere in the other side's changed span) and gives the
    same answer; otherwise None and the caller runs the full diff over all leaves.
    """
    if fl.count != v["records"] or not fl.count:
        return None
    rows: list[np.ndarray] = []
    old_w0: list[np.ndarray] = []
    new_w0: list[np.ndarray] = []
    base = 0
    for old, new in zip(ledger.leaf_chunks(v["id"]), fl.chunks):
        if len(old) != len(new):
            return None
        a, b = as_words(old), as_words(new)
        hit = np.flatnonzero(np.any(a != b, axis=1))
        rows.append(hit + base)
        old_w0.append(a[hit, 0])
        new_w0.append(b[hit, 0])
        base += len(a)
        if sum(map(len, rows)) > MAX_STREAMED_EDITS:
            return None
    if base != fl.count:
        return None
    r = np.concatenate(rows)
    if not len(r):
        return None
    first, last = int(r[0]), int(r[-1])
    if len(r) > max(64, (last - first + 1) // 100):
        return None
    probes_old, probes_new = np.concatenate(old_w0), np.concatenate(new_w0)
    base = 0
    for old, new in zip(ledger.leaf_chunks(v["id"]), fl.chunks):
        lo, hi = max(first - base, 0), min(last + 1 - base, len(old) // 32)
        if lo < hi and (np.isin(as_words(old)[lo:hi, 0], probes_new).any()
                        or np.isin(as_words(new)[lo:hi, 0], probes_old).any()):
            return None  # a leaf reappears elsewhere: it may have moved
        base += len(old) // 32
    out = r.tolist()
    return Diff(modified=out, modified_from=out)


MAX_STREAMED_EDITS = 1_000_000


def prove(ledger: Ledger, dataset: str, row: int, number: int | None = None) -> dict[str, Any]:
    """RFC 6962 inclusion proof for one record of a recorded version (self-checked)."""
    v = ledger.version(dataset, number)
    if v is None:
        raise ConfigError(f"dataset {dataset!r}{'' if number is None else f' version {number}'} is not in the ledger")
    leaves = ledger.leaves(v["id"])
    n = len(leaves) // 32
    if not 0 <= row < n:
        raise ConfigError(f"row {row} is outside {dataset}@{v['number']} ({n:,} records, rows 0-{n - 1})")
    path = merkle.inclusion_proof(leaves, row)
    leaf = leaves[row * 32:(row + 1) * 32]
    ok = merkle.verify_inclusion(leaf, row, n, path, bytes.fromhex(v["merkle_root"]))
    return {"dataset": dataset, "version": v["number"], "row": row, "tree_size": n, "leaf": leaf.hex(),
            "merkle_root": v["merkle_root"], "audit_path": [p.hex() for p in path], "verified": ok,
            "algorithm": "RFC 6962 SHA-256 (leaf = H(0x00||record), node = H(0x01||L||R))"}
