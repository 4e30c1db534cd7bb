"""`trainguard release`: write approved + unflagged rows and a signed attestation.

Refuses unless the file is a recorded version whose latest gate run passed (or
quarantined with every queued row decided; pending rows are allowed only when
the gate's policy says `release.allow_pending`, and they are left out). The
rows written are re-hashed while copying and must equal the gated version's
leaves, so a file swapped after the gate cannot be released.

The release is recorded first and the attestation signed afterwards, inside
the same transaction, over a ledger head that is the release's own event: a
log truncated back before the release no longer holds the attested head.
Released files are readable like any new file (0666 less the umask, so 0644
under the usual umask 022) because the training job often runs as another user.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trainguard._version import __version__
from trainguard.attest.keys import keyid
from trainguard.attest.statement import sign_statement, statement
from trainguard.errors import ConfigError
from trainguard.gate.run import find_version
from trainguard.ledger.hashing import canonical_row, hash_file, iter_jsonl_raw, leaf_hash
from trainguard.ledger.ops import default_actor
from trainguard.ledger.store import Ledger, canonical_json, sha256_text, storage_error

DATA_SUFFIXES = (".gz", ".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".pq")


def attestation_path(out: str | Path) -> Path:
    """approved.jsonl -> approved.intoto.json (data suffixes stripped)."""
    p = Path(out)
    name = p.name
    while any(name.endswith(s) for s in DATA_SUFFIXES):
        name = name[: name.rfind(".")]
    return p.with_name(f"{name or p.name}.intoto.json")


@dataclass
class ReleaseResult:
    out: Path
    attestation: Path
    out_sha256: str
    kept: int
    excluded: list[int]
    release_id: int
    statement: dict[str, Any]
    forced: bool
    unquarantined: list[dict[str, Any]] = field(default_factory=list)
    detectors_not_ok: list[dict[str, Any]] = field(default_factory=list)


def release(ledger: Ledger, path: str | Path, out: str | Path, keys: Iterable[Ed25519PrivateKey], *,
            name: str | None = None, by: str | None = None, attestation: str | Path | None = None,
            allow_ungated: bool = False, mode: int | None = None) -> ReleaseResult:
    """`mode`: permissions of the released file and attestation (default 0o666 less the umask)."""
    keys = list(keys)
    actor = by or default_actor()
    path, out = Path(path), Path(out)
    if out.resolve() == path.resolve():
        raise ConfigError(f"--out {out} is the input file; release never modifies its input")
    _require_intact(ledger)
    fl = hash_file(path)
    root = fl.merkle_root
    version = find_version(ledger, path, root, name)
    if version is None:
        raise ConfigError(f"{path}: content is not a recorded version; ingest and gate it first "
                          "(`trainguard verify` shows what changed)")
    run = ledger.latest_gate_run(version["id"])
    forced = False
    if run is None or run["verdict"] == "fail":
        why = "has never been gated" if run is None else f"failed its latest gate run ({run['id']})"
        if not allow_ungated:
            raise ConfigError(f"{version['dataset']}@{version['number']} {why}; release refused")
        forced = True
    policy = json.loads(run["policy"]) if run else {}
    queue = ledger.reviews(run["id"]) if run else []
    pending = [q["row"] for q in queue if q["status"] == "pending"]
    if pending and not forced and not policy.get("release", {}).get("allow_pending", False):
        shown = ", ".join(map(str, pending[:10])) + (" ..." if len(pending) > 10 else "")
        raise ConfigError(f"{len(pending)} row(s) still await review (rows {shown}); decide them with "
                          "`trainguard review approve|reject`, or set release.allow_pending in the policy")
    required = max(policy.get("signatures", {}).get("required", 1), 1)  # an unsigned release is no release
    if len(keys) < required:
        raise ConfigError(f"the policy requires {required} signing key(s); {len(keys)} given (--key)")
    excluded = sorted(q["row"] for q in queue if q["status"] != "approved")
    file_mode = _file_mode(mode)
    try:
        kept = _write(path, out, fl, set(excluded), file_mode)
    except OSError as e:
        raise storage_error(e, out) or ConfigError(f"{out}: cannot write the release ({e.strerror})") from None
    out_fl = hash_file(out)
    att_path = Path(attestation) if attestation else attestation_path(out)
    src = ledger.source(version["source_id"])
    decisions = [{"row": q["row"], "leaf": q["leaf"], "decision": q["status"], "by": q["decided_by"],
                  "reason": q["reason"], "at": q["decided_at"],
                  **({"carried_from": _origin(q["carried_from"])} if q["carried_from"] else {})} for q in queue]
    unquarantined, not_ok = held_back(run, queue)
    predicate = {
        "tool": {"name": "trainguard", "version": __version__},
        "input": {"dataset": version["dataset"], "version": version["number"], "format": version["format"],
                  "records": version["records"], "merkle_root": version["merkle_root"],
                  "file_sha256": version["file_sha256"],
                  "source": {k: src[k] for k in ("name", "licence", "owner", "origin")} if src else None},
        "output": {"records": kept, "format": out_fl.fmt, "merkle_root": out_fl.merkle_root,
                   "excluded_rows": excluded},
        "gate": None if run is None else {"run": run["id"], "verdict": run["verdict"],
                                          "reasons": json.loads(run["reasons"]), "at": run["at"], "by": run["by"]},
        "scan_report": None if run is None else {"sha256": run["report_sha256"]},
        "policy": None if run is None else {"sha256": run["policy_sha256"]},
        "reviews": {"sha256": sha256_text(canonical_json(decisions)), "decisions": decisions},
        "unquarantined_findings": unquarantined,
        "detectors_not_ok": not_ok,
        "forced": forced,
        "released_by": actor,
        "signers": [keyid(k.public_key()) for k in keys],
    }
    out_root = predicate["output"]["merkle_root"]
    with ledger.transaction():
        prev = ledger.version(out.name)
        if prev and prev["merkle_root"] == out_root and prev["file_sha256"] == out_fl.file_sha256:
            out_version = prev
        else:
            out_version = ledger.add_version(out.name, str(out), out_fl.fmt, out_fl.leaves, out_root,
                                             out_fl.file_sha256, out_fl.file_bytes, actor,
                                             source_id=version["source_id"], derived_from=version["id"])
        rid = ledger.add_release(version_id=version["id"], gate_run_id=run["id"] if run else None,
                                 out_path=str(out), out_sha256=out_fl.file_sha256, out_version_id=out_version["id"],
                                 attestation_sha256=None, forced=forced, actor=actor)
        # The attested head is the release event itself, so truncating the log back past it shows.
        head_seq, head_hash = ledger.head()
        predicate["ledger"] = {"head_seq": head_seq, "head_hash": head_hash, "release": rid}
        predicate["released_at"] = ledger.event(head_seq)["ts"]  # type: ignore[index]
        stmt = statement(out.name, out_fl.file_sha256, predicate)
        att_bytes = (json.dumps(sign_statement(stmt, keys), indent=2) + "\n").encode()
        ledger.attach_attestation(rid, hashlib.sha256(att_bytes).hexdigest(), actor)
        try:
            with _replacing(att_path, file_mode) as tmp:
                tmp.write_bytes(att_bytes)
        except OSError as e:
            raise storage_error(e, att_path) or ConfigError(
                f"{att_path}: cannot write the attestation ({e.strerror}); nothing was recorded") from None
    return ReleaseResult(out, att_path, out_fl.file_sha256, kept, excluded, rid, stmt, forced, unquarantined, not_ok)


def _require_intact(ledger: Ledger) -> None:
    """Refuse to sign what the tables say (gate verdict, who decided, when) unless the log backs every cell."""
    from trainguard.ledger.integrity import check

    rep = check(ledger, leaves=False)
    if not rep.ok:
        first = rep.problems[0]
        raise ConfigError(f"{ledger.path} fails verification ({first['where']}: {first['problem']}; "
                          f"{len(rep.problems)} problem(s)); release refused. Run `trainguard ledger verify`")


def held_back(run: dict[str, Any] | None, queue: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What the gate's scan reported that did not hold a row, and the detectors that did not run OK.

    Read from the run's stored report (its digest is in the gate event). A finding below the
    quarantine bar still names rows that go into the release; saying so is the point.
    """
    if run is None:
        return [], []
    try:
        report = json.loads(run["report"])
    except ValueError:
        raise ConfigError(f"gate run {run['id']}: the stored scan report is not readable; "
                          "run `trainguard ledger verify`") from None
    queued = {f.get("fingerprint") for q in queue for f in json.loads(q["findings"])}
    unquarantined = [{"detector": f.get("detector"), "rule": f.get("rule"), "severity": f.get("severity"),
                      "rows": f.get("rows"), "fingerprint": f.get("fingerprint")}
                     for f in report.get("findings") or [] if f.get("fingerprint") not in queued]
    not_ok = [{"detector": d.get("name"), "status": d.get("status"), "message": d.get("message")}
              for d in report.get("detectors") or [] if d.get("status") != "ok"]
    return unquarantined, not_ok


