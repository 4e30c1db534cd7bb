"""`trainguard audit`: the three questions an assessor asks, answered from the ledger.

1. Where does the data come from? Versions without a source; sources without a
   licence or an owner.
2. Who can write to it? The recorded writers (ingest, review, release), and the
   file-system permissions of the data files, the ledger and their directories:
   group- or world-writable is a finding (a world-writable directory without the
   sticky bit lets anyone replace the file).
3. Is there a review step between ingestion and training? Versions never gated,
   releases made without a gate pass (`--allow-ungated`), training runs recorded
   on data that matches no release.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from trainguard.ledger.store import Ledger

Q1, Q2, Q3 = "provenance", "write-access", "review-step"


def _perm_findings(path: Path, what: str, dataset: str | None) -> list[dict[str, Any]]:
    out = []
    try:
        st = path.stat()
    except OSError:
        return out
    mode = st.st_mode
    kind = "directory" if stat.S_ISDIR(mode) else "file"
    if kind == "directory" and mode & stat.S_ISVTX:
        return out
    if mode & stat.S_IWOTH:
        severity, who = "high", "world"
    elif mode & stat.S_IWGRP:
        severity, who = "medium", "group"
    else:
        return out
    out.append({"question": Q2, "severity": severity, "dataset": dataset, "path": str(path),
                "message": f"{what} {kind} {path} is {who}-writable (mode {stat.filemode(mode)})"})
    return out


def _paths_to_check(path: Path) -> list[Path]:
    return [path, path.parent]  # Path("x").parent is Path(".")


def audit(ledger: Ledger) -> dict[str, Any]:
    findings: list[dict[str, Any]] = []
    datasets: list[dict[str, Any]] = []
    gate_runs = ledger.gate_runs()
    releases = ledger.releases()
    derived = {r["out_version_id"] for r in releases}
    writers_by_version: dict[int, set[str]] = {}
    for run in gate_runs:
        if run["version_id"] is not None:
            for q in ledger.reviews(run["id"]):
                if q["decided_by"] and q["status"] in ("approved", "rejected"):  # not the gate's supersede
                    writers_by_version.setdefault(run["version_id"], set()).add(f"{q['decided_by']} (review)")
    used_by: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for name in ledger.datasets():
        versions = ledger.versions(name)
        info: dict[str, Any] = {"dataset": name, "versions": [], "sources": [], "writers": [], "paths": []}
        sources: dict[str, dict[str, Any]] = {}
        writers: set[str] = set()
        for v in versions:
            label = f"{name}@{v['number']}"
            src = ledger.source(v["source_id"])
            writers.add(f"{v['ingested_by']} (ingest)")
            writers |= writers_by_version.get(v["id"], set())
            runs = [r for r in gate_runs if r["version_id"] == v["id"]]
            last = runs[-1]["verdict"] if runs else None
            info["versions"].append({"version": v["number"], "records": v["records"], "merkle_root": v["merkle_root"],
                                     "source": src["name"] if src else None, "ingested_by": v["ingested_by"],
                                     "ingested_at": v["ingested_at"], "last_gate": last,
                                     "release_output": v["id"] in derived})
            if src is None:
                findings.append({"question": Q1, "severity": "high", "dataset": name,
                                 "message": f"{label} has no source recorded"})
            else:
                sources[src["name"]] = src
            if v["id"] in derived:
                continue  # a release output: its review step is the input's gate
            if not runs:
                findings.append({"question": Q3, "severity": "medium", "dataset": name,
                                 "message": f"{label} was ingested but never gated"})
        for src in sources.values():
            used_by.setdefault(src["name"], (src, []))[1].append(name)
        info["sources"] = [{k: s[k] for k in ("name", "licence", "owner", "origin")} for s in sources.values()]
        for r in releases:
            if any(v["id"] == r["version_id"] for v in versions):
                writers.add(f"{r['by']} (release)")
        info["writers"] = sorted(writers)
        if versions:
            latest = Path(versions[-1]["path"])
            info["paths"].append(str(latest))
            for p in _paths_to_check(latest):
                findings += _perm_findings(p, "data", name)
        datasets.append(info)
    for src, names in used_by.values():
        missing = [f for f in ("licence", "owner") if not src.get(f)]
        if missing:
            findings.append({"question": Q1, "severity": "high", "dataset": ", ".join(names),
                             "message": f"source {src['name']!r} (used by {', '.join(names)}) has no "
                                        f"{' or '.join(missing)} recorded"})
    by_version = {v["id"]: v for v in ledger.versions()}
    for r in releases:
        v = by_version.get(r["version_id"])
        label = f"{v['dataset']}@{v['number']}" if v else f"version id {r['version_id']}"
        if r["forced"]:
            findings.append({"question": Q3, "severity": "high", "dataset": v["dataset"] if v else None,
                             "message": f"{label} was released to {r['out_path']} without a gate pass "
                                        f"(--allow-ungated, by {r['by']} at {r['at']})"})
    released = {r["out_sha256"]: r for r in releases}
    trainings = ledger.trainings()
    for t in trainings:
        r = released.get(t["file_sha256"])
        if r is None:
            findings.append({"question": Q3, "severity": "high", "dataset": None,
                             "message": f"training run by {t['by']} at {t['at']} used {t['path']}, which matches "
                                        "no recorded release"})
        elif r["forced"]:
            findings.append({"question": Q3, "severity": "high", "dataset": None,
                             "message": f"training run by {t['by']} at {t['at']} used an ungated release"})
    lp = ledger.path
    for p in [*_paths_to_check(lp), Path(f"{lp}-wal"), Path(f"{lp}-shm")]:
        findings += _perm_findings(p, "ledger", None)
    order = {"high": 0, "medium": 1, "low": 2}
    findings.sort(key=lambda f: (f["question"], order.get(f["severity"], 3), f["message"]))
    return {"ok": not findings, "ledger": str(lp), "datasets": datasets, "findings": findings,
            "trainings": len(trainings), "releases": len(releases)}

