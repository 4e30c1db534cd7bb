"""Where users run trainguard: `python -m`, the pre-commit hook, the CI recipe.

Each documented recipe is run here as a user's tooling would run it, so a
renamed command or option breaks a test instead of a user's pipeline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml
from conftest import DATA

from trainguard.hook import main as hook_main

ROOT = Path(__file__).resolve().parents[1]
DEMO = Path(str(resources.files("trainguard") / "data" / "demo" / "sst2_poisoned.jsonl"))
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "trainguard", "--help"], capture_output=True, text=True,
                         timeout=120, env=_env())
    assert out.returncode == 0, out.stderr
    assert "scan" in out.stdout and "gate" in out.stdout


def test_hook_fails_a_poisoned_file_and_passes_a_clean_one(tmp_path, capsys):
    clean = tmp_path / "clean.jsonl"
    shutil.copy(DATA / "sst2_sample.jsonl", clean)
    assert hook_main([str(clean)]) == 0
    assert hook_main([str(clean), str(DEMO)]) == 1, "the worst file decides"
    err = capsys.readouterr().err
    assert f"{DEMO}: FAIL" in err and f"{clean}: ok" in err


def test_hook_reports_an_unreadable_file_with_exit_two(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": 1}\n{not json\n')
    assert hook_main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "line 2" in err and "Traceback" not in err


def test_pre_commit_hook_definition_names_an_installed_entry_point():
    [hook] = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    scripts = re.search(r"\[project\.scripts\](.*?)\n\[", (ROOT / "pyproject.toml").read_text(), re.S).group(1)
    assert f'{hook["entry"]} = "trainguard.hook:main"' in scripts
    files = re.compile(hook["files"])
    assert files.search("data/train.jsonl") and files.search("x.parquet") and not files.search("README.md")
    assert shutil.which(hook["entry"], path=str(BIN)), "the console script is installed with the package"


def test_ci_recipe_writes_sarif_and_returns_the_gate_verdict(tmp_path):
    data = tmp_path / "train.jsonl"
    shutil.copy(DEMO, data)
    env = {**_env(), "TRAINGUARD_INGEST_SOURCE": "ci-test", "TRAINGUARD_LEDGER": str(tmp_path / "ledger.db"),
           "TRAINGUARD_OUT": str(tmp_path / "out")}
    run = subprocess.run(["bash", str(ROOT / "examples/ci/trainguard-ci.sh"), str(data)], capture_output=True,
                         text=True, timeout=600, env=env, cwd=tmp_path)
    gate = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert run.returncode == gate["exit_code"] == 3, run.stderr  # the demo's backdoors are quarantined
    sarif = json.loads((tmp_path / "out" / "trainguard.sarif").read_text())
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["results"]


@pytest.mark.parametrize("recipe", ["github-actions.yml", "gitlab-ci.yml"])
def test_ci_examples_call_the_tested_script(recipe):
    doc = yaml.safe_load((ROOT / "examples" / "ci" / recipe).read_text())
    text = json.dumps(doc)
    assert "examples/ci/trainguard-ci.sh" in text
    if recipe.startswith("github"):
        steps = doc["jobs"]["gate"]["steps"]
        assert any(s.get("uses", "").startswith("github/codeql-action/upload-sarif") for s in steps)


def test_version_and_grouped_help(capsys):
    from conftest import cli

    from trainguard import __version__

    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"trainguard {__version__}"
    code, out, _ = cli(capsys, "--help")
    for panel in ("Scan", "Provenance and release", "Review", "Model", "Red team"):
        assert f"─ {panel} " in out


def test_readable_at_80_columns(capsys, monkeypatch):
    # `trainguard detectors` cut names users must type (`availability…`); the findings table split
    # "trigger-association" over 4 lines.
    from conftest import cli

    from trainguard.detectors.base import registry

    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = cli(capsys, "detectors")
    assert code == 0 and max(map(len, out.splitlines())) <= 80
    for name in registry():
        assert any(line.startswith(f"{name}  v") for line in out.splitlines()), name
    code, out, _ = cli(capsys, "scan", DEMO, "-q")
    assert code == 1 and max(map(len, out.splitlines())) <= 80
    assert "trigger-association / forced-output" in out and "invisible-characters / zero-width" in out
