"""`trainguard ledger verify`: the event chain, and every cell of every table against it.

Checks: SQLite's own page check; the chain (contiguous sequence numbers, each
`prev_hash` equal to the previous event's hash, each hash recomputed from the
stored bytes); then a replay: the events are applied in order to empty tables,
and every table is compared with the replay cell by cell (ids, who, when, the
gate run a release used, the findings that held a queued row). A row the log
does not explain, a row it explains that is missing, or a cell that differs is
reported with its table and key. Each version's leaves are re-hashed to its
recorded Merkle root. Columns the replay cannot derive exactly (a stored
policy, scan report, password hash, queued findings) are checked against the
digests their events carry.

Rewriting the whole chain is only caught against a head recorded elsewhere (a
release attestation carries one that covers the release itself; pass it as
`expect_head`). `web_sessions` is the one table outside the log: login sessions
are short-lived state, not history (see docs/provenance.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from trainguard.ledger import merkle
from trainguard.ledger.store import (
    GENESIS,
    SCHEMA_VERSION,
    Ledger,
    canonical_json,
    event_hash,
    findings_digest,
    queue_digest,
    sha256_text,
    superseded_reason,
)

# Tables whose every cell the replay derives or checks, and the one table it leaves alone (and why).
# tests/test_ledger_tamper.py reads these against the live schema, so a new table or column
# without a check fails a test.
CHECKED_TABLES = ("events", "schema_version", "sources", "datasets", "versions", "leaf_chunks", "gate_runs",
                  "reviews", "releases", "trainings", "users")
UNCHECKED_TABLES = {"web_sessions": "login sessions are short-lived state, not history; they are never exported"}

EVENT_KINDS = ("source", "ingest", "gate", "review", "supersede", "release", "attestation", "train", "user")


@dataclass
class IntegrityReport:
    events: int = 0
    head: str = GENESIS
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, where: str, message: str) -> None:
        self.problems.append({"where": where, "problem": message})

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "head": {"seq": self.events, "hash": self.head},
                "problems": self.problems}


def check(ledger: Ledger, expect_head: tuple[int, str] | None = None, leaves: bool = True) -> IntegrityReport:
    """`leaves=False` skips re-hashing every version's leaves (the costly part on big ledgers): a
    release checks the rest before signing what the tables say."""
    rep = IntegrityReport()
    conn = ledger.conn
    result = conn.execute("PRAGMA quick_check").fetchone()[0]
    if result != "ok":
        rep.add("database", f"SQLite quick_check: {result}")
    events = _check_chain(ledger, rep)
    if expect_head is not None:
        seq, h = expect_head
        got = events.get(seq)
        if got is None or got["hash"] != h:
            rep.add(f"event {seq}", f"expected head hash {h} is not in the log (history rewritten or truncated)")
    _check_schema_version(ledger, rep)
    Replay(ledger, rep).run(events, leaves)
    return rep


def _check_chain(ledger: Ledger, rep: IntegrityReport) -> dict[int, dict[str, Any]]:
    rows = ledger.conn.execute(
        "SELECT seq, CAST(ts AS BLOB), CAST(kind AS BLOB), CAST(actor AS BLOB), CAST(payload AS BLOB),"
        " CAST(prev_hash AS BLOB), CAST(hash AS BLOB) FROM events ORDER BY seq").fetchall()
    prev = GENESIS.encode()
    expected_seq = 1
    parsed: dict[int, dict[str, Any]] = {}
    for seq, ts, kind, actor, payload, prev_hash, stored in rows:
        where = f"event {seq}"
        if not isinstance(seq, int) or seq != expected_seq:
            rep.add(where, f"sequence gap: expected event {expected_seq}")
        expected_seq = (seq if isinstance(seq, int) else expected_seq) + 1
        if prev_hash != prev:
            rep.add(where, "prev_hash does not match the previous event's hash")
        try:
            prev_bytes = bytes.fromhex(prev_hash.decode("ascii"))
            recomputed = event_hash(prev_bytes, seq, ts, kind, actor, payload)
        except (ValueError, UnicodeDecodeError, AttributeError, TypeError, OverflowError):
            recomputed = None
        if recomputed is None or recomputed.encode() != stored:
            rep.add(where, "hash does not match the event's contents (event edited)")
        prev = stored if isinstance(stored, bytes) else b""
        try:
            parsed[seq] = {"kind": kind.decode(), "actor": actor.decode(), "ts": ts.decode(),
                           "payload": json.loads(payload), "hash": stored.decode()}
        except (UnicodeDecodeError, ValueError, AttributeError, TypeError):
            rep.add(where, "payload is not valid JSON")
            continue
        if parsed[seq]["kind"] not in EVENT_KINDS:
            rep.add(where, f"unknown event kind {parsed[seq]['kind']!r}")
        if not isinstance(parsed[seq]["payload"], dict):
            rep.add(where, "payload is not a JSON object")
            parsed[seq]["payload"] = {}
    rep.events = len(rows)
    rep.head = prev.decode("ascii", "replace") if rows else GENESIS
    return parsed


def _check_schema_version(ledger: Ledger, rep: IntegrityReport) -> None:
    got = sorted(r[0] for r in ledger.conn.execute("SELECT version FROM schema_version"))
    if got != list(range(1, SCHEMA_VERSION + 1)):
        rep.add("schema_version", f"holds {got}; a ledger migrated by this trainguard holds 1..{SCHEMA_VERSION} once each")


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same SQLite type (a text '1' is not the integer 1)."""
    if isinstance(a, bool):
        a = int(a)
    if isinstance(b, bool):
        b = int(b)
    return type(a) is type(b) and a == b


