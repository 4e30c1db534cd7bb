"""Every command, option and detector has help text and a current entry in the docs.

docs/cli.md and docs/detectors.md are generated from the code by
scripts/gen_docs.py; this fails when they are stale or when something lacks
help (sqlite-utils' documentation tests, by generation).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gen():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_command_reference_is_current():
    gen = _gen()
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == gen.cli_markdown(), \
        "docs/cli.md is stale: run python scripts/gen_docs.py"


def test_detector_reference_is_current():
    gen = _gen()
    assert (ROOT / "docs" / "detectors.md").read_text(encoding="utf-8") == gen.detectors_markdown(), \
        "docs/detectors.md is stale: run python scripts/gen_docs.py"


def test_every_command_and_detector_is_in_the_reference():
    import typer

    from trainguard.cli import app
    from trainguard.detectors.base import registry

    cli_doc = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    root = typer.main.get_command(app)
    for name, cmd in root.commands.items():
        assert f"## `trainguard {name}`" in cli_doc
        for sub in getattr(cmd, "commands", {}):
            assert f"## `trainguard {name} {sub}`" in cli_doc
    det_doc = (ROOT / "docs" / "detectors.md").read_text(encoding="utf-8")
    for name in registry():
        assert f"## `{name}`" in det_doc


def test_a_command_without_help_is_refused(monkeypatch):
    import pytest
    import typer

    from trainguard import cli

    gen = _gen()
    extra = typer.Typer()

    @extra.callback()
    def root() -> None:
        """A group, like the real app."""

    @extra.command("undocumented")
    def undocumented(x: int = typer.Option(1)) -> None:  # no docstring, no option help
        pass

    monkeypatch.setattr(cli, "app", extra)
    with pytest.raises(gen.MissingHelp):
        gen.cli_markdown()
