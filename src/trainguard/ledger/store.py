"""The ledger: an embedded SQLite database with a hash-chained event log.

Every write is one `BEGIN IMMEDIATE` transaction that appends its event and
updates the tables derived from it, so a crash (even SIGKILL) leaves either all
of a write or none of it. The event log is the record of truth: each event's
hash covers the previous event's hash and the event's own bytes, and
`trainguard ledger verify` checks the chain and that every table row agrees
with the event that created it (see `integrity.py`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from trainguard.errors import ConfigError, TrainguardError
from trainguard.ledger import merkle

DEFAULT_PATH = Path(".trainguard") / "ledger.db"
ENV_VAR = "TRAINGUARD_LEDGER"
PAGE_SIZE = 65536  # new ledgers only; see Ledger.open
GENESIS = "0" * 64
CHUNK_LEAVES = merkle.BLOCK_LEAVES  # 2 MiB of leaves per row in leaf_chunks (hashing uses the same)

# Called after each leaf chunk is written inside the ingest transaction; tests use
# it to SIGKILL a process mid-write. Never set in normal use.
_chunk_hook: Callable[[int], None] | None = None

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
    CREATE TABLE events(
        seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL,
        payload TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
    CREATE TABLE sources(
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, licence TEXT, origin TEXT, owner TEXT,
        event_seq INTEGER NOT NULL);
    CREATE TABLE datasets(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    CREATE TABLE versions(
        id INTEGER PRIMARY KEY, dataset_id INTEGER NOT NULL REFERENCES datasets(id), number INTEGER NOT NULL,
        path TEXT NOT NULL, format TEXT NOT NULL, records INTEGER NOT NULL, merkle_root TEXT NOT NULL,
        file_sha256 TEXT NOT NULL, file_bytes INTEGER NOT NULL, source_id INTEGER REFERENCES sources(id),
        ingested_by TEXT NOT NULL, ingested_at TEXT NOT NULL, derived_from INTEGER REFERENCES versions(id),
        event_seq INTEGER NOT NULL, UNIQUE(dataset_id, number));
    CREATE INDEX versions_root ON versions(merkle_root);
    CREATE INDEX versions_sha ON versions(file_sha256);
    CREATE TABLE leaf_chunks(
        version_id INTEGER NOT NULL REFERENCES versions(id), chunk INTEGER NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY(version_id, chunk));
    CREATE TABLE gate_runs(
        id INTEGER PRIMARY KEY, version_id INTEGER REFERENCES versions(id), path TEXT NOT NULL,
        merkle_root TEXT NOT NULL, verdict TEXT NOT NULL, reasons TEXT NOT NULL, policy TEXT NOT NULL,
        policy_sha256 TEXT NOT NULL, report TEXT NOT NULL, report_sha256 TEXT NOT NULL,
        queued INTEGER NOT NULL, records INTEGER NOT NULL, by TEXT NOT NULL, at TEXT NOT NULL,
        event_seq INTEGER NOT NULL);
    CREATE TABLE reviews(
        gate_run_id INTEGER NOT NULL REFERENCES gate_runs(id), row INTEGER NOT NULL, leaf TEXT NOT NULL,
        findings TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', decided_by TEXT, reason TEXT,
        decided_at TEXT, event_seq INTEGER, PRIMARY KEY(gate_run_id, row));
    CREATE TABLE releases(
        id INTEGER PRIMARY KEY, version_id INTEGER NOT NULL REFERENCES versions(id),
        gate_run_id INTEGER REFERENCES gate_runs(id), out_path TEXT NOT NULL, out_sha256 TEXT NOT NULL,
        out_version_id INTEGER REFERENCES versions(id), attestation_sha256 TEXT, forced INTEGER NOT NULL,
        by TEXT NOT NULL, at TEXT NOT NULL, event_seq INTEGER NOT NULL);
    CREATE TABLE trainings(
        id INTEGER PRIMARY KEY, file_sha256 TEXT NOT NULL, attestation_sha256 TEXT NOT NULL,
        path TEXT NOT NULL, by TEXT NOT NULL, at TEXT NOT NULL, event_seq INTEGER NOT NULL);
    """),
    # Reviewer accounts and login sessions for `trainguard serve`. Sessions hold only a hash of the
    # cookie token; the index serves the paginated review queue.
    (2, """
    CREATE TABLE users(
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL, password TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, event_seq INTEGER NOT NULL);
    CREATE TABLE web_sessions(
        token_sha256 TEXT PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), csrf TEXT NOT NULL,
        created_at TEXT NOT NULL, expires_at TEXT NOT NULL);
    CREATE INDEX reviews_status ON reviews(status, gate_run_id, row);
    """),
    # Carrying review decisions over looks rows up by record (leaf hash); without this index each
    # gate scanned every review row ever queued.
    (3, """
    CREATE INDEX reviews_leaf ON reviews(leaf);
    """),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def resolve_path(path: str | Path | None = None) -> Path:
    """--ledger, else $TRAINGUARD_LEDGER, else .trainguard/ledger.db."""
    if path:
        return Path(path)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