Digest = Callable[[Any], Any]


class Replay:
    """Apply the events in order to empty tables, then compare every table with the result."""

    def __init__(self, ledger: Ledger, rep: IntegrityReport) -> None:
        self.ledger, self.rep = ledger, rep
        # table -> primary key -> {column: expected value}; a callable checks a column the replay
        # knows only by digest.
        self.tables: dict[str, dict[Any, dict[str, Any]]] = {
            t: {} for t in ("sources", "datasets", "versions", "gate_runs", "reviews", "releases", "trainings",
                            "users")}
        self.source_ids: dict[str, int] = {}
        self.dataset_ids: dict[str, int] = {}
        self.user_ids: dict[str, int] = {}
        self._events: dict[int, dict[str, Any]] = {}

    def _new_id(self, table: str) -> int:
        return len(self.tables[table]) + 1

    def run(self, events: dict[int, dict[str, Any]], leaves: bool = True) -> None:
        self._events = events
        for seq in sorted(events):
            ev = events[seq]
            apply = getattr(self, f"_on_{ev['kind']}", None)
            if apply is not None:
                try:
                    apply(seq, ev, ev["payload"])
                except (KeyError, TypeError, ValueError, AttributeError) as e:
                    self.rep.add(f"event {seq}", f"{ev['kind']} event the replay cannot apply ({type(e).__name__}: {e})")
        for table, rows in self.tables.items():
            self._compare_table(table, rows)
        if leaves:
            self._check_leaves()

    # --- one handler per event kind: what the write that appended it did to the tables ----------

    def _on_source(self, seq: int, ev: dict[str, Any], p: dict[str, Any]) -> None:
        sid = self.source_ids.get(p["name"])
        if sid is None:
            sid = self.source_ids[p["name"]] = self._new_id("sources")
        self.tables["sources"][sid] = {"id": sid, "name": p["name"], "licence": p.get("licence"),
                                       "origin": p.get("origin"), "owner": p.get("owner"), "event_seq": seq}

    def _on_ingest(self, seq: int, ev: dict[str, Any], p: dict[str, Any]) -> None:
        ds = self.dataset_ids.get(p["dataset"])
        if ds is None:
            ds = self.dataset_ids[p["dataset"]] = self._new_id("datasets")
            self.tables["datasets"][ds] = {"id": ds, "name": p["dataset"]}
        numbers = [v["number"] for v in self.tables["versions"].values() if v["dataset_id"] == ds]
        if p["version"] != max(numbers, default=0) + 1:
            self.rep.add(f"event {seq}", f"version number {p['version']} does not follow {max(numbers, default=0)}")
        source_id = None
        if p.get("source") is not None:
            source_id = self.source_ids.get(p["source"])
            if source_id is None:
                self.rep.add(f"event {seq}", f"ingest names source {p['source']!r}, which no source event created")
        vid = self._new_id("versions")
        self.tables["versions"][vid] = {
            "id": vid, "dataset_id": ds, "number": p["version"], "path": p["path"], "format": p["format"],
            "records": p["records"], "merkle_root": p["merkle_root"], "file_sha256": p["file_sha256"],
            "file_bytes": p["file_bytes"], "source_id": source_id, "ingested_by": ev["actor"],
            "ingested_at": ev["ts"], "derived_from": p.get("derived_from"), "event_seq": seq}

    def _on_gate(self, seq: int, ev: dict[str, Any], p: dict[str, Any]) -> None:
        rid = self._new_id("gate_runs")
        self.tables["gate_runs"][rid] = {
            "id": rid, "version_id": p["version_id"], "path": p["path"], "merkle_root": p["merkle_root"],
            "verdict": p["verdict"], "reasons": canonical_json(p["reasons"]),
            "policy": _digest(p["policy_sha256"], sha256_text), "policy_sha256": p["policy_sha256"],
            "report": _digest(p["report_sha256"], sha256_text), "report_sha256": p["report_sha256"],
            "queued": p["queued"], "records": p["records"], "by": ev["actor"], "at": ev["ts"], "event_seq": seq}
        # The queued rows are in the log only by digest: take them from the table if they match it.
        queue = self.ledger.conn.execute(
            "SELECT row, leaf, findings FROM reviews WHERE gate_run_id = ? ORDER BY row", (rid,)).fetchall()
        where = f"reviews gate_run_id={rid}"
        bad = []
        if len(queue) != p["queued"]:
            bad.append(f"{len(queue)} rows queued, the gate event says {p['queued']}")
        if queue_digest((r, leaf) for r, leaf, _ in queue) != p["queue_sha256"]:
            bad.append("rows or records (leaf hashes) differ from the gate event")
        # Ledgers written before the findings digest existed cannot check this column.
        if "queue_findings_sha256" in p and \
                _safe_findings_digest(queue) != p["queue_findings_sha256"]:
            bad.append("the findings that held the rows differ from the gate event")
        for msg in bad:
            self.rep.add(where, msg)
        for r, leaf, findings in queue:
            self.tables["reviews"][(rid, r)] = {
                "gate_run_id": rid, "row": r, "leaf": leaf if not bad else _never("a queue matching its event"),
                "findings": findings if not bad else _never("a queue matching its event"), "status": "pending",
                "decided_by": None, "reason": None, "decided_at": None, "event_seq": None}

    def _decided(self, seq: int, run: Any, row: Any) -> dict[str, Any] | None:
        item = self.tables["reviews"].get((run, row))
        if item is None:
            self.rep.add(f"event {seq}", f"decides run {run} row {row}, which no gate run queued")
        return item

    def _on_review(self, seq: int, ev: dict[str, Any], p: dict[str, Any]) -> None:
        item = self._decided(seq, p["gate_run"], p["row"])
        if item is None:
            return
        where = f"event {seq}"
        if not callable(item["leaf"]) and p.get("leaf") != item["leaf"]:
            self.rep.add(where, "decision names another record (leaf) than the one queued")
        if p.get("previous") != item["status"]:
            self.rep.add(where, f"decision says the row was {p.get('previous')!r}; the log had it {item['status']!r}")
        origin = p.get("carried_from")
        by, at = ev["actor"], ev["ts"]
        if origin is not None:
            _check_carried(where, p["gate_run"], ev, self._events, self.rep)
            by = origin.get("decided_by") if isinstance(origin, dict) else None
            at = origin.get("decided_at") if isinstance(origin, dict) else None
        item.update(status=p["decision"], decided_by=by, reason=p["reason"], decided_at=at, event_seq=seq)

    def _on_supersede(self, seq: int, ev: dict[str, Any], p: dict[str, Any]) -> None:
        run, new = p["gate_run"], p["superseded_by"]
        if ev["actor"] != "gate" or not isinstance(new, int) or new <= run or new not in self.tables["gate_runs"]:
            self.rep.add(f"event {seq}", f"supersede of gate run {run} by {new!r} was not written by a later gate run")
        for row in p["rows"]:
            item = self._decided(seq, run, row)
            if item is None:
                continue
            if item["status"] != "pending":
                self.rep.add(f"event {seq}", f"supersedes run {run} row {row}, which the log had {item['status']!r}")
            item.update(status="superseded", decided_by="gate", reason=superseded_reason(new),
                        decided_at=ev["ts"], event_seq=seq)

    def _on_release(self, seq: int, ev: dict[str, Any], p: dict[str, Any]) -> None:
        rid = self._new_id("releases")
        self.tables["releases"][rid] = {
            "id": rid, "version_id": p["version_id"], "gate_run_id": p["gate_run"], "out_path": p["out_path"],
            "out_sha256": p["out_sha256"], "out_version_id": p["out_version_id"],
            "attestation_sha256": p.get("attestation_sha256"), "forced": int(bool(p["forced"])),
            "by": ev["actor"], "at": ev["ts"], "event_seq": seq}
        if p["gate_run"] is not None and p["gate_run"] not in self.tables["gate_runs"]:
            self.rep.add(f"event {seq}", f"release names gate run {p['gate_run']}, which the log never recorded")

    def _on_attestation(self, seq: int, ev: dict[str, Any], p: dict[str, Any]) -> None:
        rel = self.tables["releases"].get(p["release"])
        if rel is None or rel["attestation_sha256"] is not None:
            self.rep.add(f"event {seq}", f"attestation for release {p['release']!r}, which has none pending")
            return
        rel["attestation_sha256"] = p["attestation_sha256"]

    def _on_train(self, seq: int, ev: dict[str, Any], p: dict[str, Any]) -> None:
        tid = self._new_id("trainings")
        self.tables["trainings"][tid] = {
            "id": tid, "file_sha256": p["file_sha256"], "attestation_sha256": p["attestation_sha256"],
            "path": p["path"], "by": ev["actor"], "at": ev["ts"], "event_seq": seq}

    def _on_user(self, seq: int, ev: dict[str, Any], p: dict[str, Any]) -> None:
        name = p["name"]
        if p.get("action") == "add":
            if name in self.user_ids:
                self.rep.add(f"event {seq}", f"user {name!r} added twice")
            uid = self.user_ids[name] = self._new_id("users")
            self.tables["users"][uid] = {"id": uid, "name": name, "role": p["role"],
                                         "password": _digest(p["password_sha256"], sha256_text),
                                         "disabled": 0, "created_at": ev["ts"], "event_seq": seq}
            return
        uid = self.user_ids.get(name)
        if uid is None:
            self.rep.add(f"event {seq}", f"updates user {name!r}, whom no event added")
            return
        acct = self.tables["users"][uid]
        if p.get("role") is not None:
            acct["role"] = p["role"]
        if p.get("password_sha256") is not None:
            acct["password"] = _digest(p["password_sha256"], sha256_text)
        if p.get("disabled") is not None:
            acct["disabled"] = int(bool(p["disabled"]))
        acct["event_seq"] = seq

    # --- comparing ------------------------------------------------------------------------------

    def _compare_table(self, table: str, expected: dict[Any, dict[str, Any]]) -> None:
        key_cols = ("gate_run_id", "row") if table == "reviews" else ("id",)
        cur = self.ledger.conn.execute(f"SELECT * FROM {table}")
        cols = [d[0] for d in cur.description]
        seen = set()
        for row in cur:
            actual = dict(zip(cols, row))
            key = tuple(actual[c] for c in key_cols) if len(key_cols) > 1 else actual[key_cols[0]]
            where = _where(table, key_cols, key)
            seen.add(key)
            want = expected.get(key)
            if want is None:
                self.rep.add(where, "row has no event in the log (inserted or renumbered behind the log's back)")
                continue
            _compare_row(where, want, actual, self.rep)
        for key in expected.keys() - seen:
            self.rep.add(_where(table, key_cols, key), "recorded in the event log but missing from the table")

    def _check_leaves(self) -> None:
        """Chunk layout from lengths first, then one version's leaves in memory at a time."""
        chunks: dict[Any, list[tuple[Any, Any]]] = {}
        for vid, chunk, kind, size in self.ledger.conn.execute(
                "SELECT version_id, chunk, typeof(data), length(data) FROM leaf_chunks"):
            chunks.setdefault(vid, []).append((chunk, size if kind == "blob" else None))
        versions = self.tables["versions"]
        for vid in chunks.keys() - versions.keys():
            self.rep.add(f"leaf_chunks version_id={vid}", "leaves of a version the log never recorded")
        for vid, v in versions.items():
            where = f"leaf_chunks version_id={vid}"
            parts = sorted(chunks.get(vid, []), key=lambda c: (str(type(c[0])), c[0]))
            numbers = [c for c, _ in parts]
            if numbers != list(range(len(parts))) or any(size is None for _, size in parts):
                self.rep.add(where, f"chunks are numbered {numbers[:5]}..., not 0..{len(parts) - 1} of bytes")
                continue
            sizes = [size for _, size in parts]
            if any(size % 32 or not size for size in sizes) or len(set(sizes[:-1])) > 1 \
                    or (len(sizes) > 1 and sizes[-1] > sizes[0]):
                self.rep.add(where, "chunk sizes are uneven or not whole leaves")
            if sum(sizes) != 32 * v["records"]:
                self.rep.add(where, f"{sum(sizes) // 32} leaves stored for {v['records']} records")
            elif merkle.root(self.ledger.leaves(vid)).hex() != v["merkle_root"]:
                self.rep.add(where, "stored leaves do not hash to the recorded Merkle root")


