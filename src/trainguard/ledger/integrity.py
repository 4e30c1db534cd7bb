"""`trainguard ledger verify`: the event chain, and every table row against its event.

Checks: SQLite's own page check; the chain (contiguous sequence numbers, each
`prev_hash` equal to the previous event's hash, each hash recomputed from the
stored bytes); each version's leaves re-hashed to its recorded Merkle root; each
source, version, gate run, review, release, training and reviewer-account row equal to the event
that wrote it. An edit to any of these without recomputing the whole chain is
reported. Rewriting the whole chain is only caught against a head recorded
elsewhere (a release attestation carries one; pass it as `expect_head`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from trainguard.ledger import merkle
from trainguard.ledger.store import GENESIS, Ledger, event_hash, queue_digest, sha256_text


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


def check(ledger: Ledger, expect_head: tuple[int, str] | None = None) -> IntegrityReport:
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
    _check_sources(ledger, events, rep)
    _check_versions(ledger, events, rep)
    _check_gate_runs(ledger, events, rep)
    _check_reviews(ledger, events, rep)
    _check_simple(ledger, events, rep)
    _check_users(ledger, events, rep)
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
        if seq != expected_seq:
            rep.add(where, f"sequence gap: expected event {expected_seq}")
        expected_seq = seq + 1
        if prev_hash != prev:
            rep.add(where, "prev_hash does not match the previous event's hash")
        try:
            prev_bytes = bytes.fromhex(prev_hash.decode("ascii"))
            recomputed = event_hash(prev_bytes, seq, ts, kind, actor, payload)
        except (ValueError, UnicodeDecodeError):
            recomputed = None
        if recomputed is None or recomputed.encode() != stored:
            rep.add(where, "hash does not match the event's contents (event edited)")
        prev = stored
        try:
            parsed[seq] = {"kind": kind.decode(), "actor": actor.decode(), "ts": ts.decode(),
                           "payload": json.loads(payload), "hash": stored.decode()}
        except (UnicodeDecodeError, ValueError):
            rep.add(where, "payload is not valid JSON")
    rep.events = len(rows)
    rep.head = prev.decode("ascii", "replace") if rows else GENESIS
    return parsed


def _event(events: dict[int, dict[str, Any]], seq: Any, kind: str, where: str,
           rep: IntegrityReport) -> dict[str, Any] | None:
    ev = events.get(seq) if isinstance(seq, int) else None
    if ev is None or ev["kind"] != kind:
        rep.add(where, f"no {kind} event #{seq} backs this row")
        return None
    return ev


def _compare(where: str, expected: dict[str, Any], actual: dict[str, Any], rep: IntegrityReport) -> None:
    for key, value in expected.items():
        if actual.get(key) != value:
            rep.add(where, f"{key} is {actual.get(key)!r} in the table but {value!r} in its event")


def _check_sources(ledger: Ledger, events: dict[int, dict[str, Any]], rep: IntegrityReport) -> None:
    latest: dict[str, int] = {}
    for seq, ev in events.items():
        if ev["kind"] == "source":
            latest[ev["payload"].get("name")] = seq
    for src in ledger.sources():
        where = f"source {src['name']!r}"
        ev = _event(events, src["event_seq"], "source", where, rep)
        if ev:
            _compare(where, ev["payload"], src, rep)
            if latest.get(src["name"]) != src["event_seq"]:
                rep.add(where, "row does not reflect the latest source event")
    names = {s["name"] for s in ledger.sources()}
    for name in latest.keys() - names:
        rep.add(f"source {name!r}", "recorded in the event log but missing from the sources table")


def _check_versions(ledger: Ledger, events: dict[int, dict[str, Any]], rep: IntegrityReport) -> None:
    seen: set[int] = set()
    for v in ledger.versions():
        where = f"version {v['dataset']}@{v['number']}"
        seen.add(v["event_seq"])
        ev = _event(events, v["event_seq"], "ingest", where, rep)
        src = ledger.source(v["source_id"])
        actual = dict(v, version=v["number"], source=src["name"] if src else None)
        if ev:
            _compare(where, ev["payload"], actual, rep)
            if ev["actor"] != v["ingested_by"]:
                rep.add(where, "ingested_by differs from the event's actor")
        leaves = ledger.leaves(v["id"])
        if len(leaves) != 32 * v["records"]:
            rep.add(where, f"{len(leaves) // 32} leaves stored for {v['records']} records")
        elif merkle.root(leaves).hex() != v["merkle_root"]:
            rep.add(where, "stored leaves do not hash to the recorded Merkle root")
    for seq, ev in events.items():
        if ev["kind"] == "ingest" and seq not in seen:
            rep.add(f"event {seq}", "ingest event without its version row")


def _check_gate_runs(ledger: Ledger, events: dict[int, dict[str, Any]], rep: IntegrityReport) -> None:
    seen: set[int] = set()
    for run in ledger.gate_runs():
        where = f"gate run {run['id']}"
        seen.add(run["event_seq"])
        ev = _event(events, run["event_seq"], "gate", where, rep)
        if not ev:
            continue
        p = ev["payload"]
        actual = dict(run, reasons=json.loads(run["reasons"]),
                      policy_sha256=hashlib.sha256(run["policy"].encode()).hexdigest(),
                      report_sha256=hashlib.sha256(run["report"].encode()).hexdigest(),
                      queue_sha256=queue_digest((r["row"], r["leaf"]) for r in ledger.reviews(run["id"])))
        _compare(where, p, actual, rep)
    for seq, ev in events.items():
        if ev["kind"] == "gate" and seq not in seen:
            rep.add(f"event {seq}", "gate event without its gate run row")


def _check_reviews(ledger: Ledger, events: dict[int, dict[str, Any]], rep: IntegrityReport) -> None:
    latest: dict[tuple[int, int], int] = {}
    for seq, ev in events.items():
        if ev["kind"] == "review":
            latest[(ev["payload"].get("gate_run"), ev["payload"].get("row"))] = seq
    for run in ledger.gate_runs():
        for item in ledger.reviews(run["id"]):
            key = (run["id"], item["row"])
            where = f"review run {run['id']} row {item['row']}"
            if item["status"] == "pending" and item["event_seq"] is None:
                if key in latest:
                    rep.add(where, "a recorded decision is missing from the review table")
                continue
            ev = _event(events, item["event_seq"], "review", where, rep)
            if ev:
                p = ev["payload"]
                origin = p.get("carried_from")
                expected = {"decision": p.get("decision"), "reason": p.get("reason"), "leaf": p.get("leaf")}
                if origin is None:
                    expected |= {"decided_by": ev["actor"], "decided_at": ev["ts"]}
                else:
                    _check_carried(where, run["id"], ev, events, rep)
                    if isinstance(origin, dict):
                        expected |= {"decided_by": origin.get("decided_by"), "decided_at": origin.get("decided_at")}
                _compare(where, expected, dict(item, decision=item["status"]), rep)
                if latest.get(key) != item["event_seq"]:
                    rep.add(where, "row does not reflect the latest decision event")


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


def _check_simple(ledger: Ledger, events: dict[int, dict[str, Any]], rep: IntegrityReport) -> None:
    for kind, rows, fields in (
        ("release", ledger.releases(), ("version_id", "out_path", "out_sha256", "out_version_id",
                                        "attestation_sha256")),
        ("train", ledger.trainings(), ("file_sha256", "attestation_sha256", "path")),
    ):
        seen = set()
        for row in rows:
            where = f"{kind} {row['id']}"
            seen.add(row["event_seq"])
            ev = _event(events, row["event_seq"], kind, where, rep)
            if ev:
                _compare(where, {f: ev["payload"].get(f) for f in fields}, row, rep)
                if kind == "release" and bool(ev["payload"].get("forced")) != bool(row["forced"]):
                    rep.add(where, "forced flag differs from its event")
        for seq, ev in events.items():
            if ev["kind"] == kind and seq not in seen:
                rep.add(f"event {seq}", f"{kind} event without its table row")


def _check_users(ledger: Ledger, events: dict[int, dict[str, Any]], rep: IntegrityReport) -> None:
    """Replay the account events; a role, password or disabled flag changed in the table alone shows."""
    if ledger.schema_version < 2:
        return
    state: dict[str, dict[str, Any]] = {}
    for seq, ev in sorted(events.items()):
        if ev["kind"] != "user":
            continue
        p = ev["payload"]
        acct = state.setdefault(p.get("name"), {"role": None, "disabled": False, "password_sha256": None})
        for key in ("role", "disabled", "password_sha256"):
            if p.get(key) is not None:
                acct[key] = p[key]
        acct["seq"] = seq
    rows = ledger.conn.execute("SELECT name, role, password, disabled, event_seq FROM users").fetchall()
    for name, role, password, disabled, event_seq in rows:
        where = f"user {name!r}"
        acct = state.get(name)
        if acct is None:
            rep.add(where, "account has no user event")
            continue
        actual = {"role": role, "disabled": bool(disabled), "password_sha256": sha256_text(password)}
        expected = {k: acct[k] for k in actual if acct[k] is not None}
        expected["disabled"] = bool(acct["disabled"])
        _compare(where, expected, actual, rep)
        if event_seq != acct["seq"]:
            rep.add(where, "row does not reflect the latest user event")
    for name in state.keys() - {r[0] for r in rows}:
        rep.add(f"user {name!r}", "recorded in the event log but missing from the users table")