SQLITE_FULL = 13
MAX_REASON = 2000  # characters; the web form's maxlength. A reason is kept for good in the hash chain.


class StorageFull(TrainguardError):
    """The disk (or the database's size limit) is full: one line for the CLI (exit 2), never a traceback."""


def storage_error(e: BaseException, path: Path | str) -> TrainguardError | None:
    """The one-line error for a full disk, or None when `e` is something else."""
    full = (isinstance(e, sqlite3.OperationalError)
            and (getattr(e, "sqlite_errorcode", None) == SQLITE_FULL or "full" in str(e).lower())) \
        or (isinstance(e, OSError) and e.errno == errno.ENOSPC)
    if not full and isinstance(e, sqlite3.OperationalError) and "i/o error" in str(e).lower():
        # Creating the WAL / shared-memory files on a full disk fails as a generic I/O error.
        full = _free_bytes(Path(path)) < FULL_BELOW
    if not full:
        return None
    return StorageFull(f"{path}: the disk is full ({e}); nothing was recorded. Free space and run the command again")


FULL_BELOW = 1 << 20  # bytes free under which an I/O error is taken to be a full disk


def _free_bytes(path: Path) -> int:
    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return FULL_BELOW  # unknown: do not claim the disk is full


class AlreadyDecided(ConfigError):
    """A decision lost the race: someone else decided the row first."""

    def __init__(self, run_id: int, row: int, status: str, by: str | None, at: str | None) -> None:
        self.run_id, self.row, self.status, self.by, self.at = run_id, row, status, by, at
        super().__init__(f"row {row} of gate run {run_id} was already {status} by {by} at {at}")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def _lp(b: bytes) -> bytes:
    return len(b).to_bytes(8, "big") + b


def event_hash(prev_hash: bytes, seq: int, ts: bytes, kind: bytes, actor: bytes, payload: bytes) -> str:
    """Chain hash over the previous hash and this event's exact stored bytes."""
    h = hashlib.sha256(b"trainguard-event-v1\x00")
    h.update(_lp(prev_hash))
    h.update(seq.to_bytes(8, "big", signed=True))
    for part in (ts, kind, actor, payload):
        h.update(_lp(part))
    return h.hexdigest()


