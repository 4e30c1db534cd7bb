"""`trainguard attack` (poison a file, write ground truth) and `trainguard attacks` (list them).

`--param NAME=VALUE` reaches every field of an attack's Settings dataclass, so
a new setting never needs a new flag; `trainguard.settings_text` type-checks the
values from the field annotations, so a typo fails before any data is read.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

import typer

from trainguard import settings_text
from trainguard.cli._common import (
    FieldOpt, KindOpt, MaxRecordBytesOpt, OnErrorOpt, describe, fail, load_options,
)
from trainguard.io.readers import DEFAULT_MAX_RECORD_BYTES

# Settings fields that also have a dedicated flag; giving both is refused.
FLAGS = {"target": "--target", "num_triggers": "--num-triggers", "position": "--position", "style": "--style",
         "triggers": "--trigger"}


def register(app: typer.Typer) -> None:
    app.command("attack")(attack_command)
    app.command("attacks")(list_attacks)


def attack_command(
    path: Path = typer.Argument(..., help="Clean dataset: JSONL(.gz), JSON array, CSV/TSV or Parquet."),
    attack: str = typer.Option(..., "--attack", "-a", help="Attack name; `trainguard attacks` lists them."),
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
    param: Optional[list[str]] = typer.Option(
        None, "--param", "-p",
        help="Any attack setting: NAME=VALUE (repeatable). List settings: repeat to append, or NAME=@FILE "
             "(one item per line; .json: an array). `trainguard attacks` lists each attack's settings."),
    kind: KindOpt = "auto",
    field: FieldOpt = None,
    on_error: OnErrorOpt = "fail",
    max_record_bytes: MaxRecordBytesOpt = DEFAULT_MAX_RECORD_BYTES,
) -> None:
    """Plant a reproducible poisoning attack; writes the poisoned file and its ground truth."""
    from trainguard.attacks import decode_trigger, get, poison_file
    from trainguard.attacks import describe as describe_trigger

    if (rate is None) == (count is None):
        raise fail("give exactly one of --rate or --count")
    opts = load_options(kind, field, on_error, max_record_bytes)
    if opts.on_error == "skip":
        raise fail("attack copies every row of the input into its output; --on-error skip would drop rows "
                   "silently: fix the bad rows first (`trainguard scan --on-error skip` lists them)")
    cls = get(attack)
    specs = settings_text.specs(cls.Settings)
    given: dict[str, Any] = {"target": target, "num_triggers": num_triggers, "position": position, "style": style,
                             "triggers": tuple(decode_trigger(t) for t in trigger) if trigger else None}
    params = {k: v for k, v in given.items() if v is not None}
    unsupported = [FLAGS[k] for k in params if k not in specs]
    if unsupported:
        raise fail(f"attack {attack} does not take {', '.join(unsupported)}")
    extra = settings_text.parse(param or [], specs, owner=f"attack {attack}", noun="parameter", option="--param")
    both = [k for k in extra if k in params]
    if both:
        k = both[0]
        raise fail(f"attack {attack}: {FLAGS[k]} and --param {k}=... set the same setting; give only one")
    params.update(extra)
    truth = truth or out.with_name(out.name + ".truth.json")
    describe(path, opts)
    result = poison_file(path, out, truth, attack, rate=rate, count=count, seed=seed, kind=opts.kind,
                         fields=opts.field_map, max_record_bytes=opts.max_record_bytes, **params)
    t = result.truth
    p = t["params"]
    lines = [f"{t['attack']}: poisoned {t['count']:,} of {t['rows']:,} {t['kind']} rows "
             f"({t['count'] / t['rows']:.2%}; {t['eligible']:,} eligible), seed {t['seed']}"]
    if p.get("triggers"):
        lines.append("triggers: " + ", ".join(describe_trigger(x) for x in p["triggers"])
                     + f" ({p.get('num_triggers', 1)} per row, position {p.get('position', 'random')})")
    if p.get("target") is not None:
        lines.append(f"target: {json.dumps(p['target'], ensure_ascii=False)}")
    if extra:
        lines.append("params: " + ", ".join(f"{k}={_short(v)}" for k, v in extra.items()))
    lines.append(f"out: {out}  truth: {truth}")
    typer.echo("\n".join(lines))


def list_attacks(fmt: str = typer.Option("table", "--format", "-f", help="table or json.")) -> None:
    """List the registered attacks, the dataset kinds they serve and their settings (for --param)."""
    from trainguard.attacks import registry

    if fmt not in ("table", "json"):
        raise fail(f"--format must be table or json, got {fmt!r}")
    rows = []
    for name, cls in sorted(registry().items()):
        defaults = dataclasses.asdict(cls.Settings())
        params = [{"name": s.name, "type": s.type_name, "list": s.is_list, "default": defaults[s.name],
                   "flag": FLAGS.get(s.name), "help": s.help or None} for s in settings_text.specs(cls.Settings).values()]
        rows.append({"name": name, "version": cls.version, "kinds": sorted(k.value for k in cls.kinds),
                     "atlas": list(cls.atlas), "description": cls.description, "defaults": defaults,
                     "params": params})
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    name_w = max(len(r["name"]) for r in rows)
    kind_w = max(len(",".join(r["kinds"])) for r in rows)
    pname_w = max((len(p["name"]) for r in rows for p in r["params"]), default=0)
    ptype_w = max((len(p["type"]) for r in rows for p in r["params"]), default=0)
    for r in rows:
        typer.echo(f"{r['name']:<{name_w}} {','.join(r['kinds']):<{kind_w}} {r['description']}")
        for p in r["params"]:
            notes = [n for n in (p["flag"] and f"or {p['flag']}", p["list"] and "list", p["help"]) if n]
            tail = f"  ({'; '.join(notes)})" if notes else ""
            typer.echo(f"    {p['name']:<{pname_w}}  {p['type']:<{ptype_w}}  default "
                       f"{json.dumps(p['default'], default=str)}{tail}")
    typer.echo("\nSet any of them with --param NAME=VALUE; list settings take NAME=@FILE or a repeated --param.")


def _short(value: Any, n: int = 60) -> str:
    if isinstance(value, (list, tuple)):
        return f"{len(value)} item{'s' if len(value) != 1 else ''}"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= n else text[: n - 3] + "..."