def _where(table: str, key_cols: tuple[str, ...], key: Any) -> str:
    values = key if len(key_cols) > 1 else (key,)
    return f"{table} " + ",".join(f"{c}={v}" for c, v in zip(key_cols, values))


def _safe_findings_digest(queue: list[Any]) -> str | None:
    try:
        return findings_digest((r, f) for r, _, f in queue)
    except (AttributeError, TypeError):
        return None  # a findings cell that is not text


def _never(what: str) -> Callable[[Any], bool]:
    def ok(value: Any) -> bool:
        return False
    ok.__name__ = what
    return ok


def _digest(expected_hex: Any, fn: Callable[[str], str]) -> Callable[[Any], bool]:
    """A column the log holds only by digest: the stored text must hash to it."""
    def ok(value: Any) -> bool:
        return isinstance(value, str) and fn(value) == expected_hex
    ok.__name__ = f"text whose sha256 is {str(expected_hex)[:16]}..."
    return ok


def _compare_row(where: str, want: dict[str, Any], actual: dict[str, Any], rep: IntegrityReport) -> None:
    for col, value in actual.items():
        if col not in want:
            rep.add(where, f"column {col} is not covered by the event log (this trainguard cannot check it)")
            continue
        exp = want[col]
        good = exp(value) if callable(exp) else _same(value, exp)
        if not good:
            shown = exp.__name__ if callable(exp) else repr(exp)
            rep.add(where, f"{col} is {str(value)[:80]!r} in the table but {shown[:80]} in its event")


