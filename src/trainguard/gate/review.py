"""The review queue: rows a gate quarantined wait here for a human decision.

A decision needs a reviewer and a reason (at most `MAX_REASON` characters: it is
kept for good in the hash chain), and is an event in the ledger; the row itself
is never deleted or edited. Only the newest gate run of a content has pending
rows: a new run closes the earlier runs' pending rows as `superseded` (an event,
see `Ledger._supersede`), so a record never waits twice. Items are addressed by
gate run + row; without a run, a row goes to the newest run that holds it
pending, and the answer says which.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainguard.errors import ConfigError
from trainguard.findings import Severity
from trainguard.io.readers import detect_format
from trainguard.ledger.hashing import canonical_row, iter_jsonl_raw, leaf_hash
from trainguard.ledger.store import MAX_REASON, AlreadyDecided, Ledger

DECISIONS = ("approved", "rejected")
STATUSES = ("pending", "approved", "rejected", "superseded")


def open_runs(ledger: Ledger) -> list[dict[str, Any]]:
    """Gate runs that still have pending rows."""
    rows = ledger.conn.execute(
        "SELECT DISTINCT gate_run_id FROM reviews WHERE status = 'pending' ORDER BY gate_run_id").fetchall()
    return [ledger.gate_run(r[0]) for r in rows]  # type: ignore[misc]


def resolve_run(ledger: Ledger, run_id: int | None, row: int | None = None) -> dict[str, Any]:
    """The run a command means: the given one; else the newest run holding `row` pending (the
    result's `picked` says why when several did); else the only open run; else the newest run."""
    if run_id is not None:
        run = ledger.gate_run(run_id)
        if run is None:
            raise ConfigError(f"no gate run {run_id} in {ledger.path}")
        return run
    if row is not None:
        holding = [r[0] for r in ledger.conn.execute(
            "SELECT gate_run_id FROM reviews WHERE status = 'pending' AND row = ? ORDER BY gate_run_id DESC", (row,))]
        if holding:
            run = ledger.gate_run(holding[0])
            if len(holding) > 1:
                run = dict(run, picked=f"row {row} is pending in gate runs {', '.join(map(str, sorted(holding)))}; "  # type: ignore[arg-type]
                                      f"took the newest, {holding[0]} (pass --run for another)")
            return run  # type: ignore[return-value]
    runs = open_runs(ledger)
    if len(runs) == 1:
        return runs[0]
    if not runs or row is not None:
        last = ledger.conn.execute("SELECT MAX(id) FROM gate_runs").fetchone()[0]
        if last is None:
            raise ConfigError("no gate runs in the ledger; run `trainguard gate` first")
        return ledger.gate_run(int(last))  # type: ignore[return-value]
    ids = ", ".join(str(r["id"]) for r in runs)
    raise ConfigError(f"several gate runs have pending rows ({ids}); pass --run")


def items(ledger: Ledger, run_id: int | None = None, status: str | None = "pending") -> list[dict[str, Any]]:
    """The review queue (status "pending": the rows that wait, each once) or, with None, every row.

    This is the one definition of the queue; the web page reads it through the same rule (a
    pending row belongs to the newest gate run of its content, see `Ledger._supersede`).
    """
    runs = [resolve_run(ledger, run_id)] if run_id is not None else (open_runs(ledger) if status == "pending"
                                                                      else ledger.gate_runs())
    out = []
    for run in runs:
        for q in ledger.reviews(run["id"], status):
            out.append(_item(run, q))
    return out


def _check_decision(decision: str, reason: str, by: str) -> None:
    if decision not in DECISIONS:
        raise ConfigError(f"decision must be one of {DECISIONS}")
    if not reason.strip():
        raise ConfigError("--reason must say why (it is kept in the ledger and the release attestation)")
    if len(reason.strip()) > MAX_REASON:
        raise ConfigError(f"--reason is {len(reason.strip()):,} characters; at most {MAX_REASON:,} are kept "
                          "(it is stored for good in the ledger and signed into the release attestation)")
    if not by.strip():
        raise ConfigError("--by must name the reviewer")


def decide(ledger: Ledger, row: int, decision: str, reason: str, by: str, run_id: int | None = None,
           only_pending: bool = False) -> dict[str, Any]:
    """One decision. `only_pending`: refuse (AlreadyDecided) rather than overwrite someone else's."""
    _check_decision(decision, reason, by)
    run = resolve_run(ledger, run_id, row)
    with ledger.transaction():
        ledger.decide(run["id"], row, decision, reason.strip(), by.strip(), only_pending=only_pending)
    item = _item(run, ledger.review_item(run["id"], row))  # type: ignore[arg-type]
    if run.get("picked"):
        item["picked"] = run["picked"]
    return item


def decide_many(ledger: Ledger, run_id: int, rows: list[int], decision: str, reason: str,
                by: str) -> tuple[list[int], list[AlreadyDecided]]:
    """Decide every still-pending row in one transaction: (decided rows, rows someone else had decided)."""
    _check_decision(decision, reason, by)
    resolve_run(ledger, run_id)  # refuses a run that does not exist
    done: list[int] = []
    lost: list[AlreadyDecided] = []
    with ledger.transaction():
        for row in sorted(set(rows)):
            try:
                ledger.decide(run_id, row, decision, reason.strip(), by.strip(), only_pending=True)
                done.append(row)
            except AlreadyDecided as e:
                lost.append(e)
    return done, lost


def rows_with_finding(ledger: Ledger, run_id: int, fingerprint: str, status: str | None = "pending") -> list[int]:
    """Queued rows of a run that one finding (by fingerprint) held: the target of a bulk decision."""
    sql = ("SELECT r.row FROM reviews r WHERE r.gate_run_id = ? AND EXISTS (SELECT 1 FROM json_each(r.findings) j"
           " WHERE json_extract(j.value, '$.fingerprint') = ?)" + (" AND r.status = ?" if status else "")
           + " ORDER BY r.row")
    args: tuple[Any, ...] = (run_id, fingerprint, status) if status else (run_id, fingerprint)
    return [int(r[0]) for r in ledger.conn.execute(sql, args)]


def _item(run: dict[str, Any], q: dict[str, Any]) -> dict[str, Any]:
    return {"run": run["id"], "path": run["path"], "row": q["row"], "status": q["status"], "leaf": q["leaf"],
            "findings": json.loads(q["findings"]), "decided_by": q["decided_by"], "reason": q["reason"],
            "decided_at": q["decided_at"], "carried_from": q.get("carried_from")}


# --- decisions that carry over to later gate runs ------------------------------------------------

Reasons = dict[tuple[Any, Any, Any], Severity]


def reasons(findings: list[dict[str, Any]]) -> Reasons:
    """What held a row: (detector, detector version, rule) -> the highest severity among its findings."""
    out: Reasons = {}
    for f in findings:
        key = (f.get("detector"), f.get("detector_version"), f.get("rule"))
        try:
            sev = Severity.parse(f.get("severity") or "")
        except ValueError:
            sev = Severity.CRITICAL  # unreadable: treat as the worst, so nothing carries onto it
        out[key] = max(out.get(key, sev), sev)
    return out


def covered(now: Reasons, seen: Reasons) -> bool:
    """True when the reviewer saw every reason that holds the row now, at the same or a higher severity.

    A new detector or rule, a changed detector version, or a higher severity means the reviewer
    judged the record on less than what holds it now, so it goes back to the queue. Reasons that
    stopped firing do not matter: the record is byte-for-byte the one the reviewer saw.
    """
    return all(key in seen and sev <= seen[key] for key, sev in now.items())


def carried_decisions(ledger: Ledger,
                      queue: list[tuple[int, str, list[dict[str, Any]]]]) -> dict[int, dict[str, Any]]:
    """Rows of a new queue that take a person's earlier decision: row -> that decision's review row.

    Only the newest human decision on the same leaf hash (same record bytes) is considered, never an
    older one that happens to match: if someone changed their mind, the latest judgement wins or
    nothing does. Call inside the gate's transaction so no decision lands in between.
    """
    latest = ledger.latest_human_decisions({leaf for _, leaf, _ in queue})
    out: dict[int, dict[str, Any]] = {}
    for row, leaf, findings in queue:
        prior = latest.get(leaf)
        if prior is not None and covered(reasons(findings), reasons(json.loads(prior["findings"]))):
            out[row] = prior
    return out


def show(ledger: Ledger, row: int, run_id: int | None = None) -> dict[str, Any]:
    """The queued item plus the record itself, read from the gated file if it is unchanged."""
    run = resolve_run(ledger, run_id, row)
    q = ledger.review_item(run["id"], row)
    if q is None:
        raise ConfigError(f"row {row} is not in the review queue of gate run {run['id']}")
    item = _item(run, q)
    item["record"], item["record_status"] = _read_row(Path(run["path"]), row, item["leaf"])
    return item


def _read_row(path: Path, row: int, leaf_hex: str) -> tuple[Any, str]:
    if not path.exists():
        return None, f"{path} no longer exists"
    try:
        if detect_format(path) == "jsonl":
            for r, line, _ in iter_jsonl_raw(path):
                if r == row:
                    if leaf_hash(line).hex() != leaf_hex:
                        return None, "the record at this row changed since the gate ran"
                    return line.decode("utf-8", "replace"), "ok"
        else:
            from trainguard.io.readers import read

            for item in read(path):
                if item.row == row and item.value is not None:
                    if leaf_hash(canonical_row(item.value)).hex() != leaf_hex:
                        return None, "the record at this row changed since the gate ran"
                    return item.value, "ok"
    except Exception as e:  # noqa: BLE001 - show is best effort; the decision does not depend on it
        return None, f"cannot read the record: {e}"
    return None, "row not found in the file"
