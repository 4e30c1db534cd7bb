"""`trainguard bench`: planted attacks at chosen rates, detection quality against ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from trainguard.cli._common import err_console, fail


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    data: Path = typer.Option(..., help="Clean dataset to poison, e.g. ../shared/data/sst2/train.jsonl.gz."),
    attacks: str = typer.Option("badnets,addsent,unicode,labelflip", help="Comma-separated attack names."),
    rates: str = typer.Option("0.001,0.005,0.01,0.05", help="Comma-separated poison rates (fractions)."),
    seed: int = typer.Option(7, help="Seed for the attack simulator."),
    baseline: bool = typer.Option(True, help="Also run cleanlab find_label_issues on the same data."),
    speed: bool = typer.Option(True, help="Measure scan throughput and peak memory in a fresh process."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write results JSON here."),
    markdown: Optional[Path] = typer.Option(None, help="Write the markdown tables here."),
) -> None:
    """Run the detection benchmark and print a table (JSON with --out)."""
    from trainguard.bench import foundation, tables

    try:
        rate_list = [float(r) for r in rates.split(",") if r.strip()]
    except ValueError:
        raise fail(f"--rates must be comma-separated numbers, got {rates!r}") from None
    if any(not 0 < r < 1 for r in rate_list):
        raise fail("--rates must be fractions between 0 and 1 (0.01 = 1 %)")
    attack_list = [a.strip() for a in attacks.split(",") if a.strip()]
    results = foundation.run(str(data), attack_list, rate_list, seed=seed, baseline=baseline,
                             progress=lambda msg: err_console.print(f"[dim]{escape(str(msg))}[/]", markup=True))
    if speed:
        results["speed"] = foundation.measure_speed(str(data))
    command = (f"trainguard bench --data {data} --attacks {','.join(attack_list)} --rates {rates} --seed {seed}"
               + ("" if baseline else " --no-baseline"))
    results["command"] = command
    text = tables.foundation_summary(results) + "\n" + tables.foundation_markdown(results)
    typer.echo(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    if markdown:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(text)
