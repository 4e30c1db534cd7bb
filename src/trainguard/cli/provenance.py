"""Provenance commands: keygen, ingest, verify, prove, gate, review, release,
check-attestation, audit, ledger verify.

Exit codes: 0 ok; 1 a failed check (changed data, gate fail, rejected
attestation, audit findings, ledger tampering); 3 gate quarantine (rows wait in
the review queue); 2 bad usage or unreadable input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trainguard.cli._common import (
    FieldOpt, JobsOpt, KindOpt, MaxRecordBytesOpt, OnErrorOpt, announce, describe, err_console, fail, load_options,
    parse_jobs,
)
from trainguard.io.readers import DEFAULT_MAX_RECORD_BYTES

LEDGER_HELP = "Ledger database (default: $TRAINGUARD_LEDGER, else .trainguard/ledger.db)."
out_console = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)  # data is text

review_app = typer.Typer(help="The review queue: rows a gate quarantined.", no_args_is_help=True)
ledger_app = typer.Typer(help="Ledger maintenance.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("keygen")(keygen)
    app.command("ingest")(ingest)
    app.command("verify")(verify)
    app.command("prove")(prove)
    app.command("gate")(gate)
    app.add_typer(review_app, name="review")
    app.command("release")(release)
    app.command("check-attestation")(check_attestation)
    app.command("audit")(audit)
    app.add_typer(ledger_app, name="ledger")


def _ledger_opt() -> Any:
    return typer.Option(None, "--ledger", envvar="TRAINGUARD_LEDGER", help=LEDGER_HELP)


def _fmt_opt() -> Any:
    return typer.Option("table", "--format", "-f", help="table or json.")


def _check_fmt(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise fail(f"--format must be table or json, got {fmt!r}")


def _open(ledger: Optional[Path], create: bool = False) -> Any:
    from trainguard.ledger.store import Ledger

    return Ledger.open(ledger, create=create)


def _json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def _rows(rows: list[int], limit: int = 20) -> str:
    if not rows:
        return "-"
    shown = ", ".join(map(str, rows[:limit]))
    return shown + (f" ... (+{len(rows) - limit})" if len(rows) > limit else "")


# --- keys and ingestion ---------------------------------------------------------------------------


def keygen(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for NAME.key (0600) and NAME.pub."),
    name: str = typer.Option("trainguard", help="Key file base name."),
    force: bool = typer.Option(False, help="Replace existing key files."),
    encrypt: bool = typer.Option(False, help="Encrypt the private key with $TRAINGUARD_KEY_PASSPHRASE."),
) -> None:
    """Generate an Ed25519 key pair for signing releases."""
    from trainguard.attest.keys import generate, keyid, load_public

    priv, pub = generate(out, name, force=force, encrypt=encrypt)
    err_console.print(f"private key: {priv} (keep it secret; mode 0600)\npublic key:  {pub}")
    typer.echo(keyid(load_public(pub)))


def ingest(
    path: Path = typer.Argument(..., help="Dataset file to record."),
    source: Optional[str] = typer.Option(None, help="Source name (created or updated)."),
    licence: Optional[str] = typer.Option(None, "--licence", "--license", help="Licence of the source (SPDX id)."),
    origin: Optional[str] = typer.Option(None, help="Where the source came from (URI)."),
    owner: Optional[str] = typer.Option(None, help="Who answers for the source."),
    by: Optional[str] = typer.Option(None, help="Who is ingesting (default: the OS user)."),
    name: Optional[str] = typer.Option(None, help="Dataset name (default: the file name)."),
    data_format: Optional[str] = typer.Option(None, "--data-format", help="Force the file format."),
    kind: KindOpt = "auto",
    field: FieldOpt = None,
    on_error: OnErrorOpt = "fail",
    max_record_bytes: MaxRecordBytesOpt = DEFAULT_MAX_RECORD_BYTES,
    ledger: Optional[Path] = _ledger_opt(),
    fmt: str = _fmt_opt(),
) -> None:
    """Record a dataset version: per-record hashes, Merkle root, source, who and when."""
    from trainguard.ledger.ops import ingest as do_ingest

    _check_fmt(fmt)
    describe(path, load_options(kind, field, on_error, max_record_bytes, fmt=data_format))
    with _open(ledger, create=True) as led:
        res = do_ingest(led, path, name=name, source=source, licence=licence, origin=origin, owner=owner, by=by,
                        fmt=data_format)
    v = res.version
    if fmt == "json":
        _json({"created": res.created, "dataset": v["dataset"], "version": v["number"], "records": v["records"],
               "merkle_root": v["merkle_root"], "file_sha256": v["file_sha256"], "ledger": str(led.path)})
        return
    what = "recorded" if res.created else "already recorded (unchanged)"
    out_console.print(f"{v['dataset']}@{v['number']} {what}: {v['records']:,} records, "
                      f"Merkle root {v['merkle_root']}")


def verify(
    path: Path = typer.Argument(..., help="Dataset file to check against the ledger."),
    version: Optional[int] = typer.Option(None, "--version", "-v", help="Version number (default: latest)."),
    name: Optional[str] = typer.Option(None, help="Dataset name (default: the file name)."),
    kind: KindOpt = "auto",
    field: FieldOpt = None,
    on_error: OnErrorOpt = "fail",
    max_record_bytes: MaxRecordBytesOpt = DEFAULT_MAX_RECORD_BYTES,
    ledger: Optional[Path] = _ledger_opt(),
    fmt: str = _fmt_opt(),
) -> None:
    """Which rows were inserted, modified, deleted or moved since a recorded version; exit 1 if any."""
    from trainguard.ledger.ops import verify as do_verify

    _check_fmt(fmt)
    describe(path, load_options(kind, field, on_error, max_record_bytes))
    with _open(ledger) as led:
        res = do_verify(led, path, name=name, number=version)
    d = res.to_dict()
    if fmt == "json":
        _json(d)
    else:
        head = f"{path} vs {d['dataset']}@{d['version']}: "
        if res.ok:
            extra = "" if d["bytes_identical"] else " (file bytes differ only outside records: line endings or blank lines)"
            out_console.print(head + f"unchanged, {d['records']:,} records{extra}")
        else:
            out_console.print(head + "CHANGED")
            t = Table("change", "count", "rows (file)", "rows (ledger)")
            t.add_row("inserted", str(len(d["inserted"])), _rows(d["inserted"]), "")
            t.add_row("modified", str(len(d["modified"])), _rows(d["modified"]), _rows(d["modified_from"]))
            t.add_row("deleted", str(len(d["deleted"])), "", _rows(d["deleted"]))
            t.add_row("moved", str(len(d["moved"])), _rows(d["moved"]), _rows(d["moved_from"]))
            out_console.print(t)
    raise typer.Exit(0 if res.ok else 1)


def prove(
    row: int = typer.Argument(..., help="0-based record row."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset name (needed if several)."),
    version: Optional[int] = typer.Option(None, "--version", "-v", help="Version number (default: latest)."),
    ledger: Optional[Path] = _ledger_opt(),
    fmt: str = typer.Option("json", "--format", "-f", help="json or table."),
) -> None:
    """RFC 6962 inclusion proof that a record is part of a recorded version."""
    from trainguard.ledger.ops import prove as do_prove

    _check_fmt(fmt)
    with _open(ledger) as led:
        if dataset is None:
            names = led.datasets()
            if len(names) != 1:
                raise fail(f"--dataset is needed; the ledger holds: {', '.join(names) or 'nothing'}")
            dataset = names[0]
        res = do_prove(led, dataset, row, version)
    if fmt == "json":
        _json(res)
    else:
        out_console.print(f"{res['dataset']}@{res['version']} row {row}: leaf {res['leaf']}\n"
                          f"root {res['merkle_root']} ({res['tree_size']:,} leaves), path of "
                          f"{len(res['audit_path'])} hashes: {'verified' if res['verified'] else 'NOT verified'}")
    raise typer.Exit(0 if res["verified"] else 1)


# --- gate, review, release ------------------------------------------------------------------------


def gate(
    path: Path = typer.Argument(..., help="Dataset file to gate."),
    policy: Optional[Path] = typer.Option(None, "--policy", "-p", help="Policy YAML (default: packaged policy)."),
    by: Optional[str] = typer.Option(None, help="Who runs the gate (default: the OS user)."),
    name: Optional[str] = typer.Option(None, help="Dataset name (default: the file name)."),
    kind: KindOpt = "auto",
    field: FieldOpt = None,
    on_error: OnErrorOpt = "fail",
    max_record_bytes: MaxRecordBytesOpt = DEFAULT_MAX_RECORD_BYTES,
    ledger: Optional[Path] = _ledger_opt(),
    fmt: str = _fmt_opt(),
    jobs: JobsOpt = "auto",
) -> None:
    """Provenance check + scan + policy: exit 0 pass, 3 quarantine (review queue), 1 fail."""
    from trainguard.gate.policy import load as load_policy
    from trainguard.gate.run import gate as do_gate

    _check_fmt(fmt)
    opts = load_options(kind, field, on_error, max_record_bytes)
    n_jobs = parse_jobs(jobs)
    pol = load_policy(policy)
    with _open(ledger, create=True) as led:
        res = do_gate(led, path, pol, name=name, by=by, options=opts, jobs=n_jobs)
    if res.data is not None:
        announce(res.data)
    if fmt == "json":
        _json(res.to_dict())
    else:
        colour = {"pass": "green", "quarantine": "yellow", "fail": "red"}[res.verdict]
        v = res.version
        label = f"{v['dataset']}@{v['number']}" if v else "unrecorded content"
        out_console.print(f"[bold {colour}]{res.verdict.upper()}[/] {escape(str(path))} ({escape(label)}, {res.records:,} records, "
                          f"gate run {res.run_id})", markup=True)
        for r in res.reasons:
            out_console.print(f"  - {r}")
        for n in res.notes:
            out_console.print(f"  note: {n}")
        for d in res.disabled:
            state = "allowed by the policy" if d["allowed"] else "not allowed: fails the gate"
            out_console.print(f"  disabled: {d['name']} ({state})")
        for f in res.below_bar["findings"]:
            out_console.print(f"  below the bar: [{f['severity']}] {f['detector']}/{f['rule']}: {f['title']} "
                              f"(rows {_rows(f['rows'], 10)})")
        if res.carried:
            rejected = sum(c["decision"] == "rejected" for c in res.carried)
            out_console.print(f"  {len(res.carried)} decision(s) carried over ({len(res.carried) - rejected} "
                              f"approved, {rejected} rejected): see `trainguard review list --run {res.run_id} --all`")
        if res.quarantined:
            out_console.print(f"  {len(res.quarantined)} row(s) in the review queue: {_rows(res.quarantined)}"
                              "\n  decide with `trainguard review approve|reject ROW --reason ... --by ...`")
    raise typer.Exit(res.exit_code)


@review_app.command("list")
def review_list(
    run: Optional[int] = typer.Option(None, help="Gate run id (default: every run with pending rows)."),
    all_: bool = typer.Option(False, "--all", help="Include decided rows."),
    ledger: Optional[Path] = _ledger_opt(),
    fmt: str = _fmt_opt(),
) -> None:
    """List rows waiting for review."""
    from trainguard.gate.review import items

    _check_fmt(fmt)
    with _open(ledger) as led:
        found = items(led, run, None if all_ else "pending")
    if fmt == "json":
        _json(found)
        return
    if not found:
        out_console.print("no rows awaiting review")
        return
    t = Table("run", "row", "status", "findings", "decided by", "reason", "carried from")
    for i in found:
        brief = "; ".join(f"{f['detector']}/{f['rule']} ({f['severity']})" for f in i["findings"])
        c = i.get("carried_from")
        origin = f"run {c.get('gate_run')} row {c.get('row')}" if c else ""
        t.add_row(str(i["run"]), str(i["row"]), i["status"], brief, i["decided_by"] or "", i["reason"] or "", origin)
    out_console.print(t)


@review_app.command("show")
def review_show(
    row: int = typer.Argument(..., help="Row in the review queue."),
    run: Optional[int] = typer.Option(None, help="Gate run id (needed when several have pending rows)."),
    ledger: Optional[Path] = _ledger_opt(),
    fmt: str = _fmt_opt(),
) -> None:
    """Show a queued row: its findings and the record itself."""
    from trainguard.gate.review import show

    _check_fmt(fmt)
    with _open(ledger) as led:
        item = show(led, row, run)
    if fmt == "json":
        _json(item)
        return
    out_console.print(f"gate run {item['run']}, row {row} ({item['path']}): {item['status']}")
    for f in item["findings"]:
        out_console.print(f"  - [{f['severity']}] {f['detector']}/{f['rule']}: {f['title']}", markup=False)
    record = item["record"]
    if record is None:
        out_console.print(f"  record: unavailable ({item['record_status']})")
    else:
        out_console.print("  record: " + (record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)),
                          markup=False)
    if item["decided_by"]:
        out_console.print(f"  decided by {item['decided_by']} at {item['decided_at']}: {item['reason']}")
    c = item.get("carried_from")
    if c:
        out_console.print(f"  carried over by the gate from gate run {c.get('gate_run')} row {c.get('row')} "
                          "(same record, same or fewer reasons)")


def _decide(decision: str, row: int, reason: str, by: Optional[str], run: Optional[int],
            ledger: Optional[Path]) -> None:
    from trainguard.gate.review import decide
    from trainguard.ledger.ops import default_actor

    with _open(ledger) as led:
        item = decide(led, row, decision, reason, by or default_actor(), run)
    if item.get("picked"):
        err_console.print(f"note: {item['picked']}")
    out_console.print(f"gate run {item['run']} row {row}: {decision} by {item['decided_by']}")


@review_app.command("approve")
def review_approve(
    row: int = typer.Argument(..., help="Row to approve (it will be released)."),
    reason: str = typer.Option(..., help="Why this row is safe to train on."),
    by: Optional[str] = typer.Option(None, help="Reviewer name (default: the OS user, as for gate)."),
    run: Optional[int] = typer.Option(None, help="Gate run id (needed when several have pending rows)."),
    ledger: Optional[Path] = _ledger_opt(),
) -> None:
    """Approve a quarantined row."""
    _decide("approved", row, reason, by, run, ledger)


@review_app.command("reject")
def review_reject(
    row: int = typer.Argument(..., help="Row to reject (it will be left out of the release)."),
    reason: str = typer.Option(..., help="Why this row must not be trained on."),
    by: Optional[str] = typer.Option(None, help="Reviewer name (default: the OS user, as for gate)."),
    run: Optional[int] = typer.Option(None, help="Gate run id (needed when several have pending rows)."),
    ledger: Optional[Path] = _ledger_opt(),
) -> None:
    """Reject a quarantined row."""
    _decide("rejected", row, reason, by, run, ledger)


def release(
    path: Path = typer.Argument(..., help="The gated dataset file."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the released dataset."),
    key: list[Path] = typer.Option(..., "--key", "-k", help="Ed25519 private key (repeat for several signers)."),
    attestation: Optional[Path] = typer.Option(None, help="Attestation path (default: OUT stem + .intoto.json)."),
    by: Optional[str] = typer.Option(None, help="Who releases (default: the OS user)."),
    name: Optional[str] = typer.Option(None, help="Dataset name (default: the file name)."),
    allow_ungated: bool = typer.Option(False, help="Release without a gate pass (recorded; audit flags it)."),
    kind: KindOpt = "auto",
    field: FieldOpt = None,
    on_error: OnErrorOpt = "fail",
    max_record_bytes: MaxRecordBytesOpt = DEFAULT_MAX_RECORD_BYTES,
    ledger: Optional[Path] = _ledger_opt(),
    fmt: str = _fmt_opt(),
) -> None:
    """Write approved and unflagged rows plus a signed in-toto attestation."""
    from trainguard.attest.keys import load_private
    from trainguard.gate.release import release as do_release

    _check_fmt(fmt)
    describe(path, load_options(kind, field, on_error, max_record_bytes))
    keys = [load_private(k) for k in key]
    with _open(ledger) as led:
        res = do_release(led, path, out, keys, name=name, by=by, attestation=attestation,
                         allow_ungated=allow_ungated)
    if res.forced:
        err_console.print("[bold yellow]warning:[/] released without a gate pass (--allow-ungated); "
                          "this is recorded and `trainguard audit` reports it", markup=True)
    if fmt == "json":
        _json({"out": str(res.out), "attestation": str(res.attestation), "sha256": res.out_sha256,
               "records": res.kept, "excluded_rows": res.excluded, "release": res.release_id, "forced": res.forced,
               "unquarantined_findings": res.unquarantined, "detectors_not_ok": res.detectors_not_ok})
        return
    out_console.print(f"released {res.kept:,} records to {res.out} (sha256 {res.out_sha256}); "
                      f"left out {len(res.excluded)} row(s): {_rows(res.excluded)}\nattestation: {res.attestation}")
    if res.unquarantined:
        out_console.print(f"included although reported: {len(res.unquarantined)} finding(s) below the quarantine bar "
                          "(listed in the attestation):")
        for f in res.unquarantined:
            out_console.print(f"  - [{f['severity']}] {f['detector']}/{f['rule']} rows {_rows(f['rows'] or [])} "
                              f"({f['fingerprint']})")
    for d in res.detectors_not_ok:
        out_console.print(f"not checked: detector {d['detector']} {d['status']}" + (f": {d['message']}" if d["message"] else ""))


def check_attestation(
    data: Path = typer.Argument(..., help="The dataset file to be trained on."),
    attestation: Path = typer.Argument(..., help="Its DSSE attestation (.intoto.json)."),
    trusted_key: list[Path] = typer.Option(..., "--trusted-key", "-k", help="Trusted Ed25519 public key (repeat)."),
    min_signatures: int = typer.Option(1, help="How many distinct trusted keys must have signed."),
    fmt: str = _fmt_opt(),
) -> None:
    """Check that a trusted key signed a release of exactly this file; exit 1 with the reason if not."""
    from trainguard.attest.dsse import AttestationError
    from trainguard.attest.statement import check

    _check_fmt(fmt)
    try:
        res = check(data, attestation, trusted_key, min_signatures=min_signatures)
    except AttestationError as e:
        if fmt == "json":
            _json({"ok": False, "reason": str(e)})
        else:
            err_console.print(f"[bold red]REJECTED:[/] {escape(str(e))}", markup=True)
        raise typer.Exit(1) from None
    p = res.predicate
    summary = {"ok": True, "sha256": res.sha256, "signed_by": list(res.keyids),
               "input": p.get("input"), "gate": p.get("gate"), "released_by": p.get("released_by"),
               "released_at": p.get("released_at"), "records": p.get("output", {}).get("records"),
               "forced": p.get("forced"), "ledger": p.get("ledger"),
               "unquarantined_findings": p.get("unquarantined_findings"), "detectors_not_ok": p.get("detectors_not_ok")}
    if fmt == "json":
        _json(summary)
        return
    inp = p.get("input") or {}
    out_console.print(f"OK: {data} matches its attestation (sha256 {res.sha256}); signed by "
                      f"{', '.join(k[:16] + '...' for k in res.keyids)}; from {inp.get('dataset')}@"
                      f"{inp.get('version')}, gate verdict {(p.get('gate') or {}).get('verdict')}")
    below, not_ok = p.get("unquarantined_findings") or [], p.get("detectors_not_ok") or []
    if below or not_ok:
        out_console.print(f"  the release includes rows named by {len(below)} finding(s) below the quarantine bar; "
                          f"{len(not_ok)} detector(s) did not run OK ({', '.join(str(d.get('detector')) for d in not_ok) or '-'})")
    led = p.get("ledger") or {}
    if led.get("head_seq") is not None:
        out_console.print(f"  ledger head: {led['head_seq']}:{led.get('head_hash')} "
                          "(check with `trainguard ledger verify --expect-head`)")


# --- audit and ledger integrity -------------------------------------------------------------------


def audit(
    ledger: Optional[Path] = _ledger_opt(),
    fmt: str = _fmt_opt(),
) -> None:
    """Where the data comes from, who can write it, whether it was reviewed; exit 1 on findings."""
    from trainguard.ledger.audit import audit as do_audit

    _check_fmt(fmt)
    with _open(ledger) as led:
        res = do_audit(led)
    if fmt == "json":
        _json(res)
    else:
        t = Table("dataset", "versions", "sources", "writers", "last gate")
        for d in res["datasets"]:
            srcs = ", ".join(f"{s['name']} ({s['licence'] or 'no licence'}; {s['owner'] or 'no owner'})"
                             for s in d["sources"]) or "-"
            last = d["versions"][-1]["last_gate"] if d["versions"] else None
            t.add_row(d["dataset"], str(len(d["versions"])), srcs, ", ".join(d["writers"]), last or "never")
        out_console.print(t)
        if res["findings"]:
            f = Table("question", "severity", "finding")
            for x in res["findings"]:
                f.add_row(x["question"], x["severity"], x["message"])
            out_console.print(f)
        else:
            out_console.print("no findings")
    raise typer.Exit(0 if res["ok"] else 1)


@ledger_app.command("verify")
def ledger_verify(
    expect_head: Optional[str] = typer.Option(None, help="SEQ:HASH recorded elsewhere (e.g. in an attestation)."),
    ledger: Optional[Path] = _ledger_opt(),
    fmt: str = _fmt_opt(),
) -> None:
    """Check the ledger's hash chain and that every table row matches its event; exit 1 if not."""
    from trainguard.ledger.integrity import check

    _check_fmt(fmt)
    head = None
    if expect_head:
        seq, sep, h = expect_head.partition(":")
        if not sep or not seq.isdigit() or len(h) != 64:
            raise fail(f"--expect-head expects SEQ:HASH (64 hex digits), got {expect_head!r}")
        head = (int(seq), h.lower())
    with _open(ledger) as led:
        rep = check(led, head)
    if fmt == "json":
        _json(rep.to_dict())
    elif rep.ok:
        out_console.print(f"ledger OK: {rep.events} events, head {rep.head}")
    else:
        out_console.print(f"[bold red]LEDGER TAMPERED OR CORRUPT[/]: {len(rep.problems)} problem(s)", markup=True)
        for p in rep.problems:
            out_console.print(f"  - {p['where']}: {p['problem']}", markup=False)
    raise typer.Exit(0 if rep.ok else 1)