class Ledger:
    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path | None = None, create: bool = True) -> "Ledger":
        p = resolve_path(path)
        new = not p.exists()
        if new:
            if not create:
                raise ConfigError(f"no ledger at {p}: run `trainguard ingest` first, or pass --ledger / set ${ENV_VAR}")
            if not p.parent.exists():
                p.parent.mkdir(parents=True, mode=0o700)
        try:
            conn = sqlite3.connect(str(p), isolation_level=None, timeout=30.0)
            conn.row_factory = sqlite3.Row
            if new:
                # Set before the first table exists (it cannot change later in WAL mode). Leaves are
                # stored as 2 MiB blobs; on 4 KiB pages each is a chain of 512 overflow pages, and the
                # write of 10^7 leaves took 3.9 s against 1.4 s on 64 KiB pages (bench_provenance.py).
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.DatabaseError as e:
            raise storage_error(e, p) or ConfigError(f"{p}: not a readable trainguard ledger ({e})") from None
        if new:
            with contextlib.suppress(OSError):
                os.chmod(p, 0o600)
        ledger = cls(p, conn)
        ledger._migrate()
        return ledger

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _migrate(self) -> None:
        try:
            with self.transaction():
                self.conn.execute("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)")
                row = self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
                current = row[0] or 0
                if not isinstance(current, int):
                    raise ConfigError(f"{self.path}: schema_version holds {current!r}, not a version number; "
                                      "the ledger was edited outside trainguard")
                if current > SCHEMA_VERSION:
                    raise ConfigError(
                        f"{self.path}: ledger schema v{current} is newer than this trainguard supports "
                        f"(v{SCHEMA_VERSION}); upgrade trainguard")
                for version, sql in MIGRATIONS:
                    if version > current:
                        for stmt in sql.split(";"):
                            if stmt.strip():
                                self.conn.execute(stmt)
                        self.conn.execute("INSERT INTO schema_version(version) VALUES (?)", (version,))
        except StorageFull:
            raise
        except sqlite3.DatabaseError as e:
            raise storage_error(e, self.path) or ConfigError(
                f"{self.path}: not a readable trainguard ledger ({e})") from None

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write: all of it or none. A full disk becomes `StorageFull` (SQLite may already have rolled back)."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except (sqlite3.OperationalError, OSError) as e:
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            err = storage_error(e, self.path)
            if err is None:
                raise
            raise err from None

    # --- events ----------------------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        row = self.conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def append_event(self, kind: str, actor: str, payload: dict[str, Any]) -> tuple[int, str]:
        """Append one event; call inside `transaction()`. Returns its sequence number and timestamp."""
        seq, prev = self.head()
        seq += 1
        ts = now()
        body = canonical_json(payload)
        h = event_hash(bytes.fromhex(prev), seq, ts.encode(), kind.encode(), actor.encode(), body.encode())
        self.conn.execute(
            "INSERT INTO events(seq, ts, kind, actor, payload, prev_hash, hash) VALUES (?,?,?,?,?,?,?)",
            (seq, ts, kind, actor, body, prev, h))
        return seq, ts

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT seq, ts, kind, actor, payload, hash FROM events"
        rows = self.conn.execute(sql + (" WHERE kind = ?" if kind else "") + " ORDER BY seq",
                                 (kind,) if kind else ()).fetchall()
        return [dict(r) | {"payload": json.loads(r["payload"])} for r in rows]

    # --- sources and datasets --------------------------------------------------------------------

    def upsert_source(self, name: str, actor: str, licence: str | None = None, origin: str | None = None,
                      owner: str | None = None) -> int:
        """Create or update a source; fields given as None keep their recorded value."""
        row = self.conn.execute("SELECT * FROM sources WHERE name = ?", (name,)).fetchone()
        fields = {"licence": licence, "origin": origin, "owner": owner}
        if row is not None:
            merged = {k: (v if v is not None else row[k]) for k, v in fields.items()}
            if merged == {k: row[k] for k in fields}:
                return int(row["id"])
        else:
            merged = fields
        seq, _ = self.append_event("source", actor, {"name": name, **merged})
        if row is None:
            cur = self.conn.execute(
                "INSERT INTO sources(name, licence, origin, owner, event_seq) VALUES (?,?,?,?,?)",
                (name, merged["licence"], merged["origin"], merged["owner"], seq))
            return int(cur.lastrowid)
        self.conn.execute("UPDATE sources SET licence=?, origin=?, owner=?, event_seq=? WHERE id=?",
                          (merged["licence"], merged["origin"], merged["owner"], seq, row["id"]))
        return int(row["id"])

    def sources(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM sources ORDER BY name")]

    def source(self, source_id: int | None) -> dict[str, Any] | None:
        if source_id is None:
            return None
        row = self.conn.execute("SELECT * FROM sources WHERE id = ?", (source_id,)).fetchone()
        return dict(row) if row else None

    def _dataset_id(self, name: str) -> int:
        row = self.conn.execute("SELECT id FROM datasets WHERE name = ?", (name,)).fetchone()
        if row:
            return int(row[0])
        return int(self.conn.execute("INSERT INTO datasets(name) VALUES (?)", (name,)).lastrowid)

    def datasets(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM datasets ORDER BY name")]

    # --- versions --------------------------------------------------------------------------------

    _VERSION_SQL = ("SELECT v.*, d.name AS dataset FROM versions v JOIN datasets d ON d.id = v.dataset_id ")

    def add_version(self, dataset: str, path: str, fmt: str, leaves: bytes | Sequence[bytes], merkle_root: str,
                    file_sha256: str, file_bytes: int, actor: str, source_id: int | None = None,
                    derived_from: int | None = None) -> dict[str, Any]:
        """Record a version; call inside `transaction()`. `leaves` is one buffer or CHUNK_LEAVES pieces
        (what `hash_file` returns: 10^7 leaves are never joined into one buffer)."""
        pieces = leaf_pieces(leaves)
        ds = self._dataset_id(dataset)
        number = self.conn.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE dataset_id = ?",
                                   (ds,)).fetchone()[0]
        nbytes = getattr(pieces, "nbytes", None)
        records = (nbytes if nbytes is not None else sum(len(c) for c in pieces)) // 32
        src = self.source(source_id)
        payload = {
            "dataset": dataset, "version": number, "path": path, "format": fmt, "records": records,
            "merkle_root": merkle_root, "file_sha256": file_sha256, "file_bytes": file_bytes,
            "source": src["name"] if src else None, "derived_from": derived_from,
        }
        seq, ts = self.append_event("ingest", actor, payload)
        vid = int(self.conn.execute(
            "INSERT INTO versions(dataset_id, number, path, format, records, merkle_root, file_sha256, file_bytes,"
            " source_id, ingested_by, ingested_at, derived_from, event_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (ds, number, path, fmt, records, merkle_root, file_sha256, file_bytes, source_id, actor, ts,
             derived_from, seq)).lastrowid)
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            if (len(piece) != CHUNK_LEAVES * 32 and i != last) or not piece or len(piece) % 32:
                raise ValueError(f"leaf piece {i} holds {len(piece)} bytes")  # a caller bug; the transaction rolls back
            self.conn.execute("INSERT INTO leaf_chunks(version_id, chunk, data) VALUES (?,?,?)", (vid, i, piece))
            if _chunk_hook is not None:
                _chunk_hook(i)
        return self.version_by_id(vid)  # type: ignore[return-value]

    def version_by_id(self, vid: int) -> dict[str, Any] | None:
        row = self.conn.execute(self._VERSION_SQL + "WHERE v.id = ?", (vid,)).fetchone()
        return dict(row) if row else None

    def versions(self, dataset: str | None = None) -> list[dict[str, Any]]:
        if dataset is None:
            rows = self.conn.execute(self._VERSION_SQL + "ORDER BY d.name, v.number")
        else:
            rows = self.conn.execute(self._VERSION_SQL + "WHERE d.name = ? ORDER BY v.number", (dataset,))
        return [dict(r) for r in rows]

    def version(self, dataset: str, number: int | None = None) -> dict[str, Any] | None:
        if number is None:
            row = self.conn.execute(self._VERSION_SQL + "WHERE d.name = ? ORDER BY v.number DESC LIMIT 1",
                                    (dataset,)).fetchone()
        else:
            row = self.conn.execute(self._VERSION_SQL + "WHERE d.name = ? AND v.number = ?",
                                    (dataset, number)).fetchone()
        return dict(row) if row else None

    def versions_by_root(self, merkle_root: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(self._VERSION_SQL + "WHERE v.merkle_root = ? ORDER BY v.id DESC", (merkle_root,))
        return [dict(r) for r in rows]

    def leaf_chunks(self, version_id: int) -> Iterator[bytes]:
        """The stored leaf pieces in order, one at a time (10^7 leaves are never joined)."""
        rows = self.conn.execute("SELECT data FROM leaf_chunks WHERE version_id = ? ORDER BY chunk", (version_id,))
        for (data,) in rows:
            yield data

    def leaves(self, version_id: int) -> bytes:
        return b"".join(self.leaf_chunks(version_id))

    # --- gate runs and reviews -------------------------------------------------------------------

    def add_gate_run(self, *, version_id: int | None, path: str, merkle_root: str, verdict: str,
                     reasons: list[str], policy: dict[str, Any], report: dict[str, Any], records: int,
                     queue: list[tuple[int, str, list[dict[str, Any]]]], actor: str) -> int:
        """Store a gate run and its review queue: (row, leaf hex, findings) per row."""
        policy_text, report_text = canonical_json(policy), canonical_json(report)
        payload = {
            "version_id": version_id, "path": path, "merkle_root": merkle_root, "verdict": verdict,
            "reasons": reasons, "policy_sha256": sha256_text(policy_text),
            "report_sha256": sha256_text(report_text), "records": records, "queued": len(queue),
            "queue_sha256": queue_digest((r, leaf) for r, leaf, _ in queue),
            "queue_findings_sha256": findings_digest((r, canonical_json(f)) for r, _, f in queue),
        }
        seq, ts = self.append_event("gate", actor, payload)
        run_id = int(self.conn.execute(
            "INSERT INTO gate_runs(version_id, path, merkle_root, verdict, reasons, policy, policy_sha256, report,"
            " report_sha256, queued, records, by, at, event_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (version_id, path, merkle_root, verdict, canonical_json(reasons), policy_text,
             payload["policy_sha256"], report_text, payload["report_sha256"], len(queue), records, actor, ts,
             seq)).lastrowid)
        self.conn.executemany(
            "INSERT INTO reviews(gate_run_id, row, leaf, findings) VALUES (?,?,?,?)",
            [(run_id, r, leaf, canonical_json(f)) for r, leaf, f in queue])
        self._supersede(run_id, version_id, merkle_root)
        return run_id

    def _supersede(self, run_id: int, version_id: int | None, merkle_root: str) -> None:
        """Close the pending rows of earlier runs of the same content: only the newest run's rows wait.

        One `supersede` event per earlier run (actor "gate") names the rows it closes, so the
        queue never shows a record twice and `ledger verify` can replay the change. Decisions
        already made stay; a decision a person makes on the new run's row may carry over later.
        """
        older = self.conn.execute(
            "SELECT DISTINCT r.gate_run_id FROM reviews r JOIN gate_runs g ON g.id = r.gate_run_id"
            " WHERE r.status = 'pending' AND g.id < ? AND g.version_id IS ? AND g.merkle_root = ?"
            " ORDER BY r.gate_run_id", (run_id, version_id, merkle_root)).fetchall()
        for (old,) in older:
            rows = [r[0] for r in self.conn.execute(
                "SELECT row FROM reviews WHERE gate_run_id = ? AND status = 'pending' ORDER BY row", (old,))]
            seq, ts = self.append_event("supersede", "gate", {"gate_run": old, "superseded_by": run_id, "rows": rows})
            self.conn.execute(
                "UPDATE reviews SET status='superseded', decided_by='gate', reason=?, decided_at=?, event_seq=?"
                " WHERE gate_run_id = ? AND status = 'pending'", (superseded_reason(run_id), ts, seq, old))

    def superseded_by(self, run_id: int) -> dict[int, list[int]]:
        """Earlier gate runs whose pending rows this run closed: run id -> rows (for the gate's output)."""
        rows = self.conn.execute(
            "SELECT payload FROM events WHERE kind = 'supersede' AND json_extract(payload, '$.superseded_by') = ?"
            " ORDER BY seq", (run_id,))
        return {int(p["gate_run"]): list(p["rows"]) for p in (json.loads(r[0]) for r in rows)}

    def gate_run(self, run_id: int) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM gate_runs WHERE id = ?", (run_id,)).fetchone()
        return dict(row) if row else None

    def gate_runs(self, version_id: int | None = None) -> list[dict[str, Any]]:
        if version_id is None:
            rows = self.conn.execute("SELECT * FROM gate_runs ORDER BY id")
        else:
            rows = self.conn.execute("SELECT * FROM gate_runs WHERE version_id = ? ORDER BY id", (version_id,))
        return [dict(r) for r in rows]

    def latest_gate_run(self, version_id: int) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM gate_runs WHERE version_id = ? ORDER BY id DESC LIMIT 1",
                                (version_id,)).fetchone()
        return dict(row) if row else None

    # A carried decision's origin lives in its event (the record of truth), so no column is needed.
    _REVIEW_SQL = ("SELECT r.*, json_extract(e.payload, '$.carried_from') AS carried_from FROM reviews r"
                   " LEFT JOIN events e ON e.seq = r.event_seq ")

    @staticmethod
    def _review(r: Any) -> dict[str, Any]:
        item = dict(r)
        item["carried_from"] = json.loads(item["carried_from"]) if item.get("carried_from") else None
        return item

    def reviews(self, run_id: int, status: str | None = None) -> list[dict[str, Any]]:
        sql = self._REVIEW_SQL + "WHERE r.gate_run_id = ?" + (" AND r.status = ?" if status else "") + " ORDER BY r.row"
        return [self._review(r) for r in self.conn.execute(sql, (run_id, status) if status else (run_id,))]

    def latest_human_decisions(self, leaves: set[str]) -> dict[str, dict[str, Any]]:
        """Per leaf hash, the newest decision a person made on any gate run; carried copies are left out."""
        if not leaves:
            return {}
        self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_leaves(leaf TEXT PRIMARY KEY)")
        self.conn.execute("DELETE FROM wanted_leaves")
        self.conn.executemany("INSERT INTO wanted_leaves(leaf) VALUES (?)", [(x,) for x in leaves])
        # CROSS JOIN keeps the (small) wanted set as the outer loop, so each leaf is one `reviews_leaf`
        # probe; left to itself the planner walked every decided row through `reviews_status`.
        rows = self.conn.execute(
            "SELECT r.* FROM wanted_leaves w CROSS JOIN reviews r ON r.leaf = w.leaf JOIN events e ON e.seq = r.event_seq"
            " WHERE r.status IN ('approved', 'rejected') AND json_extract(e.payload, '$.carried_from') IS NULL ORDER BY r.event_seq")
        latest = {r["leaf"]: dict(r) for r in rows}
        self.conn.execute("DELETE FROM wanted_leaves")
        return latest

    def carry_decision(self, run_id: int, row: int, origin: dict[str, Any]) -> None:
        """Copy a person's earlier decision onto a freshly queued row; call inside `transaction()`.

        The event's actor is "gate" (the person did not decide this run) and its payload names the
        decision it copies; the row keeps the original reviewer, time and reason, so a release
        and its attestation credit the person who actually looked at the record.
        """
        item = self.conn.execute("SELECT * FROM reviews WHERE gate_run_id = ? AND row = ?", (run_id, row)).fetchone()
        if item is None or item["status"] != "pending" or item["leaf"] != origin["leaf"]:
            raise ConfigError(f"row {row} of gate run {run_id} cannot take the decision on run "
                              f"{origin['gate_run_id']} row {origin['row']}")
        source = {"gate_run": origin["gate_run_id"], "row": origin["row"], "decided_by": origin["decided_by"],
                  "decided_at": origin["decided_at"], "event_seq": origin["event_seq"]}
        seq, _ = self.append_event("review", "gate", {"gate_run": run_id, "row": row, "leaf": item["leaf"],
                                                   "decision": origin["status"], "reason": origin["reason"],
                                                   "previous": "pending", "carried_from": source})
        self.conn.execute(
            "UPDATE reviews SET status=?, decided_by=?, reason=?, decided_at=?, event_seq=? WHERE gate_run_id=? AND row=?",
            (origin["status"], origin["decided_by"], origin["reason"], origin["decided_at"], seq, run_id, row))

    def decide(self, run_id: int, row: int, decision: str, reason: str, actor: str,
               only_pending: bool = False) -> None:
        """Record a review decision; call inside `transaction()`.

        `only_pending` is for concurrent reviewers: a row someone else already
        decided raises `AlreadyDecided` instead of being overwritten.
        """
        item = self.conn.execute("SELECT * FROM reviews WHERE gate_run_id = ? AND row = ?", (run_id, row)).fetchone()
        if item is None:
            raise ConfigError(f"row {row} is not in the review queue of gate run {run_id}")
        if item["status"] == "superseded":
            raise ConfigError(f"row {row} of gate run {run_id} was closed: {item['reason']}; decide it there")
        if len(reason) > MAX_REASON:
            raise ConfigError(f"the reason is {len(reason):,} characters; at most {MAX_REASON:,} are kept")
        if only_pending and item["status"] != "pending":
            raise AlreadyDecided(run_id, row, item["status"], item["decided_by"], item["decided_at"])
        seq, ts = self.append_event("review", actor, {"gate_run": run_id, "row": row, "leaf": item["leaf"],
                                                  "decision": decision, "reason": reason,
                                                  "previous": item["status"]})
        cur = self.conn.execute(
            "UPDATE reviews SET status=?, decided_by=?, reason=?, decided_at=?, event_seq=? WHERE gate_run_id=? AND row=?"
            + (" AND status = 'pending'" if only_pending else ""),
            (decision, actor, reason, ts, seq, run_id, row))
        if cur.rowcount != 1:  # unreachable under BEGIN IMMEDIATE; kept so a lost race can never pass silently
            raise AlreadyDecided(run_id, row, "decided", None, None)

    def review_item(self, run_id: int, row: int) -> dict[str, Any] | None:
        r = self.conn.execute(self._REVIEW_SQL + "WHERE r.gate_run_id = ? AND r.row = ?", (run_id, row)).fetchone()
        return self._review(r) if r else None

    # --- reviewer accounts and web sessions (`trainguard serve`) ---------------------------------

    def add_user(self, name: str, role: str, password_hash: str, actor: str) -> int:
        """Create an account; call inside `transaction()`.

        The event carries a digest of the stored (salted) password hash, never the hash, so
        `ledger verify` can tell an account edited behind the log's back.
        """
        seq, ts = self.append_event("user", actor, {"name": name, "role": role, "action": "add",
                                                "password_sha256": sha256_text(password_hash)})
        return int(self.conn.execute(
            "INSERT INTO users(name, role, password, created_at, event_seq) VALUES (?,?,?,?,?)",
            (name, role, password_hash, ts, seq)).lastrowid)

    def update_user(self, name: str, actor: str, *, role: str | None = None, password_hash: str | None = None,
                    disabled: bool | None = None) -> None:
        """Change an account; call inside `transaction()`. Disabling also ends its sessions."""
        user = self.user(name)
        if user is None:
            raise ConfigError(f"no user {name!r} in {self.path}")
        changes = {"role": role, "password_sha256": sha256_text(password_hash) if password_hash else None,
                   "disabled": disabled}
        payload = {"name": name, "action": "update", **{k: v for k, v in changes.items() if v is not None}}
        seq, _ = self.append_event("user", actor, payload)
        self.conn.execute(
            "UPDATE users SET role = COALESCE(?, role), password = COALESCE(?, password),"
            " disabled = COALESCE(?, disabled), event_seq = ? WHERE id = ?",
            (role, password_hash, None if disabled is None else int(disabled), seq, user["id"]))
        if disabled or password_hash:
            self.conn.execute("DELETE FROM web_sessions WHERE user_id = ?", (user["id"],))

    def user(self, name: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        return dict(row) if row else None

    def users(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(
            "SELECT id, name, role, disabled, created_at FROM users ORDER BY name")]

    def add_session(self, token_sha256: str, user_id: int, csrf: str, expires_at: str) -> None:
        self.conn.execute("DELETE FROM web_sessions WHERE expires_at < ?", (now(),))
        self.conn.execute(
            "INSERT INTO web_sessions(token_sha256, user_id, csrf, created_at, expires_at) VALUES (?,?,?,?,?)",
            (token_sha256, user_id, csrf, now(), expires_at))

    def session(self, token_sha256: str) -> dict[str, Any] | None:
        """The live session and its user; None when unknown, expired or the user is disabled."""
        row = self.conn.execute(
            "SELECT s.csrf, s.expires_at, u.id AS user_id, u.name, u.role FROM web_sessions s"
            " JOIN users u ON u.id = s.user_id WHERE s.token_sha256 = ? AND s.expires_at > ? AND u.disabled = 0",
            (token_sha256, now())).fetchone()
        return dict(row) if row else None

    def end_session(self, token_sha256: str) -> None:
        self.conn.execute("DELETE FROM web_sessions WHERE token_sha256 = ?", (token_sha256,))

    # --- releases and training runs --------------------------------------------------------------

    def add_release(self, *, version_id: int, gate_run_id: int | None, out_path: str, out_sha256: str,
                    out_version_id: int | None, attestation_sha256: str | None, forced: bool, actor: str,
                    extra: dict[str, Any] | None = None) -> int:
        """Record a release; call inside `transaction()`. `attestation_sha256` is None when the
        attestation is signed afterwards over a head that includes this event (`attach_attestation`)."""
        payload = {"version_id": version_id, "gate_run": gate_run_id, "out_path": out_path,
                   "out_sha256": out_sha256, "out_version_id": out_version_id,
                   "attestation_sha256": attestation_sha256, "forced": forced, **(extra or {})}
        seq, ts = self.append_event("release", actor, payload)
        return int(self.conn.execute(
            "INSERT INTO releases(version_id, gate_run_id, out_path, out_sha256, out_version_id, attestation_sha256,"
            " forced, by, at, event_seq) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (version_id, gate_run_id, out_path, out_sha256, out_version_id, attestation_sha256, int(forced), actor,
             ts, seq)).lastrowid)

    def attach_attestation(self, release_id: int, attestation_sha256: str, actor: str) -> int:
        """Record the digest of a release's attestation; call inside the release's transaction."""
        seq, _ = self.append_event("attestation", actor, {"release": release_id,
                                                       "attestation_sha256": attestation_sha256})
        self.conn.execute("UPDATE releases SET attestation_sha256 = ? WHERE id = ?", (attestation_sha256, release_id))
        return seq

    def event(self, seq: int) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT seq, ts, kind, actor, hash FROM events WHERE seq = ?", (seq,)).fetchone()
        return dict(row) if row else None

    def releases(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM releases ORDER BY id")]

    def add_training(self, *, file_sha256: str, attestation_sha256: str, path: str, actor: str) -> int:
        payload = {"file_sha256": file_sha256, "attestation_sha256": attestation_sha256, "path": path}
        seq, ts = self.append_event("train", actor, payload)
        return int(self.conn.execute(
            "INSERT INTO trainings(file_sha256, attestation_sha256, path, by, at, event_seq) VALUES (?,?,?,?,?,?)",
            (file_sha256, attestation_sha256, path, actor, ts, seq)).lastrowid)

    def trainings(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM trainings ORDER BY id")]


def leaf_pieces(leaves: bytes | Sequence[bytes]) -> Sequence[bytes]:
    """Leaves as CHUNK_LEAVES-leaf pieces (the last may be short), the shape `leaf_chunks` stores.

    A sequence that states its `piece_bytes` (hashing's spilled pieces) is taken as it is and its
    piece sizes checked as they are written; any other sequence is checked here.
    """
    step = CHUNK_LEAVES * 32
    if isinstance(leaves, (bytes, bytearray, memoryview)):
        return [bytes(leaves[i:i + step]) for i in range(0, len(leaves), step)]
    if getattr(leaves, "piece_bytes", None) == step:
        return leaves
    if all(len(c) == step for c in leaves[:-1]) and (not leaves or 0 < len(leaves[-1]) <= step):
        return leaves
    return leaf_pieces(b"".join(leaves))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def queue_digest(items: Iterator[tuple[int, str]] | Any) -> str:
    h = hashlib.sha256()
    for row, leaf in items:
        h.update(f"{row}:{leaf}\n".encode())
    return h.hexdigest()


def findings_digest(items: Iterator[tuple[int, str]] | Any) -> str:
    """Digest of each queued row's stored findings text, so the gate event covers that column too."""
    h = hashlib.sha256()
    for row, text in items:
        h.update(f"{row}:".encode())
        h.update(_lp(text.encode()))
    return h.hexdigest()


def superseded_reason(run_id: int) -> str:
    return f"superseded by gate run {run_id} of the same content"