def _check_carried(where: str, run_id: int, ev: dict[str, Any], events: dict[int, dict[str, Any]],
                   rep: IntegrityReport) -> None:
    """A carried decision must copy a person's decision on an earlier run of the same record, unchanged."""
    p, origin = ev["payload"], ev["payload"].get("carried_from")
    if ev["actor"] != "gate":
        rep.add(where, f"carried decision written by {ev['actor']!r}, not by the gate")
    if not isinstance(origin, dict):
        rep.add(where, "carried decision without a readable origin")
        return
    src = events.get(origin.get("event_seq")) if isinstance(origin.get("event_seq"), int) else None
    sp = src["payload"] if src else {}
    if (src is None or src["kind"] != "review" or sp.get("carried_from") is not None
            or not isinstance(origin.get("gate_run"), int) or origin["gate_run"] >= run_id):
        rep.add(where, f"carried from event #{origin.get('event_seq')}, which is no person's decision on an "
                       "earlier gate run")
        return
    same = {"decision": sp.get("decision"), "reason": sp.get("reason"), "leaf": sp.get("leaf"),
            "gate_run": sp.get("gate_run"), "row": sp.get("row"), "decided_by": src["actor"], "decided_at": src["ts"]}
    got = {"decision": p.get("decision"), "reason": p.get("reason"), "leaf": p.get("leaf"),
           "gate_run": origin.get("gate_run"), "row": origin.get("row"), "decided_by": origin.get("decided_by"),
           "decided_at": origin.get("decided_at")}
    for key, value in same.items():
        if got[key] != value:
            rep.add(where, f"carried {key} {got[key]!r} differs from the original decision's {value!r}")