def _file_mode(mode: int | None) -> int:
    """0o666 less the process umask, read without changing it (other threads may be creating files)."""
    if mode is not None:
        return mode
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


@contextmanager
def _replacing(path: Path, mode: int) -> Iterator[Path]:
    """A temporary file beside `path`, moved onto it with `mode` when the block succeeds, removed when not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(path: Path, out: Path, fl: Any, excluded: set[int], mode: int) -> int:
    """Copy kept rows in the input's format; returns how many were kept."""
    with _replacing(out, mode) as tmp:
        if fl.fmt == "jsonl":
            return _write_jsonl(path, tmp, fl, excluded, out.name.endswith(".gz"))
        return _write_other(path, tmp, fl, excluded)


def _changed(path: Path, row: int) -> ConfigError:
    return ConfigError(f"{path}: row {row} changed after it was hashed; release aborted, nothing written")


def _write_jsonl(path: Path, tmp: Path, fl: Any, excluded: set[int], gz: bool) -> int:
    kept = 0
    opener = gzip.open if gz else open
    with opener(tmp, "wb") as f:  # type: ignore[operator]
        last = b"\n"
        for row, line, raw in iter_jsonl_raw(path):
            if row >= fl.count or leaf_hash(line) != fl.leaf(row):
                raise _changed(path, row)
            if row in excluded:
                continue
            if not last.endswith(b"\n"):
                f.write(b"\n")
            f.write(raw)
            last = raw
            kept += 1
    if kept == 0:
        raise ConfigError("every row was excluded; nothing to release")
    return kept


def _write_other(path: Path, tmp: Path, fl: Any, excluded: set[int]) -> int:
    from trainguard.io.readers import read

    rows: list[dict[str, Any]] = []
    for item in read(path, fmt=fl.fmt):
        if item.error is not None:
            raise item.error
        if item.row >= fl.count or leaf_hash(canonical_row(item.value)) != fl.leaf(item.row):
            raise _changed(path, item.row)
        if item.row not in excluded:
            rows.append(item.value)  # type: ignore[arg-type]
    if not rows:
        raise ConfigError("every row was excluded; nothing to release")
    if fl.fmt in ("csv", "tsv"):
        import csv

        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if fl.fmt == "tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    elif fl.fmt == "json":
        tmp.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif fl.fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    else:
        raise ConfigError(f"release cannot write format {fl.fmt!r}")
    return len(rows)


def _origin(c: dict[str, Any]) -> dict[str, Any]:
    """Where a carried decision was made: the attestation names the run and row a person decided."""
    return {"gate_run": c.get("gate_run"), "row": c.get("row"), "ledger_event": c.get("event_seq")}
