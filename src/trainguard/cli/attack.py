"""`trainguard attack` (poison a file, write ground truth) and `trainguard attacks` (list them)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

import typer

from trainguard.cli._common import fail


def register(app: typer.Typer) -> None:
    app.command("attack")(attack_command)
    app.command("attacks")(list_attacks)


def attack_command(
    path: Path = typer.Argument(..., help="Clean dataset: JSONL(.gz), JSON array, CSV/TSV or Parquet."),
    attack: str = typer.Option(..., "--attack", "-a", help="badnets, addsent, unicode, cleanlabel or labelflip."),
    out: Path = typer.Option(..., "--out", "-o", help="Poisoned copy, same format as the input."),
    truth: Optional[Path] = typer.Option(None, help="Ground-truth JSON (default: OUT.truth.json)."),
    rate: Optional[float] = typer.Option(None, help="Fraction of all rows to poison, e.g. 0.01."),
    count: Optional[int] = typer.Option(None, help="Number of rows to poison (instead of --rate)."),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same output."),
    target: Optional[str] = typer.Option(None, help="Target label, or target response for instruction data."),
    trigger: Optional[list[str]] = typer.Option(None, "--trigger", help="Trigger (repeatable); U+200B: code point."),
    num_triggers: Optional[int] = typer.Option(None, help="Triggers inserted per poisoned row (default 1)."),
    position: Optional[str] = typer.Option(None, help="random, start or end (default random)."),
    style: Optional[str] = typer.Option(None, help="cleanlabel only: badnets, addsent or unicode triggers."),
    kind: str = typer.Option("auto", help="auto, classification or instruction."),
    field: Optional[list[str]] = typer.Option(None, "--field", help="Map a role to a column: ROLE=COLUMN."),
) -> None:
    """Plant a reproducible poisoning attack; writes the poisoned file and its ground truth."""
    from trainguard.attacks import decode_trigger, describe, get, poison_file
    from trainguard.io import parse_field_overrides

    if (rate is None) == (count is None):
        raise fail("give exactly one of --rate or --count")
    cls = get(attack)
    known = {f.name for f in dataclasses.fields(cls.Settings)}
    given: dict[str, Any] = {"target": target, "num_triggers": num_triggers, "position": position, "style": style,
                             "triggers": tuple(decode_trigger(t) for t in trigger) if trigger else None}
    flags = {"target": "--target", "num_triggers": "--num-triggers", "position": "--position", "style": "--style",
             "triggers": "--trigger"}
    params = {k: v for k, v in given.items() if v is not None}
    unsupported = [flags[k] for k in params if k not in known]
    if unsupported:
        raise fail(f"attack {attack} does not take {', '.join(unsupported)}")
    truth = truth or out.with_name(out.name + ".truth.json")
    result = poison_file(path, out, truth, attack, rate=rate, count=count, seed=seed, kind=kind,
                         fields=parse_field_overrides(field), **params)
    t = result.truth
    p = t["params"]
    lines = [f"{t['attack']}: poisoned {t['count']:,} of {t['rows']:,} {t['kind']} rows "
             f"({t['count'] / t['rows']:.2%}; {t['eligible']:,} eligible), seed {t['seed']}"]
    if p.get("triggers"):
        lines.append("triggers: " + ", ".join(describe(x) for x in p["triggers"])
                     + f" ({p.get('num_triggers', 1)} per row, position {p.get('position', 'random')})")
    if p.get("target") is not None:
        lines.append(f"target: {json.dumps(p['target'], ensure_ascii=False)}")
    lines.append(f"out: {out}  truth: {truth}")
    typer.echo("\n".join(lines))


def list_attacks(fmt: str = typer.Option("table", "--format", "-f", help="table or json.")) -> None:
    """List the registered attacks, the dataset kinds they serve and their defaults."""
    from trainguard.attacks import registry

    rows = []
    for name, cls in sorted(registry().items()):
        defaults = dataclasses.asdict(cls.Settings())
        rows.append({"name": name, "version": cls.version, "kinds": sorted(k.value for k in cls.kinds),
                     "atlas": list(cls.atlas), "description": cls.description, "defaults": defaults})
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    if fmt != "table":
        raise fail(f"--format must be table or json, got {fmt!r}")
    name_w = max(len(r["name"]) for r in rows)
    kind_w = max(len(",".join(r["kinds"])) for r in rows)
    for r in rows:
        typer.echo(f"{r['name']:<{name_w}} {','.join(r['kinds']):<{kind_w}} {r['description']}")
